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

use std::sync::Arc;

use http_body::Body as _;

use crate::already_sent::Sent;
use crate::body::BoxError;
use crate::client_body::{BodyFailure, BodyOutcome};
use crate::connect::BackendConnector;
use crate::h2c_fallback::{H2cFallbacks, answers_http1, is_not_h2c};
use crate::metrics::{GatewayMetrics, ModuleLabel, UpstreamErrorLabels};
use crate::modules::Module;
use crate::proxy_settings::ProxySettings;
use crate::response_limits::{ResponseLimits, is_response_too_large};

pub type UpstreamClient = Client<BackendConnector, Body>;

/// The read buffer a backend connection starts with (hyper's smallest): the largest
/// response head a backend may send is `VX11_MAX_RESPONSE_HEADER_BYTES`
/// ([`crate::proxy_settings`], default 16 KiB), which is also what the buffer may grow to.
/// hyper's own default lets it grow to ~400 KiB after one large read (an SSE replay) and
/// keeps that size for the life of the connection; at 8 KiB an open event stream over
/// HTTP/1.1 cost ~13 KiB less RSS than at hyper's default (measured with `vx11-bench sse`),
/// and the 16 KiB default allows up to 8 KiB more per such connection once it has read a
/// large frame.
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

/// A pooled HTTP/1.1 client with keep-alive to the backends; response heads up to
/// `max_head_bytes` and `max_headers` fields.
pub fn upstream_client(
    connect_timeout: Duration,
    response_timeout: Duration,
    max_head_bytes: usize,
    max_headers: usize,
) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4096)
        .http1_max_buf_size(max_head_bytes.max(UPSTREAM_READ_BUFFER))
        .http1_max_headers(max_headers)
        .build(BackendConnector::new(connect_timeout, response_timeout))
}

