//! One direction of the copy with splice(2): socket -> pipe -> socket, so the
//! bytes never enter user space. nix gives safe calls for `splice` and
//! `pipe2`; readiness comes from tokio (`try_io` clears it on `EAGAIN`).
//!
//! Pipes come from a small per-thread pool and go back to it empty when
//! their direction ends, so connection churn does not pay two `pipe2` and
//! two `close` per connection (HAProxy keeps a pipe pool for the same
//! reason). A pipe that may still hold bytes (an error mid-transfer) is
//! closed instead of pooled.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::copy::{Activity, Generation, PumpEnd, end_of_stream, unless_moved, wait_for_data};

/// Bytes moved per splice call with the default pipe capacity.
const CHUNK: usize = 64 * 1024;
/// Pipe capacity asked for (Linux's default pipe-max-size).
const PIPE_BYTES: usize = 1024 * 1024;
/// Empty pipes kept per thread for reuse.
const POOL_MAX: usize = 64;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes the pipe holds: the most one splice call moves.
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // A larger pipe moves more per splice call; the kernel may grant
        // less (pipe-max-size, or the per-user pipe budget), and the
        // default is kept then.
        let capacity = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32))
            .ok()
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(CHUNK);
        Ok(Self { read, write, capacity })
    }
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe taken from the pool (or created). It goes back to the pool on drop
/// only while `empty` holds.
struct Lease {
    pipe: Option<Pipe>,
    empty: bool,
}

impl Lease {
    /// Takes a pooled pipe, or creates one; the bool says which.
    fn take() -> io::Result<(Self, bool)> {
        let pooled = POOL.with(|p| p.borrow_mut().pop());
        let created = pooled.is_none();
        let pipe = match pooled {
            Some(p) => p,
            None => Pipe::new()?,
        };
        Ok((Self { pipe: Some(pipe), empty: true }, created))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take().filter(|_| self.empty) {
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.len() < POOL_MAX {
                    pool.push(pipe);
                }
            });
        }
    }
}

/// Pipes in this thread's pool (tests).
#[cfg(test)]
pub(crate) fn pooled() -> usize {
    POOL.with(|p| p.borrow().len())
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Splices `src` into `dst` until `src` ends, then shuts down `dst`'s
/// sending direction. The pipe is leased the first time `src` has data, so
/// an idle connection holds no pipe.
pub async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity<'_>,
    generation: Option<Generation<'_>>,
) -> io::Result<PumpEnd> {
    let Some(waited) = unless_moved(wait_for_data(src), generation).await else {
        return Ok(PumpEnd::Switch(Vec::new()));
    };
    waited?;
    activity.allocated();
    pump_leased(src, dst, activity, generation).await
}

/// [`pump`] for a direction that already carried data (the auto mode
/// switching over from the userspace copy): no wait, no allocation counted.
///
/// With `generation`, the route's chaos policies are checked before each
/// read (the pipe is empty then): a change returns
/// [`PumpEnd::Switch`] with no bytes, and the connection decides again.
pub async fn pump_leased(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity<'_>,
    generation: Option<Generation<'_>>,
) -> io::Result<PumpEnd> {
    let (mut lease, _) = Lease::take()?;
    loop {
        if generation.is_some_and(|g| g.moved()) {
            return Ok(PumpEnd::Switch(Vec::new()));
        }
        let Some(p) = lease.pipe.as_ref() else {
            return Err(io::Error::other("pipe lease lost"));
        };
        let n = match src
            .try_io(Interest::READABLE, || Ok(splice(src, None, &p.write, None, p.capacity, flags())?))
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The pipe is empty here: a change of the route's chaos
                // policies hands the direction over.
                match unless_moved(src.readable(), generation).await {
                    Some(ready) => ready?,
                    None => return Ok(PumpEnd::Switch(Vec::new())),
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            if generation.is_some_and(|g| g.moved()) {
                return Ok(PumpEnd::Switch(Vec::new()));
            }
            return end_of_stream(dst, activity).map(|()| PumpEnd::Eof);
        }
        // Drain the pipe completely before reading again, so a WouldBlock
        // on the read side always means "no data", never "pipe full". Until
        // it is drained, the pipe is not fit for the pool.
        lease.empty = false;
        let mut left = n;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || Ok(splice(&p.read, None, dst, None, left, flags())?)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
        lease.empty = true;
        activity.moved(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_reused_only_when_empty() -> io::Result<()> {
        let before = pooled();
        let (lease, _) = Lease::take()?;
        drop(lease);
        assert_eq!(pooled(), before + 1, "an empty pipe goes back to the pool");
        let (lease, created) = Lease::take()?;
        assert!(!created, "the pooled pipe is taken again");
        assert_eq!(pooled(), before);
        let mut dirty = lease;
        dirty.empty = false;
        drop(dirty);
        assert_eq!(pooled(), before, "a pipe that may hold bytes is closed, not pooled");
        let leases: Vec<Lease> =
            (0..POOL_MAX + 3).map(|_| Lease::take().map(|l| l.0)).collect::<Result<_, _>>()?;
        drop(leases);
        assert_eq!(pooled(), POOL_MAX, "the pool is bounded");
        Ok(())
    }
}
