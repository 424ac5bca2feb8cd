//! `/<module>/api/*`: the policy decision, then the request streamed to the module's
//! backend unchanged (method, path, query, body, the token as presented) and the response
//! streamed back.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use http_body_util::{LengthLimitError, Limited};
use serde_json::json;
use vx11_tokenset::service::{ApiError, drain_refused_body};

use crate::Gateway;
use crate::body::{OpenStream, ProxiedBody};
use crate::metrics::{ModuleLabel, UpstreamErrorLabels};
use crate::policy::Module;

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A routed module's request: proxied, or answered `OFF_BY_POLICY`.
pub async fn to_module(gateway: &Gateway, module: &Module, request: Request) -> Response {
    if module.on {
        proxy(gateway, module, request).await
    } else {
        off_by_policy(gateway, module)
    }
}

/// 404 for `/<name>/api/*` when no module `name` is routed.
pub fn unknown_module(gateway: &Gateway, path: &str) -> Response {
    let name = crate::routes::module_of(path).unwrap_or_default();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_module",
        format!(
            "no module `{name}`; this gateway routes: {}",
            gateway.modules.names().join(", ")
        ),
    )
    .into_response()
}

fn off_by_policy(gateway: &Gateway, module: &Module) -> Response {
    Json(json!({
        "status": "OFF_BY_POLICY",
        "module": &*module.name,
        "mode": gateway.mode.as_str(),
        "readonly": true,
    }))
    .into_response()
}

async fn proxy(gateway: &Gateway, module: &Module, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(length) = content_length(&parts.headers)
        && length > gateway.max_body_bytes
    {
        if !expects_continue(&parts.headers) {
            drain_refused_body(body.into_data_stream(), 0).await;
        }
        return too_large(gateway.max_body_bytes);
    }
    let uri = match module.upstream.uri_for(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request path cannot be forwarded",
            )
            .into_response();
        }
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = parts.headers.remove(header::HOST) {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(ip) = peer {
        append_forwarded_for(&mut parts.headers, ip);
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions.clear();
    let upstream_request = hyper::Request::from_parts(
        parts,
        Body::new(Limited::new(body, gateway.max_body_bytes as usize)),
    );

    let client = if module.streams_over_h2c && accepts_event_stream(upstream_request.headers()) {
        &gateway.stream_client
    } else {
        &gateway.client
    };
    let started = Instant::now();
    let sent =
        tokio::time::timeout(gateway.upstream_timeout, client.request(upstream_request)).await;
    let metrics = &gateway.metrics;
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            if caused_by_length_limit(&error) {
                return too_large(gateway.max_body_bytes);
            }
            count_error(gateway, module, "unavailable");
            let reason = root_cause(&error);
            tracing::warn!(module = %module.name, backend = %module.upstream.url, %reason, "backend unavailable");
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "backend_unavailable",
                format!(
                    "the `{}` backend at {} is not reachable ({reason}); retry, and check that it is running",
                    module.name, module.upstream.url
                ),
            )
            .into_response();
        }
        Err(_) => {
            count_error(gateway, module, "timeout");
            return ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "backend_timeout",
                format!(
                    "the `{}` backend at {} sent no response within {:?} (VX11_UPSTREAM_TIMEOUT)",
                    module.name, module.upstream.url, gateway.upstream_timeout
                ),
            )
            .into_response();
        }
    };
    metrics
        .upstream_seconds
        .get_or_create(&ModuleLabel {
            module: module.name.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());

    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The client is spoken to in HTTP/1.1, whatever the backend connection was.
    parts.version = Version::HTTP_11;
    let stream = is_event_stream(&parts.headers).then(|| {
        OpenStream::new(
            metrics.open_streams.clone(),
            // A child token per stream: its polls lock its own node, not the shared one.
            gateway.shutdown.token().child_token().cancelled_owned(),
        )
    });
    let body = ProxiedBody::new(incoming, gateway.upstream_idle_timeout, stream);
    Response::from_parts(parts, Body::new(body))
}

fn count_error(gateway: &Gateway, module: &Module, kind: &'static str) {
    gateway
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            module: module.name.to_string(),
            kind,
        })
        .inc();
}

fn too_large(limit: u64) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request bodies are limited to {limit} bytes (VX11_MAX_BODY_BYTES)"),
    )
    .into_response()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The client asks for an event stream (EventSource always sends this).
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Removes hop-by-hop headers, those the `Connection` header names included.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn caused_by_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The innermost cause (e.g. "Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_tokens_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert(
            "x-vx11-token",
            HeaderValue::from_static("vx11-operator-test-token"),
        );
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(h.contains_key("x-vx11-token") && h.contains_key("authorization"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        append_forwarded_for(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    }
}
