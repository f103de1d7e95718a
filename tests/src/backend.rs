//! In-process TCP backends for tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// A backend that writes `"{name}\n"` on accept, then echoes everything
/// back. Killing it closes its port and every connection it holds.
#[derive(Debug)]
pub struct Greeter {
    pub name: String,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Greeter {
    /// Starts a greeter on 127.0.0.1 with an OS-chosen port.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_on(name, "127.0.0.1:0".parse()?).await
    }

    /// Starts a greeter on `addr`.
    pub async fn start_on(name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, name.to_string(), stop.clone()));
        Ok(Self { name: name.to_string(), addr, stop })
    }

    /// Closes the listener and every open connection, as a crash would. The
    /// listener closes asynchronously: see [`Greeter::kill_and_wait`].
    pub fn kill(&self) {
        self.stop.cancel();
    }

    /// [`Greeter::kill`], returning once the port refuses connections: from
    /// then on nothing reaches this backend.
    pub async fn kill_and_wait(&self) -> anyhow::Result<()> {
        self.kill();
        let addr = self.addr;
        crate::eventually(Duration::from_secs(5), "the killed backend to refuse", || async move {
            TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(listener: TcpListener, name: String, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            () = stop.cancelled() => return,
        };
        let (name, stop) = (name.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = greet_and_echo(stream, &name) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn greet_and_echo(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.write_all(format!("{name}\n").as_bytes()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// An address whose connects hang until they time out: a listener that
/// never accepts, with its accept queue already full (Linux then drops
/// further SYNs).
#[derive(Debug)]
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Creates a blackhole on 127.0.0.1 and checks that it swallows connects.
    pub async fn start() -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener = socket.listen(1)?;
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..8 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        let probe = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await;
        anyhow::ensure!(probe.is_err(), "blackhole at {addr} answered a connect: {probe:?}");
        Ok(Self { addr, _listener: listener, _fillers: fillers })
    }
}

/// A loopback port that refuses connections (nothing listens on it).
pub fn closed_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}
