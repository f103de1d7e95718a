//! `GossipError`: what starting gossip or a handle call can fail with.

use std::net::SocketAddr;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("invalid gossip config:\n{0}")]
    Config(#[from] ConfigError),
    #[error("gossip socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("identity gossip_addr {advertised} has another port than the bound socket {bound}")]
    AddrMismatch { advertised: SocketAddr, bound: SocketAddr },
    #[error("gossip has stopped")]
    Stopped,
    #[error("this node has left the cluster")]
    Left,
    #[error("broadcast of {len} bytes exceeds the limit of {max}")]
    BroadcastTooLarge { len: usize, max: usize },
    #[error("foca: {0}")]
    Foca(String),
}

impl From<foca::Error> for GossipError {
    fn from(e: foca::Error) -> Self {
        Self::Foca(e.to_string())
    }
}
