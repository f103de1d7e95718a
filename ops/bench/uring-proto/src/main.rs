//! uring-proto DRIVER LISTEN BACKEND [THREADS]
//!
//! A minimal L4 proxy for measurement only: DRIVER is `uring` (io_uring)
//! or `epoll` (monoio's legacy driver). One thread per CPU (or THREADS),
//! each with its own `SO_REUSEPORT` listener; per connection one task that
//! connects to BACKEND (TCP_NODELAY) and copies both ways with half-close.
//! No timeouts, no failover, no metrics: a floor to compare ferryd with.

use std::net::SocketAddr;
use std::process::ExitCode;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(mut from: R, mut to: W) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (read, b) = from.read(buf).await;
        buf = b;
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
        let (written, b) = to.write_all(buf).await;
        buf = b;
        if written.is_err() {
            break;
        }
        buf.clear();
    }
    let _ = to.shutdown().await;
}

async fn serve(client: TcpStream, backend: SocketAddr) {
    let Ok(server) = TcpStream::connect(backend).await else { return };
    let _ = server.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    monoio::join!(pump(client_rd, server_wr), pump(server_rd, client_wr));
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Accepted sockets inherit it.
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn run(uring: bool, listen: SocketAddr, backend: SocketAddr, threads: usize) -> Result<(), String> {
    let mut handles = Vec::new();
    for _ in 0..threads {
        let l = listener(listen).map_err(|e| format!("listen {listen}: {e}"))?;
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let accept_loop = async move {
                let l = TcpListener::from_std(l).map_err(|e| format!("register listener: {e}"))?;
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        monoio::spawn(serve(s, backend));
                    }
                }
            };
            if uring {
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(1024)
                    .build()
                    .map_err(|e| format!("io_uring runtime: {e}"))?
                    .block_on(accept_loop)
            } else {
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .build()
                    .map_err(|e| format!("epoll runtime: {e}"))?
                    .block_on(accept_loop)
            }
        }));
    }
    for h in handles {
        h.join().map_err(|_| "a proxy thread panicked".to_string())??;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: uring-proto uring|epoll LISTEN BACKEND [THREADS]";
    let parsed = (|| -> Result<(bool, SocketAddr, SocketAddr, usize), String> {
        let uring = match args.first().map(String::as_str) {
            Some("uring") => true,
            Some("epoll") => false,
            other => return Err(format!("DRIVER: expected uring or epoll, got {other:?}")),
        };
        let addr = |i: usize, name: &str| -> Result<SocketAddr, String> {
            let a = args.get(i).ok_or_else(|| format!("{name}: missing"))?;
            a.parse().map_err(|e| format!("{name}: invalid socket address {a:?}: {e}"))
        };
        let threads = match args.get(3) {
            Some(t) => t.parse().map_err(|e| format!("THREADS: {t:?}: {e}"))?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok((uring, addr(1, "LISTEN")?, addr(2, "BACKEND")?, threads))
    })();
    match parsed.and_then(|(uring, listen, backend, threads)| run(uring, listen, backend, threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uring-proto: {e}\n{usage}");
            ExitCode::from(2)
        }
    }
}
