//! Data-plane worker threads: each runs its own single-threaded tokio
//! runtime, and each route has one `SO_REUSEPORT` listener per worker, so
//! the kernel spreads new connections over the workers and a connection
//! lives on one thread from accept to close (no work stealing, no
//! cross-core wakeups), as nginx workers and Envoy's worker threads do.
//!
//! With zero workers the data plane shares the runtime the node was started
//! on instead.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::warn;

/// Where accept loops (and so their connections) run.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Starts `n` worker threads; with `n == 0`, uses the current runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        if n == 0 {
            return Ok(Self { handles: vec![Handle::current()], threads: Vec::new() });
        }
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("ferry-worker-{i}")).spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime here cancels what is left on it.
            })?;
            threads.push((stop, thread));
        }
        Ok(Self { handles, threads })
    }

    /// One runtime handle per accept loop a route gets.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// True when each route needs one `SO_REUSEPORT` socket per worker.
    pub fn dedicated(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Stops the worker threads and waits for them.
    pub fn stop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            if thread.join().is_err() {
                warn!("a data-plane worker thread panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Signal only: joining here could block a runtime thread.
        for (stop, _) in self.threads.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// The default number of workers: one per available CPU.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
