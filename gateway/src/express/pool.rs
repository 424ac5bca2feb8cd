//! One worker's idle connections to the backends, for the express lane: taken by a request
//! on the worker's own thread and given back when its response has been read whole, so a
//! request never waits on another task (hyper's pooled client hands each request to the
//! connection's task and the response back).

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per backend (hyper-util's pool keeps as many).
const MAX_IDLE_PER_BACKEND: usize = 4096;

/// Idle connections older than this are closed rather than used (as the full path's pool
/// does): a backend may have closed them meanwhile.
pub const IDLE_FOR: Duration = Duration::from_secs(60);

/// A worker's idle backend connections, by module.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<HashMap<std::sync::Arc<str>, Vec<Idle>>>,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Pool {
    /// The most recently used idle connection to `module`'s backend, if one is fresh.
    pub fn take(&self, module: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let connections = idle.get_mut(module)?;
        while let Some(connection) = connections.pop() {
            if connection.since.elapsed() < IDLE_FOR {
                return Some(connection.stream);
            }
        }
        None
    }

    /// Keeps `stream` for the next request to `module`'s backend.
    pub fn give_back(&self, module: &std::sync::Arc<str>, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let connections = idle.entry(module.clone()).or_default();
        if connections.len() < MAX_IDLE_PER_BACKEND {
            connections.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }
}
