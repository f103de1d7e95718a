//! A ferry node in-process, and admin-API reads through `AdminClient`.

use std::net::SocketAddr;

use ferry_client::RouteSpec;
use ferry_client::http::{AdminClient, RawRequest};
use ferry_node::{Config, Node};

/// A running in-process node with its admin API on an OS-chosen port.
#[derive(Debug)]
pub struct TestNode {
    node: Option<Node>,
}

impl TestNode {
    /// Starts a node serving `routes` (made with [`route`]).
    pub async fn start(routes: Vec<RouteSpec>) -> anyhow::Result<Self> {
        Self::with_config(|c| c.routes = routes).await
    }

    /// Starts a node from the test defaults changed by `edit`.
    pub async fn with_config(edit: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        crate::init_logs();
        let mut config = Config::default();
        config.node.name = "test".into();
        config.node.drain_timeout_ms = 2_000;
        config.admin.addr = "127.0.0.1:0".parse()?;
        edit(&mut config);
        let config = config.validate()?;
        Ok(Self { node: Some(Node::start(&config).await?) })
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        // Only `shutdown` takes it, and that consumes self.
        self.node.as_ref().expect("node is running")
    }

    /// Where route `name` listens.
    pub fn route_addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.node().route_addr(name).ok_or_else(|| anyhow::anyhow!("route {name:?} is not listening"))
    }

    /// `GET path` on the admin API: (status, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.node().admin_addr(), path).await
    }

    /// `GET path` parsed as JSON, failing unless the status is 200.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Graceful shutdown.
    pub async fn shutdown(mut self) -> anyhow::Result<ferry_node::node::ShutdownReport> {
        let node = self.node.take().ok_or_else(|| anyhow::anyhow!("already stopped"))?;
        Ok(node.shutdown().await)
    }
}

/// `GET path` through [`AdminClient::send`]: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let client = AdminClient::new(addr).with_timeout(crate::client::IO_TIMEOUT);
    let r = client.send(&RawRequest::new("GET", path)).await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// `127.0.0.1:PORT` with a port free right now (bound by the OS, then
/// released): a route's `listen` (port 0 is not one).
pub fn free_listen() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

/// A route of `balance` over `backends` `(id, addr, weight)`, listening on a
/// loopback port free right now ([`free_listen`]). `extra` JSON fields are
/// merged in.
pub fn route(
    name: &str,
    balance: &str,
    backends: &[(&str, SocketAddr, u32)],
    extra: serde_json::Value,
) -> anyhow::Result<RouteSpec> {
    let mut v = serde_json::json!({
        "name": name,
        "listen": free_listen()?,
        "balance": balance,
        "backends": backends.iter().map(|(id, addr, w)| serde_json::json!({
            "id": id, "addr": addr.to_string(), "weight": w
        })).collect::<Vec<_>>(),
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    Ok(serde_json::from_value(v)?)
}