/// An HTTP/2 (h2c, prior knowledge) client: every event stream of a worker on one
/// connection per backend, ~20 KiB less per stream than an HTTP/1.1 connection each
/// (`docs/BENCHMARKS.md`). Pings find a backend that vanished without closing.
pub fn stream_client(
    connect_timeout: Duration,
    response_timeout: Duration,
    stream_window: u32,
    max_head_bytes: u32,
) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .http2_max_header_list_size(max_head_bytes)
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
    /// How both clients connect (for the express lane's own connections).
    pub connector: BackendConnector,
    /// `VX11_MAX_RESPONSE_HEADER_BYTES`, `VX11_MAX_RESPONSE_HEADERS`, for the answer.
    limits: ResponseLimits,
    /// Backends that do not speak h2c (shared by all workers).
    h2c_fallbacks: Arc<H2cFallbacks>,
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
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        stream_buffer_bytes: usize,
        proxy: &ProxySettings,
    ) -> Self {
        let limits = ResponseLimits {
            header_bytes: proxy.max_response_header_bytes,
            headers: proxy.max_response_headers,
        };
        Self {
            client: upstream_client(
                connect_timeout,
                timeout,
                limits.header_bytes,
                limits.headers,
            ),
            stream_client: stream_client(
                connect_timeout,
                timeout,
                h2c_stream_window(stream_buffer_bytes),
                u32::try_from(limits.header_bytes).unwrap_or(u32::MAX),
            ),
            timeout,
            connector: BackendConnector::new(connect_timeout, timeout),
            limits,
            h2c_fallbacks: proxy.h2c_fallbacks.clone(),
        }
    }

    /// `module`'s event streams go over h2c: it is in `VX11_H2C_STREAMS` and its backend
    /// was not found to speak only HTTP/1.1.
    pub fn streams_over_h2c(&self, module: &Module) -> bool {
        module.streams_over_h2c && !self.h2c_fallbacks.falls_back(&module.upstream.url)
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
        already: Option<Sent>,
    ) -> Result<hyper::Response<Incoming>, NotSent> {
        let started = Instant::now();
        if let Some(sent) = already.filter(|_| !over_h2c) {
            let read = sent.response(
                request,
                self.limits.header_bytes.max(UPSTREAM_READ_BUFFER),
                self.limits.headers,
            );
            let outcome = tokio::time::timeout(self.timeout, read)
                .await
                .map(|answered| answered.map_err(BoxError::from));
            return self.answered(module, body, metrics, started, outcome);
        }
        let mut request = request;
        let mut over_h2c = over_h2c;
        let outcome = loop {
            // A request without a body can be sent again over HTTP/1.1 if h2c fails.
            let replay = (over_h2c && request.body().is_end_stream()).then(|| {
                let mut copy = hyper::Request::new(Body::empty());
                *copy.method_mut() = request.method().clone();
                *copy.uri_mut() = request.uri().clone();
                *copy.headers_mut() = request.headers().clone();
                copy
            });
            let client = if over_h2c {
                &self.stream_client
            } else {
                &self.client
            };
            let outcome = tokio::time::timeout(
                self.timeout.saturating_sub(started.elapsed()),
                client.request(request),
            )
            .await;
            match outcome {
                Ok(Err(error))
                    if over_h2c
                        && !is_response_too_large(&error)
                        && (is_not_h2c(&error)
                            || answers_http1(module.upstream.authority().as_str()).await) =>
                {
                    if self.h2c_fallbacks.remember(&module.upstream.url) {
                        tracing::warn!(
                            module = %module.name,
                            backend = %module.upstream.url,
                            "the backend does not speak h2c (HTTP/2 without TLS): its event streams go over HTTP/1.1 from now on; remove the module from VX11_H2C_STREAMS to say so"
                        );
                    }
                    match replay {
                        Some(replay) => {
                            request = replay;
                            over_h2c = false;
                        }
                        None => break Ok(Err(error)),
                    }
                }
                other => break other,
            }
        };
        let outcome = outcome.map(|answered| answered.map_err(BoxError::from));
        self.answered(module, body, metrics, started, outcome)
    }

    /// What became of a request sent at `started`: the response, or the answer for the
    /// client when there is none (counted and logged).
    // `send`'s result, handed on at once (the answer is a response, as large as it is).
    #[allow(clippy::result_large_err)]
    fn answered(
        &self,
        module: &Module,
        body: &BodyOutcome,
        metrics: &GatewayMetrics,
        started: Instant,
        outcome: Result<Result<hyper::Response<Incoming>, BoxError>, tokio::time::error::Elapsed>,
    ) -> Result<hyper::Response<Incoming>, NotSent> {
        match outcome {
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
                if is_response_too_large(&*error) {
                    count_error(metrics, module, "response_too_large");
                    tracing::warn!(
                        module = %module.name,
                        backend = %module.upstream.url,
                        max_response_header_bytes = self.limits.header_bytes,
                        max_response_headers = self.limits.headers,
                        "backend's response head is over the limits: answered 502"
                    );
                    return Err(NotSent::Refused(self.limits.too_large(module)));
                }
                count_error(metrics, module, "unavailable");
                tracing::warn!(
                    module = %module.name,
                    backend = %module.upstream.url,
                    reason = %root_cause(&*error),
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
            Err(_) => Err(NotSent::Refused(self.timed_out(module, metrics))),
        }
    }

    /// The backend sent no response head within `VX11_UPSTREAM_TIMEOUT`: counted, logged,
    /// and the answer (504).
    pub fn timed_out(&self, module: &Module, metrics: &GatewayMetrics) -> Response {
        count_error(metrics, module, "timeout");
        tracing::warn!(
            module = %module.name,
            backend = %module.upstream.url,
            timeout = ?self.timeout,
            "backend sent no response head in time: answered 504"
        );
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::BackendTimeout,
            format!(
                "the `{}` backend sent no response within {:?} (VX11_UPSTREAM_TIMEOUT)",
                module.name, self.timeout
            ),
        )
        .into_response()
    }

    /// `VX11_MAX_RESPONSE_HEADER_BYTES` and `VX11_MAX_RESPONSE_HEADERS`.
    pub fn limits(&self) -> ResponseLimits {
        self.limits
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
