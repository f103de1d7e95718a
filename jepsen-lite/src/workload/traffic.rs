//! The traffic workload: TCP connections through a random node's route port
//! to the echo backends: the greeting line, then random bytes that must
//! come back. Only availability is judged from it.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_client::RouteSpec;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{BACKEND_PORT, Ctx, name, route};
use crate::history::Op;
use crate::net;

/// The traffic route and its port.
pub const ROUTE: &str = "jtraffic";
pub const PORT: u16 = 7000;

/// The traffic route: the echo backend of every node.
pub fn traffic_route(nodes: &[usize]) -> RouteSpec {
    let backends: Vec<serde_json::Value> = nodes
        .iter()
        .map(|&i| {
            serde_json::json!({"id": format!("b{i}"), "addr": SocketAddr::new(net::ip(i).into(), BACKEND_PORT).to_string()})
        })
        .collect();
    let spec = serde_json::json!({
        "name": ROUTE, "listen": format!(":{PORT}"), "balance": "round_robin",
        "connect_timeout_ms": 500, "max_connect_attempts": 5, "eject_after_failures": 2,
        "eject_backoff_ms": 500, "backends": backends,
    });
    serde_json::from_value(spec).unwrap_or_else(|_| route(ROUTE, PORT, &[]))
}

/// One traffic client process until `stop`.
pub async fn traffic(ctx: Ctx, process: u32, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !ctx.stop.stopped() {
        let node = ctx.pick(&mut rng);
        let n = name(node);
        ctx.rec.invoke(process, &n, Op::Connect(None));
        let payload: String = (0..32).map(|_| rng.alphanumeric()).collect();
        let addr = SocketAddr::new(net::ip(node).into(), PORT);
        match tokio::time::timeout(ctx.timeout, echo(addr, &payload)).await {
            Ok(Ok(bytes)) => ctx.rec.ok(process, &n, Op::Connect(Some(bytes))),
            Ok(Err(e)) => ctx.rec.fail(process, &n, Op::Connect(None), &e),
            Err(_) => ctx.rec.fail(process, &n, Op::Connect(None), "timed out"),
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(10..40))).await;
    }
}

/// Connects, reads the greeting, sends `payload` and checks the echo;
/// returns the bytes verified.
pub async fn echo(addr: SocketAddr, payload: &str) -> Result<u64, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = lines.next_line().await.map_err(|e| format!("greeting: {e}"))?;
    if greeting.is_none() {
        return Err("closed before the greeting".into());
    }
    w.write_all(format!("{payload}\n").as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    match lines.next_line().await {
        Ok(Some(line)) if line == payload => Ok(payload.len() as u64 + 1),
        Ok(Some(line)) => Err(format!("echo mismatch: sent {payload:?}, got {line:?}")),
        Ok(None) => Err("closed before the echo".into()),
        Err(e) => Err(format!("echo: {e}")),
    }
}
