//! hyper's side of a connection, once the express lane (if any) is done with it: HTTP/1.1
//! served straight away when the bytes the lane read start an HTTP/1 request, else by
//! hyper_util's auto builder, which tells HTTP/1.1 from HTTP/2 by the connection's first
//! bytes.
//!
//! The auto builder reads those first bytes itself (up to the 24 of HTTP/2's connection
//! preface) and gives them to hyper as a read of their own, so a connection it serves as
//! HTTP/1.1 costs a read, a copy and an allocation more, and hyper's 8 KiB read buffer, 24
//! bytes in, grows to 16 KiB on the next read and keeps that size for the connection's
//! life. Little of the second half is ever touched, so the resident memory it costs is
//! smaller than that: 0.8 KiB per event stream at 5 000 streams (`docs/BENCHMARKS.md`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio_util::sync::CancellationToken;

use crate::connection::{Clocks, ConnectionClock, Expiry};
use crate::connection_cap::ConnectionCap;
use crate::connection_service::ConnectionService;
use crate::express::ClientIo;

/// What a connection's end may carry: hyper's error, or hyper_util's.
pub(crate) type ConnectionError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2's connection preface: a connection that starts with it speaks HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The two ways a listener's connections are served, with the same HTTP/1.1 limits.
pub(crate) struct HyperBuilders {
    /// HTTP/1.1 or HTTP/2, by the connection's first bytes (or HTTP/1.1 only, per listener).
    pub(crate) auto: AutoBuilder<TokioExecutor>,
    /// HTTP/1.1, for a connection whose first bytes are known to be an HTTP/1 request.
    pub(crate) http1: http1::Builder,
}

impl HyperBuilders {
    /// `auto` (its HTTP/2 side set up) and an HTTP/1.1 builder, both given the same HTTP/1.1
    /// limits here: the read buffer's bound and the header count.
    pub(crate) fn new(
        mut auto: AutoBuilder<TokioExecutor>,
        max_buf: usize,
        max_headers: usize,
    ) -> Self {
        auto.http1().max_buf_size(max_buf).max_headers(max_headers);
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(max_buf).max_headers(max_headers);
        Self { auto, http1 }
    }
}

/// Whether a connection that starts with `first` (bytes already read of it) is one the
/// auto builder would serve as HTTP/1: they are not HTTP/2's preface, nor the start of it.
pub(crate) fn starts_http1(first: &[u8]) -> bool {
    let n = first.len().min(H2_PREFACE.len());
    n > 0 && first[..n] != H2_PREFACE[..n]
}

/// hyper serving `io`, boxed, each way at its own size (the auto builder's, which can hold an
/// HTTP/2 connection, is larger): HTTP/1.1 directly when `http1` (the connection's first
/// bytes are an HTTP/1 request), else as the auto builder finds. A function of its own, so
/// that what it builds is not part of the connection's task.
pub(crate) fn hyper_part<S>(
    builders: &Arc<HyperBuilders>,
    http1: bool,
    io: ClientIo,
    service: ConnectionService<S>,
    ends: Ends,
) -> Pin<Box<dyn Future<Output = Result<(), ConnectionError>> + Send>>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    if http1 {
        let connection = builders.http1.serve_connection(io, service);
        Box::pin(ends.drive(connection.with_upgrades(), |c| c.graceful_shutdown()))
    } else {
        let builders = builders.clone();
        Box::pin(async move {
            let connection = builders.auto.serve_connection_with_upgrades(io, service);
            ends.drive(connection, |c| c.graceful_shutdown()).await
        })
    }
}

/// How a connection ends: when hyper is done with it, or as the server's shutdown and the
/// connection's clock say.
pub(crate) struct Ends {
    pub(crate) close_all: CancellationToken,
    pub(crate) clock: Arc<ConnectionClock>,
    pub(crate) clocks: Clocks,
    pub(crate) connections: Arc<ConnectionCap>,
}

impl Ends {
    /// Drives `connection` to its end; `graceful_shutdown` asks it to finish what is in
    /// flight and close.
    pub(crate) async fn drive<C, E>(
        self,
        connection: C,
        graceful_shutdown: impl Fn(Pin<&mut C>),
    ) -> Result<(), ConnectionError>
    where
        C: Future<Output = Result<(), E>>,
        E: Into<ConnectionError>,
    {
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => return ended.map_err(Into::into),
                () = self.close_all.cancelled(), if !closing => {
                    graceful_shutdown(connection.as_mut());
                    closing = true;
                }
                expiry = self.clock.expired(self.clocks), if !closing => {
                    self.connections.closed(expiry);
                    match expiry {
                        // Nothing in flight: closed between requests, cleanly.
                        Expiry::Idle => {
                            graceful_shutdown(connection.as_mut());
                            closing = true;
                        }
                        // A head still arriving: no answer is owed; the socket closes. A
                        // peer that reads nothing cannot be told anything.
                        Expiry::SlowHead | Expiry::SlowHandshake | Expiry::Stalled => {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_request_line_starts_http1() {
        assert!(starts_http1(b"GET / HTTP/1.1\r\n"));
        assert!(starts_http1(b"G"));
        // Differs from the preface at its last byte.
        assert!(starts_http1(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r"));
        assert!(starts_http1(b"PRI / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn the_preface_or_its_start_is_left_to_the_auto_builder() {
        assert!(!starts_http1(H2_PREFACE));
        assert!(!starts_http1(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"
        ));
        assert!(!starts_http1(b"PRI * HT"));
        assert!(!starts_http1(b"P"));
        assert!(!starts_http1(b""));
    }
}
