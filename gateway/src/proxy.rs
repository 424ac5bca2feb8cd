//! The third step of `/<module>/api/*`, for a module that is on: the request made ready for
//! the backend, unchanged in what matters (method, path, query, body, the token as
//! presented; hop-by-hop headers dropped, `X-Forwarded-*` added, the body limited), handed
//! to [`crate::upstream`], and the response head made ready for the client, its body
//! streamed back through [`crate::body`].

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use vx11_service::{ApiError, ErrorCode, content_length, drain_refused_body, expects_continue};

use crate::body::{OpenStream, ProxiedBody};
use crate::gateway::Gateway;
use crate::modules::Module;
use crate::upstream::NotSent;

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

/// Streams `request` to `module`'s backend and the response back.
pub async fn forward(gateway: &Gateway, module: &Module, request: Request) -> Response {
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
                ErrorCode::BadRequest,
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

    let over_h2c = module.streams_over_h2c && accepts_event_stream(upstream_request.headers());
    let metrics = &gateway.metrics;
    let response = match gateway
        .upstreams
        .send(module, upstream_request, over_h2c, metrics)
        .await
    {
        Ok(response) => response,
        Err(NotSent::BodyTooLarge) => return too_large(gateway.max_body_bytes),
        Err(NotSent::Refused(answer)) => return answer,
    };

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

fn too_large(limit: u64) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("request bodies are limited to {limit} bytes (VX11_MAX_BODY_BYTES)"),
    )
    .into_response()
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
