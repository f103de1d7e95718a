//! Client-side helpers: connect through a route and learn which backend
//! answered.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Longest wait for one client operation.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `route` and returns the greeting's name (the backend).
pub async fn greet(route: SocketAddr) -> anyhow::Result<String> {
    greet_stream(TcpStream::connect(route).await?).await
}

/// Like [`greet`], from source address `src` (any 127.0.0.0/8 address).
pub async fn greet_from(route: SocketAddr, src: IpAddr) -> anyhow::Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    greet_stream(socket.connect(route).await?).await
}

async fn greet_stream(stream: TcpStream) -> anyhow::Result<String> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await??;
    anyhow::ensure!(line.ends_with('\n'), "no greeting (got {line:?})");
    Ok(line.trim_end().to_string())
}

/// A connection through a route to a greeter: knows its backend and echoes.
#[derive(Debug)]
pub struct Session {
    pub backend: String,
    pub stream: BufReader<TcpStream>,
}

impl Session {
    /// Connects and reads the greeting.
    pub async fn open(route: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = BufReader::new(TcpStream::connect(route).await?);
        let mut line = String::new();
        tokio::time::timeout(IO_TIMEOUT, stream.read_line(&mut line)).await??;
        anyhow::ensure!(line.ends_with('\n'), "no greeting (got {line:?})");
        Ok(Self { backend: line.trim_end().to_string(), stream })
    }

    /// Sends `data` and reads the same number of bytes back.
    pub async fn echo(&mut self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.stream.get_mut().write_all(data).await?;
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(IO_TIMEOUT, self.stream.read_exact(&mut back)).await??;
        Ok(back)
    }
}
