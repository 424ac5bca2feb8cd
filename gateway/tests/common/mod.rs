//! The gateway in-process on a loopback port in front of a backend given by the test, and
//! raw TCP clients and backends that send exactly the bytes an attacker (or a broken
//! backend) would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use clap::Parser;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use vx11_gateway::config::{Args, Config};
use vx11_gateway::express::lane_for;
use vx11_gateway::metrics::GatewayMetrics;
use vx11_gateway::{Gateway, app};
use vx11_service::express::ExpressLane;
use vx11_service::{
    ListenerLimits, Protocols, Serving, Shutdown, StreamSlots, serve_until_shutdown,
};
use vx11_tokenset::{Origin, SetEntry, TokenDigest, TokenSet, TokenStore};

pub const TOKEN: &str = "vx11-operator-test-token";
/// Another token, of another name (the per-token stream cap counts by name).
pub const OTHER_TOKEN: &str = "vx11-console-test-token";

/// Serves `service` on a fresh loopback port until the test ends.
pub async fn serve<S>(service: S, protocols: Protocols) -> SocketAddr
where
    S: tower::Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    serve_on(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        service,
        protocols,
    )
}

/// Serves `gateway` on a fresh loopback port as one of the binary's workers does: its
/// routes, and the express lane in front when `express` (`VX11_EXPRESS`).
pub async fn serve_gateway(
    gateway: Arc<Gateway>,
    express: bool,
    protocols: Protocols,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lane_gateway = gateway.clone();
    serve_with_lane(listener, app(gateway), protocols, |limits| {
        lane_for(&lane_gateway, express, limits)
    })
}

/// A loopback listener whose connections have a fixed, small send buffer: the kernel then
/// takes only a few KiB that a client does not read, instead of growing the buffer to
/// megabytes, so a stalled client shows within moments.
pub fn small_send_buffer_listener() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(128).unwrap()
}

fn serve_on<S>(listener: TcpListener, service: S, protocols: Protocols) -> SocketAddr
where
    S: tower::Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    serve_with_lane(listener, service, protocols, |_| None)
}

/// Serves `service` as [`serve_on`] does, with the express lane `lane` gives for the
/// listener's limits (as the binary's workers do).
fn serve_with_lane<S>(
    listener: TcpListener,
    service: S,
    protocols: Protocols,
    lane: impl FnOnce(&ListenerLimits) -> Option<Arc<dyn ExpressLane>>,
) -> SocketAddr
where
    S: tower::Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let mut serving = Serving::with_defaults("api", protocols);
    serving.grace = Duration::from_secs(1);
    // Large heads reach the gateway's own checks (the listener's 431 is tested in service).
    serving.limits.max_header_bytes = 256 * 1024;
    serving.express = lane(&serving.limits);
    tokio::spawn(serve_until_shutdown(
        listener,
        service,
        Shutdown::new(),
        serving,
    ));
    addr
}

/// A gateway on loopback.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub metrics: Arc<GatewayMetrics>,
    pub slots: Arc<StreamSlots>,
    /// The token set it checks against (`operator` = [`TOKEN`], `console` = [`OTHER_TOKEN`]).
    pub store: Arc<TokenStore>,
    /// The gateway's own shutdown signal (its streams and tunnels watch it).
    pub shutdown: Shutdown,
}

impl RunningGateway {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The gateway in front of `backend` (`http://…`), with `flags` on top of the tests' usual
/// ones.
pub async fn gateway(backend: &str, flags: &[&str]) -> RunningGateway {
    gateway_on(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        backend,
        flags,
    )
}

/// [`gateway`] on `listener`.
pub fn gateway_on(listener: TcpListener, backend: &str, flags: &[&str]) -> RunningGateway {
    gateway_speaking(listener, backend, flags, Protocols::Http1)
}

/// [`gateway_on`], speaking `protocols` to its clients (the binary's public port speaks
/// [`Protocols::Http1AndH2`]).
pub fn gateway_speaking(
    listener: TcpListener,
    backend: &str,
    flags: &[&str],
    protocols: Protocols,
) -> RunningGateway {
    let mut all = vec![
        "vx11-gateway",
        "--operator-backend-url",
        backend,
        "--upstream-timeout",
        "2s",
        "--max-body-bytes",
        "4096",
    ];
    all.extend_from_slice(flags);
    let config = Config::from_args(Args::try_parse_from(all).unwrap()).unwrap();
    let store = Arc::new(TokenStore::new());
    store.install(
        TokenSet::new(vec![
            SetEntry::new(
                "operator",
                TokenDigest::of(TOKEN.as_bytes()),
                Origin::TokenFile,
            ),
            SetEntry::new(
                "console",
                TokenDigest::of(OTHER_TOKEN.as_bytes()),
                Origin::TokenFile,
            ),
        ]),
        Some(1),
    );
    let metrics = GatewayMetrics::register(&mut Registry::default(), store.clone());
    let slots = StreamSlots::new(&config.service.streams);
    let shutdown = Shutdown::new();
    let gateway = Arc::new(Gateway::new(
        &config,
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
        slots.clone(),
    ));
    // The express lane as the binary has it (on unless `--express false` or CORS).
    let express = config.express;
    let lane_gateway = gateway.clone();
    let addr = serve_with_lane(listener, app(gateway), protocols, |limits| {
        lane_for(&lane_gateway, express, limits)
    });
    RunningGateway {
        addr,
        metrics,
        slots,
        store,
        shutdown,
    }
}

/// Sends `request` as raw bytes on a new connection and reads the answer until the server
/// closes (or 5 s pass): the whole answer, as text.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP/1.1 answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// The JSON body's `error` of a raw answer (`<none>` without one).
pub fn error_of(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let start = body.find('{').unwrap_or(0);
    serde_json::from_str::<serde_json::Value>(body[start..].trim_end_matches(['\r', '\n', '0']))
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "<none>".into())
}

/// A backend that accepts connections and answers each with `answer(request_head)`, raw,
/// then closes; counts the connections it accepted.
pub async fn raw_backend(
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = answer(&String::from_utf8_lossy(&head));
                let _ = stream.write_all(&reply).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

/// Polls `condition` every 10 ms for up to `limit`; whether it held.
pub async fn eventually(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
