//! WebSocket through the gateway (RFC 6455, the HTTP/1.1 upgrade): a `GET` to
//! `/<module>/api/*` with `Connection: upgrade` and `Upgrade: websocket` is checked like any
//! other request (the token in a header or `?token=`, which is what browsers can send),
//! takes a place among the open streams, and goes to the backend with its upgrade headers
//! and `Sec-WebSocket-*` kept. A backend that answers 101 gets a tunnel to the client
//! ([`crate::tunnel`]), spawned here and holding, for as long as it lives, its stream slot,
//! its connection's place under `VX11_MAX_CONNECTIONS`, and the open-tunnels gauge. Any
//! other answer goes to the client as it came.
//!
//! A tunnel ends when either side closes, when idle, on a frame over the limit, on
//! shutdown, and when its token stops being valid (removed from the set or expired), as the
//! operator backend's event streams do.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, Version};
use axum::response::Response;
use chrono::Utc;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use vx11_service::{Authenticated, ConnectionPlace, StreamSlot};
use vx11_tokenset::{TokenDigest, TokenStore, Verdict};

use crate::gateway::Gateway;
use crate::metrics::TunnelEndLabel;
use crate::modules::Module;
use crate::tunnel::{self, End, TunnelLimits};

/// Wake at least this often while waiting for a far expiry of a tunnel's token (a
/// wall-clock jump is noticed, a date far ahead never overflows the timer).
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(60);

/// What a WebSocket upgrade request keeps past the hop-by-hop strip.
#[derive(Debug)]
pub struct Upgrade {
    client: OnUpgrade,
    place: Option<ConnectionPlace>,
    /// `Sec-WebSocket-*`, as the client sent them.
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// `Some` for a WebSocket upgrade (HTTP/1.1 `GET`, `Connection: upgrade`,
/// `Upgrade: websocket`): what the tunnel needs of the client's connection, taken from
/// `parts`.
pub fn take_upgrade(parts: &mut Parts) -> Option<Upgrade> {
    if parts.method != Method::GET
        || parts.version != Version::HTTP_11
        || !lists(&parts.headers, header::CONNECTION, "upgrade")
        || !lists(&parts.headers, header::UPGRADE, "websocket")
    {
        return None;
    }
    let client = parts.extensions.remove::<OnUpgrade>()?;
    Some(Upgrade {
        client,
        place: parts.extensions.remove::<ConnectionPlace>(),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("sec-websocket-"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    })
}

impl Upgrade {
    /// Puts back, after the hop-by-hop strip, what the backend needs to upgrade.
    pub fn restore_headers(&self, headers: &mut HeaderMap) {
        set_upgrade_pair(headers);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn set_upgrade_pair(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Whether a `name` header lists `token` (case-insensitive, comma-separated).
fn lists(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// The backend said 101 (`response`, its hop-by-hop headers already dropped): the client is
/// answered 101 and the tunnel between them starts.
pub fn switch(
    gateway: &Gateway,
    module: &Module,
    who: &Authenticated,
    upgrade: Upgrade,
    slot: Option<StreamSlot>,
    mut response: hyper::Response<Incoming>,
) -> Response {
    let backend = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    parts.extensions.clear();
    set_upgrade_pair(&mut parts.headers);
    let tunnel = Tunnel {
        limits: gateway.websocket,
        shutdown: gateway.shutdown.token().child_token(),
        store: gateway.store.clone(),
        digest: who.digest,
        module: module.name.clone(),
        token_name: who.name.clone(),
        fingerprint: who.fingerprint.to_string(),
        metrics: gateway.metrics.clone(),
        _slot: slot,
        _place: upgrade.place,
        _open: OpenTunnel::count(&gateway.metrics.open_tunnels),
    };
    tokio::spawn(tunnel.run(upgrade.client, backend));
    Response::from_parts(parts, Body::empty())
}

/// One open tunnel, and what it holds until it ends.
struct Tunnel {
    limits: TunnelLimits,
    shutdown: tokio_util::sync::CancellationToken,
    store: Arc<TokenStore>,
    digest: TokenDigest,
    module: Arc<str>,
    token_name: Arc<str>,
    fingerprint: String,
    metrics: Arc<crate::metrics::GatewayMetrics>,
    _slot: Option<StreamSlot>,
    _place: Option<ConnectionPlace>,
    _open: OpenTunnel,
}

impl Tunnel {
    async fn run(self, client: OnUpgrade, backend: OnUpgrade) {
        let end = match tokio::join!(client, backend) {
            (Ok(client), Ok(backend)) => {
                let stop = async {
                    tokio::select! {
                        () = self.shutdown.cancelled() => End::Shutdown,
                        () = until_invalid(&self.store, &self.digest) => End::TokenRevoked,
                    }
                };
                tunnel::run(
                    TokioIo::new(client),
                    TokioIo::new(backend),
                    self.limits,
                    stop,
                )
                .await
            }
            _ => End::Error,
        };
        self.metrics
            .ended_tunnels
            .get_or_create(&TunnelEndLabel {
                reason: end.as_str(),
            })
            .inc();
        tracing::info!(
            module = %self.module,
            token = %self.fingerprint,
            token_name = %self.token_name,
            reason = end.as_str(),
            "websocket tunnel ended"
        );
    }
}

/// Resolves when the token of `digest` is no longer accepted: checked again whenever the
/// token set changes and when the token's entry expires.
async fn until_invalid(store: &TokenStore, digest: &TokenDigest) {
    let mut changes = store.subscribe();
    let mut set_gone = false;
    loop {
        let wait = match store.snapshot().set.check_digest(digest, Utc::now()) {
            Verdict::Accepted(entry) => entry.expires_at.map(|at| {
                (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_EXPIRY_WAIT)
            }),
            _ => return,
        };
        let expiry = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed(), if !set_gone => set_gone = changed.is_err(),
            () = expiry => {}
        }
    }
}

/// One tunnel in the open-tunnels gauge, for as long as it lives.
struct OpenTunnel(Gauge);

impl OpenTunnel {
    fn count(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: axum::http::request::Builder) -> Parts {
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(hyper::upgrade::on(hyper::Request::new(
                http_body_util::Empty::<bytes::Bytes>::new(),
            )));
        parts
    }

    #[test]
    fn only_an_http11_get_asking_for_websocket_is_an_upgrade() {
        let upgrade = || {
            axum::http::Request::get("/operator/api/ws")
                .header("connection", "keep-alive, Upgrade")
                .header("upgrade", "WebSocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        };
        let mut ok = parts(upgrade());
        let taken = take_upgrade(&mut ok).unwrap();
        assert_eq!(taken.headers.len(), 1);
        let mut headers = HeaderMap::new();
        taken.restore_headers(&mut headers);
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
        assert!(headers.contains_key("sec-websocket-key"));

        assert!(take_upgrade(&mut parts(upgrade().method("POST"))).is_none());
        assert!(take_upgrade(&mut parts(upgrade().version(Version::HTTP_10))).is_none());
        assert!(
            take_upgrade(&mut parts(
                axum::http::Request::get("/x")
                    .header("connection", "upgrade")
                    .header("upgrade", "h2c")
            ))
            .is_none()
        );
    }
}
