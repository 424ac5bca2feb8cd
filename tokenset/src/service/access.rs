//! The token check as middleware, and the JSON access log with request metrics.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::access_line::{AccessLine, access_log_enabled};
use super::api_error::ErrorCode;
use super::{Authenticated, authenticate};
use crate::{TokenStore, redact_uri};

/// Request counters shared by the access log.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    auth_failures: Family<FailureLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

impl HttpMetrics {
    /// Registers `<prefix>_requests_total{route,status}` and
    /// `<prefix>_auth_failures_total{reason}`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Arc<Self> {
        let metrics = Arc::new(Self::default());
        registry.register(
            format!("{prefix}_requests"),
            "HTTP requests answered, by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            format!("{prefix}_auth_failures"),
            "Requests refused by the token check, by reason",
            metrics.auth_failures.clone(),
        );
        metrics
    }
}

/// One request as the access log and the request metrics see it.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub started: Instant,
    pub method: &'a axum::http::Method,
    pub uri: &'a axum::http::Uri,
    /// The route label: a matched path or a module's `/<name>/api/*`.
    pub route: Cow<'static, str>,
    pub response: &'a Response,
}

impl HttpMetrics {
    /// Counts the request (and an authentication failure) and writes its access line
    /// (token query parameters redacted, the token's fingerprint and name when one passed).
    pub fn record(&self, request: RequestRecord<'_>) {
        let status = request.response.status().as_u16();
        if let Some(ErrorCode(code)) = request.response.extensions().get::<ErrorCode>()
            && (status == 401 || code == &"malformed_token")
        {
            self.auth_failures
                .get_or_create(&FailureLabels { reason: code })
                .inc();
        }
        if access_log_enabled() {
            let who = request.response.extensions().get::<Authenticated>();
            AccessLine {
                method: request.method.as_str(),
                uri: &redact_uri(request.uri),
                route: &request.route,
                status,
                latency_ms: request.started.elapsed().as_secs_f64() * 1000.0,
                token: who.map(|a| (&a.fingerprint, &*a.name)),
            }
            .write_to_stderr();
        }
        self.requests
            .get_or_create(&RequestLabels {
                route: request.route,
                status,
            })
            .inc();
    }
}

/// Logs one JSON line per request and counts it ([`HttpMetrics::record`]).
pub async fn access_log(
    State(metrics): State<Arc<HttpMetrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let route = match &matched {
        Some(path) => Cow::Owned(path.as_str().to_owned()),
        None => Cow::Borrowed("unmatched"),
    };
    metrics.record(RequestRecord {
        started,
        method: &method,
        uri: &uri,
        route,
        response: &response,
    });
    response
}

/// Refuses requests without a valid token; passes the rest on with [`Authenticated`] in
/// the request's extensions (and copies it onto the response, for the access log).
pub async fn require_token(
    State(store): State<Arc<TokenStore>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&store, request.headers(), request.uri().query()) {
        Ok(who) => {
            request.extensions_mut().insert(who.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(who);
            response
        }
        Err(error) => error.into_response(),
    }
}
