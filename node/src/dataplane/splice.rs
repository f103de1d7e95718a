//! One direction of the copy with splice(2): socket -> pipe -> socket, so the
//! bytes never enter user space. nix gives safe calls for `splice` and
//! `pipe2`; readiness comes from tokio (`try_io` clears it on `EAGAIN`).
//!
//! The pipe is created the first time the source has data, so an idle
//! connection holds no pipe, and it is closed with the connection.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::copy::{Activity, wait_for_data};

/// Bytes moved per splice call with the default pipe capacity.
const CHUNK: usize = 64 * 1024;
/// Pipe capacity asked for (Linux's default pipe-max-size).
const PIPE_BYTES: usize = 1024 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes the pipe holds: the most one splice call moves.
    capacity: usize,
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Splices `src` into `dst` until `src` ends, then shuts down `dst`'s
/// sending direction.
pub async fn pump(src: &TcpStream, dst: &TcpStream, activity: &Activity<'_>) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    loop {
        let p = match &pipe {
            Some(p) => {
                src.readable().await?;
                p
            }
            None => {
                wait_for_data(src).await?;
                activity.allocated();
                let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
                // A larger pipe moves more per splice call; the kernel may
                // grant less (pipe-max-size), and the default is kept then.
                let capacity =
                    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32))
                        .ok()
                        .and_then(|c| usize::try_from(c).ok())
                        .unwrap_or(CHUNK);
                pipe.insert(Pipe { read, write, capacity })
            }
        };
        let n = match src
            .try_io(Interest::READABLE, || Ok(splice(src, None, &p.write, None, p.capacity, flags())?))
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            activity.flush();
            return match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
                Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                _ => Ok(()),
            };
        }
        // Drain the pipe completely before reading again, so a WouldBlock
        // on the read side always means "no data", never "pipe full".
        let mut left = n;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || Ok(splice(&p.read, None, dst, None, left, flags())?)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
        activity.moved(n);
    }
}
