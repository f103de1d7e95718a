//! The echo backend the `traffic` workload reaches through the route port:
//! one per node namespace, started by the suite as `jepsen-lite backend`.
//! On every connection it writes its name and a newline, then echoes every
//! byte it reads.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Serves until the process is stopped.
pub async fn serve(name: String, listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let greeting = format!("{name}\n").into_bytes();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("jepsen-lite backend {name}: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let greeting = greeting.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            if w.write_all(&greeting).await.is_ok() {
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
    }
}
