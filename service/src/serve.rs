//! Serving until SIGTERM: stop accepting, drain keep-alive connections (each one's next
//! response says `Connection: close`), let in-flight requests finish up to a deadline, and tell
//! open streams to end cleanly.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::connection::{Clocks, ConnectionClock, Expiry, InFlight, InFlightBody, Watched};
use crate::connection_cap::{ConnectionCap, ListenerMetrics};
use crate::settings::{ListenerLimits, MIN_HEADER_BYTES};

/// Pending connections the kernel queues for a listener. `TcpListener::bind` asks for std's
/// 128: a burst of new connections beyond that (EventSource clients reconnecting after a
/// restart) has SYNs dropped and retried only after 1 s. The kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` with [`LISTEN_BACKLOG`]; the error names the address and the setting
/// it came from.
pub fn bind_listener(addr: std::net::SocketAddr, setting: &str) -> std::io::Result<TcpListener> {
    listen_on(addr, false).map_err(|error| cannot_listen(addr, setting, error))
}

/// `count` listeners on the same port with `SO_REUSEPORT`, one per worker: the kernel hands
/// each new connection to one of them, so no other worker is woken for it (with one shared
/// socket, every worker woke for every connection and all but one found nothing to accept).
/// With port 0 they share the port the first one got.
pub fn bind_reuseport_listeners(
    addr: std::net::SocketAddr,
    setting: &str,
    count: usize,
) -> std::io::Result<Vec<TcpListener>> {
    // Another process may join a port its sockets share with `SO_REUSEPORT` (two gateways,
    // each serving its own token set, the kernel splitting connections between them). A
    // socket without the option cannot bind where any listener is, so it shows whether the
    // port is free; then it makes way for the workers' sockets.
    let probe = listen_on(addr, false).map_err(|error| cannot_listen(addr, setting, error))?;
    let free = probe.local_addr()?;
    drop(probe);
    let first = listen_on(free, true).map_err(|error| cannot_listen(free, setting, error))?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners
            .push(listen_on(bound, true).map_err(|error| cannot_listen(bound, setting, error))?);
    }
    Ok(listeners)
}

fn listen_on(addr: std::net::SocketAddr, reuseport: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn cannot_listen(
    addr: std::net::SocketAddr,
    setting: &str,
    error: std::io::Error,
) -> std::io::Error {
    std::io::Error::new(
        error.kind(),
        format!("cannot listen on {addr} ({setting}): {error}"),
    )
}

/// Cancelled on SIGTERM or SIGINT. Streams watch it to end themselves.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels on the first SIGTERM or SIGINT.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            token.cancel();
        });
        Ok(())
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub async fn triggered(&self) {
        self.0.cancelled().await
    }

    pub fn token(&self) -> &CancellationToken {
        &self.0
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only: the gateway's public port.
    Http1,
    /// HTTP/1.1 and cleartext HTTP/2 (prior knowledge), told apart by a connection's first
    /// bytes: a backend the gateway multiplexes event streams to.
    Http1AndH2c,
}

/// Streams one HTTP/2 connection may carry at once. hyper's default is 200, but the
/// gateway sends all the event streams of one worker over one connection (10 000 in the
/// benchmark). Callers are the gateway, behind the NetworkPolicy.
pub const H2C_MAX_CONCURRENT_STREAMS: u32 = 100_000;

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
        }
    }
}

