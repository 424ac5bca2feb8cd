//! Serving until SIGTERM: stop accepting, drain keep-alive connections (each one's next
//! response says `Connection: close`), let in-flight requests finish up to a deadline, and tell
//! open streams to end cleanly.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::client_tcp::{ClientListener, ClientTcp};
use crate::connection::{Clocks, ConnectionClock, Expiry, Watched};
use crate::connection_cap::{ConnectionCap, ListenerMetrics};
use crate::connection_service::{ConnectionPlace, ConnectionService, OpenConnection};
use crate::express::{self, ExpressConnection, ExpressEnd, ExpressLane, Prefixed};
use crate::hyper_connection::{Ends, HyperBuilders, hyper_part, starts_http1};
use crate::settings::{ListenerLimits, MIN_HEADER_BYTES};
use crate::shutdown::Shutdown;

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

/// How long, at most, keep-alive connections are drained before the ones still open are
/// closed. Closing an idle connection races with a client that is just sending its next
/// request on it (the request is lost); answering that request with `Connection: close`
/// instead lets the client open a new connection, to another pod once this one has left the
/// Service's endpoints. Bounded by the shutdown grace.
pub const DRAIN: Duration = Duration::from_secs(2);

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
        }
    }
}

/// Serves `app` until `shutdown`, then drains keep-alive connections for up to [`DRAIN`] and
/// waits up to the grace in all for open connections (streams end themselves on
/// `shutdown`). Every connection lives under the listener's limits: it is refused past
/// `max_connections`, closed when idle for `idle_timeout` or when its TLS handshake or a
/// request head takes longer than `header_read_timeout`, and a head over
/// `max_header_bytes` or `max_headers` gets 431. The peer address is in each request's
/// extensions as [`axum::extract::ConnectInfo`]`<SocketAddr>`, and how the client came as
/// [`crate::ClientScheme`].
pub async fn serve_until_shutdown<S>(
    listener: TcpListener,
    app: S,
    shutdown: Shutdown,
    serving: Serving,
) -> std::io::Result<()>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builders = Arc::new(connection_builders(&serving));
    let clocks = Clocks {
        idle: serving.limits.idle_timeout,
        head: serving.limits.header_read_timeout,
        stall: serving.stall_timeout.saturating_mul(2),
    };
    let close_all = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let listener = ClientListener::new(listener)?;
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = shutdown.triggered() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(&error).await;
                    continue;
                }
            },
        };
        let Some(admitted) = serving.connections.admit() else {
            drop(tcp);
            continue;
        };
        let place = ConnectionPlace::new(OpenConnection::count(&open), admitted);
        let app = app.clone();
        let draining = draining.clone();
        let tls = serving.tls.clone();
        let builders = builders.clone();
        let close_all = close_all.clone();
        let connections = serving.connections.clone();
        let express = serving.express.clone();
        tokio::spawn(async move {
            // The parts of a connection's future that only some connections need (the TLS
            // handshake, hyper's connection) are boxed when needed: inline, they made every
            // connection's task several KiB, copied at its start and at its end.
            let (tcp, scheme) = match tls {
                None => (Either::Left(tcp), crate::ClientScheme::Http),
                Some(tls) => {
                    let shaken = Box::pin(handshake(tls, tcp, clocks, &close_all, &connections));
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
            let express = express.filter(|_| scheme == crate::ClientScheme::Http);
            let mut first = None;
            let mut http1 = false;
            if let Some(express) = express {
                let lane = ExpressConnection::new(&mut io, peer, clock.clone(), draining.clone());
                // Boxed: 1.3 KiB that a connection handed over to hyper (an event stream, say)
                // would otherwise keep in its task for its whole life.
                let run = Box::pin(express::run(
                    &*express,
                    lane,
                    &close_all,
                    clocks,
                    &connections,
                ));
                match run.await {
                    ExpressEnd::Closed => return,
                    ExpressEnd::HandOver { bytes, first: left } => {
                        http1 = starts_http1(&bytes);
                        io.get_mut().put_back(bytes);
                        first = left;
                    }
                }
            }
            let service = ConnectionService {
                app,
                peer,
                scheme,
                clock: clock.clone(),
                draining,
                place: place.clone(),
                first: std::sync::Mutex::new(first),
            };
            // hyper serves the rest (from the start, or from where the lane handed over)
            // under the connection's clock and the server's shutdown.
            let ends = Ends {
                close_all,
                clock,
                clocks,
                connections,
            };
            let hyper = hyper_part(&builders, http1, io, service, ends);
            if let Err(error) = hyper.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    let drain = DRAIN.min(serving.grace);
    let _ = tokio::time::timeout(drain, all_closed(&open)).await;
    close_all.cancel();
    if tokio::time::timeout(serving.grace.saturating_sub(drain), all_closed(&open))
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?serving.grace,
            "connections still open after the shutdown grace period; closing them"
        );
    }
    Ok(())
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

/// Resolves once no connection is left in `open`.
async fn all_closed(open: &AtomicUsize) {
    while open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn connection_builders(serving: &Serving) -> HyperBuilders {
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    let (max_header_bytes, max_headers) = match serving.protocols {
        Protocols::Http1AndH2c => (
            serving.limits.max_header_bytes + FORWARDING_HEADROOM.bytes,
            serving.limits.max_headers + FORWARDING_HEADROOM.fields,
        ),
        Protocols::Http1 | Protocols::Http1AndH2 => {
            (serving.limits.max_header_bytes, serving.limits.max_headers)
        }
    };
    // The read buffer bounds the request head: a head that does not fit gets 431. (It also
    // bounds what is buffered of a body or of a response for a slow reader.)
    let max_buf = max_header_bytes.max(MIN_HEADER_BYTES);
    match serving.protocols {
        Protocols::Http1 => builder = builder.http1_only(),
        Protocols::Http1AndH2 => {
            builder
                .http2()
                .max_concurrent_streams(PUBLIC_MAX_CONCURRENT_STREAMS)
                .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
                .max_send_buf_size(serving.h2_stream_buffer);
        }
        Protocols::Http1AndH2c => {
            builder
                .http2()
                .max_concurrent_streams(H2C_MAX_CONCURRENT_STREAMS)
                .max_send_buf_size(serving.h2_stream_buffer);
        }
    }
    HyperBuilders::new(builder, max_buf, max_headers)
}

/// Out of file descriptors (or memory): wait a moment instead of spinning on `accept`;
/// an aborted or reset connection is just skipped.
async fn pause_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::bind_listener;

    #[test]
    fn a_client_socket_keeps_the_tls_state_out_of_line() {
        // Inline, the TLS state made every connection's task 1.2 KiB larger, in the clear
        // too, and every event stream held it.
        let size = std::mem::size_of::<crate::express::ClientSocket>();
        assert!(size <= 64, "a client socket takes {size} bytes");
    }

    /// Sends one request on `stream` and reads its whole answer (the body is "ok").
    async fn exchange(stream: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"ok") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).to_lowercase()
    }

    #[tokio::test]
    async fn after_shutdown_a_keep_alive_connection_gets_its_next_answer_then_is_closed() {
        use tokio::io::AsyncReadExt as _;
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), "TEST_ADDR").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve_until_shutdown(
            listener,
            app,
            shutdown.clone(),
            Serving::with_defaults("api", Protocols::Http1),
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let first = exchange(&mut stream).await;
        assert!(first.starts_with("http/1.1 200") && !first.contains("connection: close"));

        shutdown.trigger();
        // Idle at the moment of shutdown, the connection is not cut: a request sent on it
        // now is answered, with `Connection: close`, and then the server closes it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = exchange(&mut stream).await;
        assert!(second.starts_with("http/1.1 200"), "{second}");
        assert!(second.contains("connection: close"), "{second}");
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "not closed after the answer: {closed:?}"
        );
        // With no connection left, serving ends before the drain is over.
        tokio::time::timeout(DRAIN, server)
            .await
            .expect("served past the last connection")
            .unwrap()
            .unwrap();
    }
}
