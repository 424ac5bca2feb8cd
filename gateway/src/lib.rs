//! vx11-gateway: the single public entrypoint. It checks the token of every
//! `/<module>/api/*` request against the hot-reloaded token set and streams the request,
//! unchanged, to the module's backend.

pub mod body;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod routes;
pub mod upstream;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use vx11_tokenset::TokenStore;
use vx11_tokenset::service::{ApiError, Shutdown, access_log, health_routes};

use crate::config::Config;
use crate::metrics::GatewayMetrics;
use crate::policy::{Modules, PolicyMode};
use crate::routes::GatewayService;

pub type UpstreamClient = Client<HttpConnector, Body>;

/// Everything a request needs.
#[derive(Debug)]
pub struct Gateway {
    pub store: Arc<TokenStore>,
    pub modules: Modules,
    pub mode: PolicyMode,
    pub client: UpstreamClient,
    /// Event streams of modules with `streams_over_h2c`.
    pub stream_client: UpstreamClient,
    pub upstream_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub metrics: Arc<GatewayMetrics>,
    pub shutdown: Shutdown,
    pub tokens_dir: String,
}

impl Gateway {
    pub fn new(
        config: &Config,
        store: Arc<TokenStore>,
        metrics: Arc<GatewayMetrics>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            store,
            modules: config.modules.clone(),
            mode: config.policy_mode,
            client: upstream_client(config.upstream_connect_timeout),
            stream_client: stream_client(config.upstream_connect_timeout),
            upstream_timeout: config.upstream_timeout,
            upstream_idle_timeout: config.upstream_idle_timeout,
            max_body_bytes: config.max_body_bytes,
            metrics,
            shutdown,
            tokens_dir: config.tokens_dir.display().to_string(),
        }
    }
}

/// Read buffer of a backend connection, and so the largest response head a backend may
/// send (nginx's `proxy_buffer_size` is 4 or 8 KiB). hyper's default buffer grows to 16 KiB
/// and more after one large read (an SSE replay) and keeps that size for the life of the
/// connection: ~13 KiB more RSS per open event stream (measured with `vx11-bench sse`).
pub const UPSTREAM_READ_BUFFER: usize = 8 * 1024;

/// How both clients connect to a backend: bounded connect time, no Nagle delay.
fn backend_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector
}

/// A pooled HTTP/1.1 client with keep-alive to the backends.
pub fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4096)
        .http1_max_buf_size(UPSTREAM_READ_BUFFER)
        .build(backend_connector(connect_timeout))
}

/// An event stream's receive window at the gateway: what a backend may send ahead of a
/// client that reads slowly (HTTP/1.1 has the socket buffers for that). hyper's 2 MiB
/// default would let one stalled client hold 2 MiB here.
pub const H2C_STREAM_WINDOW: u32 = 64 * 1024;

/// The connection's receive window, shared by all its streams: large enough that stalled
/// streams, each capped by [`H2C_STREAM_WINDOW`], never stop the others (h2's maximum).
pub const H2C_CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// An HTTP/2 (h2c, prior knowledge) client: every event stream of a worker on one
/// connection per backend, ~20 KiB less per stream than an HTTP/1.1 connection each
/// (`docs/BENCHMARKS.md`). Pings find a backend that vanished without closing.
pub fn stream_client(connect_timeout: Duration) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(true)
        .http2_initial_stream_window_size(H2C_STREAM_WINDOW)
        .http2_initial_connection_window_size(H2C_CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .build(backend_connector(connect_timeout))
}

/// The gateway's routes: `/health`, `/ready`, `/<module>/api[/*]` behind the token check,
/// JSON 404 for the rest; every request logged and counted.
pub fn app(gateway: Arc<Gateway>) -> GatewayService {
    let other = Router::new()
        .merge(health_routes(
            gateway.store.clone(),
            gateway.tokens_dir.clone(),
        ))
        .fallback(|| async { ApiError::not_found().into_response() })
        .layer(from_fn_with_state(gateway.metrics.http.clone(), access_log));
    GatewayService::new(gateway, other)
}
