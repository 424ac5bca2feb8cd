//! The token check and the access line with request metrics, each written once: called
//! inline by the gateway's hot path and as axum layers by everything else.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use vx11_tokenset::{TokenStore, redact_path_and_query, redact_uri};

use crate::access_line::{AccessLine, access_log_enabled};
use crate::{Authenticated, ErrorCode, authenticate};

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
        if let Some(&code) = request.response.extensions().get::<ErrorCode>()
            && (status == 401 || code == ErrorCode::MalformedToken)
        {
            self.auth_failures
                .get_or_create(&FailureLabels {
                    reason: code.as_str(),
                })
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

/// A request answered without an axum [`Response`] (the gateway's express lane): what the
/// access line and the request metrics take of it.
#[derive(Debug)]
pub struct AnsweredRecord<'a> {
    pub started: Instant,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub route: &'static str,
    pub status: u16,
    pub who: Option<&'a Authenticated>,
}

impl HttpMetrics {
    /// The counter of requests to `route` answered with `status` (for a caller that keeps
    /// it: [`HttpMetrics::record_answered`]).
    pub fn requests_of(&self, route: &'static str, status: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                route: Cow::Borrowed(route),
                status,
            })
            .clone()
    }

    /// [`HttpMetrics::record`] for a request the token check passed and that was answered
    /// outside axum: the same line, the same counts; `requests` is
    /// [`HttpMetrics::requests_of`] its route and status.
    pub fn record_answered(&self, answered: AnsweredRecord<'_>, requests: &Counter) {
        if access_log_enabled() {
            AccessLine {
                method: answered.method,
                uri: &redact_path_and_query(answered.path, answered.query),
                route: answered.route,
                status: answered.status,
                latency_ms: answered.started.elapsed().as_secs_f64() * 1000.0,
                token: answered.who.map(|a| (&a.fingerprint, &*a.name)),
            }
            .write_to_stderr();
        }
        requests.inc();
    }
}

/// The access line and request metrics of one request, around `answer`: the one place
/// both services log and count a request (the gateway calls it inline for
/// `/<module>/api/*`, [`access_log`] is the same as an axum layer).
pub async fn with_access_line<A, F>(
    metrics: &HttpMetrics,
    route: Cow<'static, str>,
    request: Request,
    answer: A,
) -> Response
where
    A: FnOnce(Request) -> F,
    F: Future<Output = Response>,
{
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = answer(request).await;
    metrics.record(RequestRecord {
        started,
        method: &method,
        uri: &uri,
        route,
        response: &response,
    });
    response
}

/// The token check of one request, around `answer`: refused requests are answered here;
/// `answer` gets the request and who passed, and the response carries [`Authenticated`] in
/// its extensions, for the access line. The one place both services check a token (the
/// gateway calls it inline, [`require_token`] is the same as an axum layer).
pub async fn with_token_check<A, F>(store: &TokenStore, request: Request, answer: A) -> Response
where
    A: FnOnce(Request, Authenticated) -> F,
    F: Future<Output = Response>,
{
    match authenticate(store, request.headers(), request.uri().query()) {
        Ok(who) => {
            let mut response = answer(request, who.clone()).await;
            response.extensions_mut().insert(who);
            response
        }
        Err(error) => error.into_response(),
    }
}

/// [`with_access_line`] as an axum layer; the route label is the matched path.
pub async fn access_log(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => Cow::Owned(path.as_str().to_owned()),
        None => Cow::Borrowed("unmatched"),
    };
    with_access_line(&metrics, route, request, |request| next.run(request)).await
}

/// [`with_token_check`] as an axum layer: handlers find [`Authenticated`] in the request's
/// extensions.
pub async fn require_token(
    State(store): State<Arc<TokenStore>>,
    request: Request,
    next: Next,
) -> Response {
    with_token_check(&store, request, |mut request, who| {
        request.extensions_mut().insert(who);
        next.run(request)
    })
    .await
}
