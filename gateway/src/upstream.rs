//! Sending a request on to a module's backend: the two pooled clients (HTTP/1.1, and h2c
//! for event streams), the time allowed for the response head, and the answers when the
//! backend is down or slow.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use vx11_service::{ApiError, ErrorCode};

use crate::client_body::{BodyFailure, BodyOutcome};
use crate::connect::BackendConnector;
use crate::metrics::{GatewayMetrics, ModuleLabel, UpstreamErrorLabels};
use crate::modules::Module;

pub type UpstreamClient = Client<BackendConnector, Body>;

/// Read buffer of a backend connection, and so the largest response head a backend may
/// send (nginx's `proxy_buffer_size` is 4 or 8 KiB). hyper's default buffer grows to 16 KiB
/// and more after one large read (an SSE replay) and keeps that size for the life of the
/// connection: ~13 KiB more RSS per open event stream (measured with `vx11-bench sse`).
pub const UPSTREAM_READ_BUFFER: usize = 8 * 1024;

/// The largest HTTP/2 frame a backend sends the gateway (h2's default
/// `SETTINGS_MAX_FRAME_SIZE`, which the client keeps): what a stream may hold of the
/// backend's last frame while its client is slow.
pub const H2C_MAX_FRAME: usize = 16 * 1024;

/// The smallest `VX11_STREAM_BUFFER_BYTES` the gateway takes: room for a frame, the bytes in
/// flight to the client, and a stream window no smaller than a frame.
pub const MIN_STREAM_BUFFER_BYTES: usize = 2 * H2C_MAX_FRAME + crate::pacing::IN_FLIGHT_BYTES;

/// An event stream's receive window at the gateway: what a backend may send ahead of a
/// client that reads slowly. With the frame a stream may keep and the bytes in flight to
/// the client ([`crate::pacing`]), a stalled stream holds at most `buffer_bytes`
/// (`VX11_STREAM_BUFFER_BYTES`) here. hyper's 2 MiB default would let one stalled client
/// hold 2 MiB.
pub fn h2c_stream_window(buffer_bytes: usize) -> u32 {
    let window = buffer_bytes
        .saturating_sub(H2C_MAX_FRAME + crate::pacing::IN_FLIGHT_BYTES)
        .max(H2C_MAX_FRAME);
    u32::try_from(window).unwrap_or(H2C_CONNECTION_WINDOW)
}

/// The connection's receive window, shared by all its streams: large enough that stalled
/// streams, each capped by its stream window, never stop the others (h2's maximum).
pub const H2C_CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// A pooled HTTP/1.1 client with keep-alive to the backends.
pub fn upstream_client(connect_timeout: Duration, response_timeout: Duration) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4096)
        .http1_max_buf_size(UPSTREAM_READ_BUFFER)
        .build(BackendConnector::new(connect_timeout, response_timeout))
}

/// An HTTP/2 (h2c, prior knowledge) client: every event stream of a worker on one
/// connection per backend, ~20 KiB less per stream than an HTTP/1.1 connection each
/// (`docs/BENCHMARKS.md`). Pings find a backend that vanished without closing.
pub fn stream_client(
    connect_timeout: Duration,
    response_timeout: Duration,
    stream_window: u32,
) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(true)
        .http2_initial_stream_window_size(stream_window)
        .http2_initial_connection_window_size(H2C_CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .build(BackendConnector::new(connect_timeout, response_timeout))
}

/// The backends as one worker reaches them.
#[derive(Debug)]
pub struct Upstreams {
    pub client: UpstreamClient,
    /// Event streams of modules with `streams_over_h2c`.
    pub stream_client: UpstreamClient,
    /// Time allowed for a response head (`VX11_UPSTREAM_TIMEOUT`).
    pub timeout: Duration,
}

/// Why a request got no response from its backend.
#[derive(Debug)]
pub enum NotSent {
    /// The request body went over the limit while it was being sent.
    BodyTooLarge,
    /// The client's body was not valid HTTP (bad chunk size or terminator) or ended early:
    /// the client's error, not the backend's.
    InvalidBody,
    /// The backend is down or slow: the answer for the client (502 or 504).
    Refused(Response),
}

impl Upstreams {
    /// `stream_buffer_bytes`: `VX11_STREAM_BUFFER_BYTES`, which sets the h2c stream window.
    pub fn new(connect_timeout: Duration, timeout: Duration, stream_buffer_bytes: usize) -> Self {
        Self {
            client: upstream_client(connect_timeout, timeout),
            stream_client: stream_client(
                connect_timeout,
                timeout,
                h2c_stream_window(stream_buffer_bytes),
            ),
            timeout,
        }
    }

    /// Sends `request` to `module`'s backend (an event stream of a module with
    /// `streams_over_h2c` on the h2c client: `over_h2c`) and waits for the response head;
    /// counts the wait and the failures. A failure of the client's body (`body`) is the
    /// client's: it is neither counted nor logged as the backend's.
    pub async fn send(
        &self,
        module: &Module,
        request: hyper::Request<Body>,
        body: &BodyOutcome,
        over_h2c: bool,
        metrics: &GatewayMetrics,
    ) -> Result<hyper::Response<Incoming>, NotSent> {
        let client = if over_h2c {
            &self.stream_client
        } else {
            &self.client
        };
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) => {
                metrics
                    .upstream_seconds
                    .get_or_create(&ModuleLabel {
                        module: module.name.to_string(),
                    })
                    .observe(started.elapsed().as_secs_f64());
                Ok(response)
            }
            Ok(Err(error)) => {
                match body.failure() {
                    Some(BodyFailure::TooLarge) => return Err(NotSent::BodyTooLarge),
                    Some(BodyFailure::Invalid) => return Err(NotSent::InvalidBody),
                    None => {}
                }
                count_error(metrics, module, "unavailable");
                tracing::warn!(
                    module = %module.name,
                    backend = %module.upstream.url,
                    reason = %root_cause(&error),
                    "backend unavailable: answered 502"
                );
                Err(NotSent::Refused(
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::BackendUnavailable,
                        format!(
                            "the `{}` backend is not reachable; retry, and check that it is running",
                            module.name
                        ),
                    )
                    .into_response(),
                ))
            }
            Err(_) => {
                count_error(metrics, module, "timeout");
                tracing::warn!(
                    module = %module.name,
                    backend = %module.upstream.url,
                    timeout = ?self.timeout,
                    "backend sent no response head in time: answered 504"
                );
                Err(NotSent::Refused(
                    ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        ErrorCode::BackendTimeout,
                        format!(
                            "the `{}` backend sent no response within {:?} (VX11_UPSTREAM_TIMEOUT)",
                            module.name, self.timeout
                        ),
                    )
                    .into_response(),
                ))
            }
        }
    }
}

fn count_error(metrics: &GatewayMetrics, module: &Module, kind: &'static str) {
    metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            module: module.name.to_string(),
            kind,
        })
        .inc();
}

/// The innermost cause (e.g. "Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
