//! Keep-alive connections that follow their client's CPU, between workers that each have a
//! CPU of their own (the gateway's `VX11_WORKER_CPUS=auto`).
//!
//! A new connection goes to the worker of the CPU its SYN arrived on (`steer_by_cpu`), so
//! that the client's packets, the worker's answers and the wake-ups between them stay on
//! one CPU. But the client's CPU can change after the connection is made: on loopback it is
//! the CPU the client's thread runs on, which the scheduler moves. (A client with two
//! threads that both start on one CPU opens all its connections to one worker, and the
//! other worker stays idle once the threads spread out.) So every [`CHECK_EVERY`] answers
//! the express lane asks the kernel where the connection's packets now arrive
//! (`SO_INCOMING_CPU`, one system call), and when that is another worker's CPU, it hands
//! the connection, between two requests, with nothing of it buffered, to that worker,
//! which serves it on as it serves a connection it accepted. From a network card the
//! CPU of a connection's packets is the same for its whole life, and nothing moves.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::connection_cap::Admitted;

/// Answers on a connection between two looks at the CPU its packets arrive on: a system
/// call per this many requests.
pub const CHECK_EVERY: u32 = 32;

/// What one worker needs to move connections to the others and take theirs.
#[derive(Debug)]
pub struct WorkerMoves {
    /// This worker's index in `cpus`.
    own: usize,
    /// The CPU of each worker.
    cpus: Arc<[usize]>,
    /// Each worker's way in, this one's too.
    to: Arc<[UnboundedSender<Moved>]>,
    /// This worker's way in, taken by its serving loop.
    arrivals: Mutex<Option<UnboundedReceiver<Moved>>>,
}

/// Where a connection goes: another worker (made by [`WorkerMoves::destination`] only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination(usize);

/// A connection on its way to another worker: its socket, taken out of the event loop of
/// the worker it leaves, and its place under the connection cap.
#[derive(Debug)]
pub(crate) struct Moved {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) admitted: Admitted,
}

/// One [`WorkerMoves`] per worker; worker `i` runs on `cpus[i]` alone.
pub fn worker_moves(cpus: &[usize]) -> Vec<WorkerMoves> {
    let (to, arrivals): (Vec<_>, Vec<_>) = cpus.iter().map(|_| unbounded_channel()).unzip();
    let to: Arc<[UnboundedSender<Moved>]> = to.into();
    let cpus: Arc<[usize]> = cpus.into();
    arrivals
        .into_iter()
        .enumerate()
        .map(|(own, arrivals)| WorkerMoves {
            own,
            cpus: cpus.clone(),
            to: to.clone(),
            arrivals: Mutex::new(Some(arrivals)),
        })
        .collect()
}

impl WorkerMoves {
    /// The worker whose CPU `incoming_cpu` is, if that is another worker still taking
    /// connections.
    pub fn destination(&self, incoming_cpu: usize) -> Option<Destination> {
        let worker = self.cpus.iter().position(|&cpu| cpu == incoming_cpu)?;
        (worker != self.own && !self.to[worker].is_closed()).then_some(Destination(worker))
    }

    /// Hands `moved` to the worker of `destination`; if that worker stopped meanwhile (the
    /// server is shutting down), the connection is closed, as an idle one is then.
    pub(crate) fn send(&self, destination: Destination, moved: Moved) {
        let _ = self.to[destination.0].send(moved);
    }

    /// The connections other workers hand to this one: taken once, by its serving loop.
    pub(crate) fn take_arrivals(&self) -> Option<UnboundedReceiver<Moved>> {
        self.arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_moves_only_to_another_worker_that_takes_connections() {
        let moves = worker_moves(&[2, 5]);
        assert_eq!(moves[0].destination(5), Some(Destination(1)));
        assert_eq!(moves[1].destination(2), Some(Destination(0)));
        // Its own CPU, or a CPU no worker runs on: it stays.
        assert_eq!(moves[0].destination(2), None);
        assert_eq!(moves[0].destination(3), None);
        // A worker that stopped taking connections is no destination.
        drop(moves[1].take_arrivals());
        assert_eq!(moves[0].destination(5), None);
        assert!(moves[1].take_arrivals().is_none(), "taken once");
    }
}