/// Serves `app` until `shutdown`, then drains keep-alive connections for up to [`DRAIN`] and
/// waits up to the grace in all for open connections (streams end themselves on
/// `shutdown`). Every connection lives under the listener's limits: it is refused past
/// `max_connections`, closed when idle for `idle_timeout` or when a request head takes
/// longer than `header_read_timeout`, and a head over `max_header_bytes` gets 431. The peer
/// address is in each request's extensions as [`axum::extract::ConnectInfo`]`<SocketAddr>`.
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
    let builder = Arc::new(connection_builder(&serving));
    let clocks = Clocks {
        idle: serving.limits.idle_timeout,
        head: serving.limits.header_read_timeout,
        stall: serving.stall_timeout.saturating_mul(2),
    };
    let close_all = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
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
        // Small responses and SSE events go out at once rather than waiting on Nagle.
        let _ = tcp.set_nodelay(true);
        let clock = ConnectionClock::new();
        let service = ConnectionService {
            app: app.clone(),
            peer,
            clock: clock.clone(),
            draining: draining.clone(),
        };
        let builder = builder.clone();
        let close_all = close_all.clone();
        let connections = serving.connections.clone();
        let open = OpenConnection::count(&open);
        tokio::spawn(async move {
            let io = TokioIo::new(Watched::new(tcp, clock.clone()));
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let mut closing = false;
            let ended = loop {
                tokio::select! {
                    ended = connection.as_mut() => break ended,
                    () = close_all.cancelled(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    expiry = clock.expired(clocks), if !closing => {
                        connections.closed(expiry);
                        match expiry {
                            // Nothing in flight: closed between requests, cleanly.
                            Expiry::Idle => {
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            // A head still arriving: no answer is owed; the socket closes.
                            // A peer that reads nothing cannot be told anything.
                            Expiry::SlowHead | Expiry::Stalled => break Ok(()),
                        }
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(open);
            drop(admitted);
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

/// `app` as one connection serves it: each request carries the peer's address and keeps
/// the connection's clock stopped until its response body is dropped; while draining, an
/// answer says `Connection: close`.
struct ConnectionService<S> {
    app: S,
    peer: std::net::SocketAddr,
    clock: Arc<ConnectionClock>,
    draining: Arc<AtomicBool>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for ConnectionService<S>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone,
{
    type Response = hyper::Response<InFlightBody<Body>>;
    type Error = Infallible;
    type Future = Answer<tower::util::Oneshot<S, axum::extract::Request>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.clock.request_started();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(crate::ClientScheme::Http);
        Answer {
            inner: self.app.clone().oneshot(request),
            in_flight: Some(in_flight),
            draining: self.draining.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way to hyper.
    struct Answer<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        draining: Arc<AtomicBool>,
    }
}

impl<F> std::future::Future for Answer<F>
where
    F: std::future::Future<Output = Result<axum::response::Response, Infallible>>,
{
    type Output = Result<hyper::Response<InFlightBody<Body>>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let response = close_if_draining(response, this.draining);
        let in_flight = this.in_flight.take();
        std::task::Poll::Ready(Ok(response.map(|body| InFlightBody::new(body, in_flight))))
    }
}

/// While draining, an HTTP/1.1 response closes its connection after it. (On an HTTP/2
/// connection hyper drops the header, which is not allowed there; the graceful shutdown's
/// GOAWAY does that job.)
fn close_if_draining(
    mut response: axum::response::Response,
    draining: &AtomicBool,
) -> axum::response::Response {
    if draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Resolves once no connection is left in `open`.
async fn all_closed(open: &AtomicUsize) {
    while open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One open connection in a count, for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn connection_builder(serving: &Serving) -> AutoBuilder<TokioExecutor> {
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    // The read buffer bounds the request head: a head that does not fit gets 431. (It also
    // bounds what is buffered of a body or of a response for a slow reader.)
    builder
        .http1()
        .max_buf_size(serving.limits.max_header_bytes.max(MIN_HEADER_BYTES));
    match serving.protocols {
        Protocols::Http1 => builder = builder.http1_only(),
        Protocols::Http1AndH2c => {
            builder
                .http2()
                .max_concurrent_streams(H2C_MAX_CONCURRENT_STREAMS)
                .max_send_buf_size(serving.h2_stream_buffer);
        }
    }
    builder
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

    #[tokio::test]
    async fn reuseport_listeners_share_one_port_and_every_connection_is_accepted_once() {
        let listeners =
            bind_reuseport_listeners("127.0.0.1:0".parse().unwrap(), "TEST_ADDR", 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert!(
            listeners
                .iter()
                .all(|l| l.local_addr().unwrap().port() == port)
        );
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for listener in listeners {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while listener.accept().await.is_ok() {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        let mut clients = Vec::new();
        for _ in 0..30 {
            clients.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        for _ in 0..500 {
            if accepted.load(std::sync::atomic::Ordering::SeqCst) == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 30);
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

    #[tokio::test]
    async fn a_second_process_cannot_join_the_workers_port() {
        let first =
            bind_reuseport_listeners("127.0.0.1:0".parse().unwrap(), "VX11_GATEWAY_ADDR", 2)
                .unwrap();
        let second =
            bind_reuseport_listeners(first[0].local_addr().unwrap(), "VX11_GATEWAY_ADDR", 2)
                .unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse, "{second}");
        assert!(second.to_string().contains("VX11_GATEWAY_ADDR"), "{second}");
    }

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_a_clear_error() {
        let taken = bind_listener("127.0.0.1:0".parse().unwrap(), "OTHER").unwrap();
        let error = bind_reuseport_listeners(taken.local_addr().unwrap(), "VX11_GATEWAY_ADDR", 2)
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("cannot listen on") && message.contains("VX11_GATEWAY_ADDR"),
            "{message}"
        );
    }
}
