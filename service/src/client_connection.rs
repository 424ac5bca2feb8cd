//! One client connection of a worker, from its first byte (or the first after another
//! worker moved it here) to its end: the TLS handshake if any, the express lane, hyper for
//! the rest, or a move to the worker of the client's CPU between two requests.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::client_tcp::ClientTcp;
use crate::connection::{Clocks, ConnectionClock, Expiry, Watched};
use crate::connection_cap::{Admitted, ConnectionCap};
use crate::connection_service::{ConnectionPlace, ConnectionService, OpenConnection};
use crate::express::{self, ClientIo, Destination, ExpressConnection, ExpressEnd, Prefixed};
use crate::hyper_connection::{Ends, HyperBuilders, hyper_part, starts_http1};
use crate::moves::{Moved, WorkerMoves};
use crate::serving::{App, Serving};

/// What every connection of one worker's listener shares.
pub(crate) struct Worker {
    pub(crate) serving: Serving,
    pub(crate) builders: Arc<HyperBuilders>,
    pub(crate) clocks: Clocks,
    /// Cancelled when the shutdown grace is over: open connections close.
    pub(crate) close_all: CancellationToken,
    /// Set at shutdown: answers say `Connection: close`.
    pub(crate) draining: Arc<AtomicBool>,
}

/// A connection accepted (or moved here), with its places under the cap and in this
/// worker's count of open connections.
pub(crate) struct Client {
    pub(crate) tcp: ClientTcp,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) admitted: Admitted,
    pub(crate) open: OpenConnection,
}

/// The next connection another worker moved here; pending for ever for a worker that takes
/// none (the workers have no CPUs of their own).
pub(crate) async fn next_arrival(arrivals: &mut Option<UnboundedReceiver<Moved>>) -> Option<Moved> {
    match arrivals {
        Some(arrivals) => arrivals.recv().await,
        None => std::future::pending().await,
    }
}

/// One connection, from its first byte (or the first after another worker moved it here)
/// to its end.
pub(crate) async fn serve_connection(worker: Arc<Worker>, app: impl App, client: Client) {
    let Client {
        tcp,
        peer,
        admitted,
        open,
    } = client;
    let serving = &worker.serving;
    let clocks = worker.clocks;
    // The parts of a connection's future that only some connections need (the TLS
    // handshake, hyper's connection) are boxed when needed: inline, they made every
    // connection's task several KiB, copied at its start and at its end.
    let (tcp, scheme) = match &serving.tls {
        None => (Either::Left(tcp), crate::ClientScheme::Http),
        Some(tls) => {
            let shaken = Box::pin(handshake(
                tls.clone(),
                tcp,
                clocks,
                &worker.close_all,
                &serving.connections,
            ));
            match shaken.await {
                Ok(stream) => (Either::Right(Box::new(stream)), crate::ClientScheme::Https),
                Err(Some(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(None) => return,
            }
        }
    };
    let clock = ConnectionClock::new();
    let mut io = Watched::new(Prefixed::new(tcp), clock.clone());
    let express = serving
        .express
        .as_deref()
        .filter(|_| scheme == crate::ClientScheme::Http);
    let mut first = None;
    let mut http1 = false;
    if let Some(express) = express {
        let moves = serving.moves.as_deref();
        let lane =
            ExpressConnection::new(&mut io, peer, clock.clone(), worker.draining.clone(), moves);
        // Boxed: 1.3 KiB that a connection handed over to hyper (an event stream, say)
        // would otherwise keep in its task for its whole life.
        let run = Box::pin(express::run(
            express,
            lane,
            &worker.close_all,
            clocks,
            &serving.connections,
        ));
        match run.await {
            ExpressEnd::Closed => return,
            ExpressEnd::HandOver { bytes, first: left } => {
                http1 = starts_http1(&bytes);
                io.get_mut().put_back(bytes);
                first = left;
            }
            ExpressEnd::Move(destination) => {
                if let Some(moves) = moves
                    && move_connection(io, peer, admitted, moves, destination)
                {
                    serving.connections.moved();
                }
                return;
            }
        }
    }
    let place = ConnectionPlace::new(open, admitted);
    let service = ConnectionService {
        app,
        peer,
        scheme,
        clock: clock.clone(),
        draining: worker.draining.clone(),
        place: place.clone(),
        first: std::sync::Mutex::new(first),
    };
    // hyper serves the rest (from the start, or from where the lane handed over) under the
    // connection's clock and the server's shutdown.
    let ends = Ends {
        close_all: worker.close_all.clone(),
        clock,
        clocks,
        connections: serving.connections.clone(),
    };
    let hyper = hyper_part(&worker.builders, http1, io, service, ends);
    if let Err(error) = hyper.await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
    drop(place);
}

/// Hands a connection between two requests to the worker of `destination`, with its place
/// under the cap (it leaves this worker's count of open connections); `false` if it could
/// not leave this worker's event loop (it is closed, as the lane found it idle).
fn move_connection(
    io: ClientIo,
    peer: std::net::SocketAddr,
    admitted: Admitted,
    moves: &WorkerMoves,
    destination: Destination,
) -> bool {
    let Some(Either::Left(tcp)) = io.into_inner().into_inner() else {
        return false;
    };
    match tcp.into_std() {
        Ok(stream) => {
            let moved = Moved {
                stream,
                peer,
                admitted,
            };
            moves.send(destination, moved);
            true
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "a connection could not be moved");
            false
        }
    }
}

/// A TLS handshake under the head's clock: a client that opens a connection and sends
/// nothing holds it no longer than one that sends half a head. `Err(None)`: given up on
/// (timed out, counted, or the server closing).
async fn handshake(
    tls: crate::Tls,
    tcp: ClientTcp,
    clocks: Clocks,
    close_all: &CancellationToken,
    connections: &ConnectionCap,
) -> Result<tokio_rustls::server::TlsStream<ClientTcp>, Option<std::io::Error>> {
    let handshake = tokio::time::timeout(clocks.head, tls.acceptor().accept(tcp));
    // Kept to the end: a socket given up on closes after it is counted, so whoever sees it
    // closed finds it in the metrics.
    tokio::pin!(handshake);
    let shaken = tokio::select! {
        shaken = &mut handshake => shaken,
        () = close_all.cancelled() => return Err(None),
    };
    match shaken {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(Some(error)),
        Err(_) => {
            connections.closed(Expiry::SlowHandshake);
            Err(None)
        }
    }
}
