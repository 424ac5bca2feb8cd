//! How a listener serves: the protocols it speaks, its limits, and what its workers share.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::connection_cap::{ConnectionCap, ListenerMetrics};
use crate::express::ExpressLane;
use crate::moves::WorkerMoves;
use crate::settings::ListenerLimits;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only: `/metrics`.
    Http1,
    /// HTTP/1.1 and HTTP/2 from clients: the gateway's public port. In the clear, HTTP/2
    /// with prior knowledge (h2c), told apart by a connection's first bytes; over TLS
    /// ([`Serving::tls`]), chosen by ALPN. HTTP/2 under [`PUBLIC_MAX_CONCURRENT_STREAMS`]
    /// and a header list of at most `VX11_MAX_HEADER_BYTES`.
    Http1AndH2,
    /// HTTP/1.1 and cleartext HTTP/2 (prior knowledge), told apart by a connection's first
    /// bytes: a backend the gateway multiplexes event streams to. Its HTTP/1.1 head limits
    /// are the configured ones plus [`FORWARDING_HEADROOM`], so that what the gateway
    /// accepted from a client under the same limits also fits once forwarded. (Its HTTP/2
    /// header list limit stays hyper's default, which the gateway checks before sending:
    /// `BACKEND_MAX_HEADER_LIST_SIZE` in vx11-gateway.)
    Http1AndH2c,
}

/// What the gateway adds to a request head it forwards, at most: a `Host` naming the
/// backend (the client's moves to `X-Forwarded-Host`), `X-Forwarded-For` (or the peer's
/// address appended to it) and `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    /// Header fields added.
    pub fields: usize,
    /// Bytes added: the fields' names and values (a backend host name up to 253 bytes, an
    /// IPv6 address), with room to spare.
    pub bytes: usize,
}

/// See [`Headroom`].
pub const FORWARDING_HEADROOM: Headroom = Headroom {
    fields: 3,
    bytes: 1024,
};

/// Streams one HTTP/2 connection may carry at once. hyper's default is 200, but the
/// gateway sends all the event streams of one worker over one connection (10 000 in the
/// benchmark). Callers are the gateway, behind the NetworkPolicy.
pub const H2C_MAX_CONCURRENT_STREAMS: u32 = 100_000;

/// Streams one client's HTTP/2 connection may carry at once on the public port (nginx's
/// `http2_max_concurrent_streams`); a browser opens a handful, an event stream per tab.
pub const PUBLIC_MAX_CONCURRENT_STREAMS: u32 = 128;

/// How a listener serves: the protocols it speaks, its limits, the connection count it
/// shares with the other workers accepting on the same port, and the shutdown grace.
#[derive(Debug, Clone)]
pub struct Serving {
    pub protocols: Protocols,
    pub limits: ListenerLimits,
    pub connections: Arc<ConnectionCap>,
    /// Bytes one HTTP/2 stream may queue for a peer that reads slowly
    /// (`VX11_STREAM_BUFFER_BYTES`; hyper's default is 400 KiB).
    pub h2_stream_buffer: usize,
    /// `VX11_STREAM_STALL_TIMEOUT` (nginx: `send_timeout`). A connection whose socket takes
    /// nothing of what is written to it for twice this is closed, whatever it serves: the
    /// event streams notice a stalled client themselves at once, and end alone (an HTTP/2
    /// stream without its connection); this is the backstop for every other response.
    pub stall_timeout: Duration,
    /// On SIGTERM, how long open connections get in all (`VX11_SHUTDOWN_GRACE`).
    pub grace: Duration,
    /// TLS on every connection (`VX11_TLS_DIR`); `None`: in the clear.
    pub tls: Option<crate::Tls>,
    /// Plain HTTP/1.1 requests answered before hyper sees the connection (connections in
    /// the clear only): [`crate::express`].
    pub express: Option<Arc<dyn ExpressLane>>,
    /// This worker's way to the others, when each has a CPU of its own: keep-alive
    /// connections follow their client's CPU ([`crate::WorkerMoves`]).
    pub moves: Option<Arc<WorkerMoves>>,
}

impl Serving {
    /// A listener named `listener` (`api` or `metrics`) of a service with `settings`.
    pub fn new(
        listener: &'static str,
        protocols: Protocols,
        settings: &crate::ServiceSettings,
        metrics: ListenerMetrics,
    ) -> Self {
        Self {
            protocols,
            limits: settings.listener.clone(),
            connections: ConnectionCap::new(listener, settings.listener.max_connections, metrics),
            h2_stream_buffer: settings.streams.buffer_bytes,
            stall_timeout: settings.streams.stall_timeout,
            grace: settings.shutdown_grace,
            tls: None,
            express: None,
            moves: None,
        }
    }

    /// Default limits, metrics registered nowhere: for tests and tools.
    pub fn with_defaults(listener: &'static str, protocols: Protocols) -> Self {
        let limits = ListenerLimits::default();
        Self {
            protocols,
            connections: ConnectionCap::new(
                listener,
                limits.max_connections,
                ListenerMetrics::default(),
            ),
            limits,
            h2_stream_buffer: crate::StreamLimits::default().buffer_bytes,
            stall_timeout: crate::StreamLimits::default().stall_timeout,
            grace: Duration::from_secs(10),
            tls: None,
            express: None,
            moves: None,
        }
    }
}

/// What answers a listener's requests: axum's router, or any service like it that a
/// worker can clone for each connection and that never fails (errors are answers).
pub trait App:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}
