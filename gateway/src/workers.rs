//! The gateway's worker threads, nginx's model: one single-threaded runtime per core, each
//! accepting on its own `SO_REUSEPORT` socket of the same port. A connection, its requests,
//! and the backend connections they use stay on the thread that accepted it, so a proxied
//! request wakes no other thread. On 2 cores this doubled requests/s against one
//! multi-threaded runtime, where a request crossed threads about three times
//! (`docs/BENCHMARKS.md`). With `VX11_WORKER_CPUS=auto` each worker also stays on a CPU of
//! its own, the one its listener takes connections for (`crate::worker_cpus`).

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::dispatch::app;
use crate::express::lane_for;
use crate::gateway::Gateway;
use crate::worker_cpus::pin_worker;
use vx11_service::{
    Serving, Shutdown, keep_access_lines, serve_until_shutdown, worker_moves,
    write_kept_access_lines,
};

/// What every worker needs to build its own service (its own backend connection pools):
/// its own [`Gateway`].
pub type MakeApp = Arc<dyn Fn() -> Arc<Gateway> + Send + Sync>;

/// Worker threads, each serving its own listener until shutdown.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Workers {
    /// Starts one worker per listener (non-blocking std sockets, registered by the worker
    /// that owns it). Each serves until `shutdown` as `serving` says, sharing its
    /// connection count with the others; with `express`, each has its own express lane
    /// ([`crate::express`]) in front of hyper (connections in the clear only). With `cpus`,
    /// worker `i` runs on `cpus[i]` only.
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        make_app: MakeApp,
        shutdown: &Shutdown,
        serving: &Serving,
        express: bool,
        cpus: Option<&[usize]>,
    ) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(listeners.len());
        // Workers on CPUs of their own pass keep-alive connections to the worker of the
        // CPU their client sends from.
        let mut moves = cpus.map(worker_moves).unwrap_or_default().into_iter();
        for (index, listener) in listeners.into_iter().enumerate() {
            let cpu = cpus.and_then(|cpus| cpus.get(index).copied());
            let moves = moves.next().map(Arc::new);
            let make_app = make_app.clone();
            let shutdown = shutdown.clone();
            let failed = shutdown.clone();
            let mut serving = serving.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vx11-worker-{index}"))
                .spawn(move || {
                    if let Some(Err(error)) = cpu.map(pin_worker) {
                        shutdown_on_failure(&shutdown);
                        return Err(error);
                    }
                    // Access lines go out together, when the worker goes idle or has 4 KiB.
                    keep_access_lines();
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .on_thread_park(write_kept_access_lines)
                        .build()?;
                    let shutdown_of_worker = shutdown.clone();
                    let result = runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let gateway = make_app();
                        serving.express = lane_for(&gateway, express, &serving.limits);
                        serving.moves = moves;
                        serve_until_shutdown(listener, app(gateway), shutdown_of_worker, serving)
                            .await
                    });
                    if result.is_err() {
                        // One worker down means the others must not serve on alone unnoticed.
                        shutdown_on_failure(&shutdown);
                    }
                    result
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    failed.trigger();
                    return Err(error);
                }
            }
        }
        Ok(Self { threads })
    }

    /// Waits for every worker; the first error, if any.
    pub fn join(self) -> std::io::Result<()> {
        let mut first_error = None;
        for thread in self.threads {
            let result = thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")));
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn shutdown_on_failure(shutdown: &Shutdown) {
    tracing::error!("a worker stopped with an error; shutting the gateway down");
    shutdown.trigger();
}
