//! The third step of `/<module>/api/*`, for a module that is on: the request made ready for
//! the backend, unchanged in what matters (method, path, query, body, the token as
//! presented; hop-by-hop headers dropped, `TE: trailers` kept, `X-Forwarded-*` set, the
//! body limited), handed to [`crate::upstream`], and the response head made ready for the
//! client (hop-by-hop headers dropped, backend URLs in `Location`/`Refresh` rewritten:
//! [`crate::redirect`]), its body and trailers streamed back through [`crate::body`]. Refused here, before any backend hears of them:
//! an ambiguous `Host`, a path a backend could read as another ([`crate::safe_path`]), a
//! head over the backend's HTTP/2 limit ([`crate::head`]), and an event stream over the
//! stream caps.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use vx11_service::{
    ApiError, Authenticated, ClientScheme, ErrorCode, StreamRefusal, StreamSlot, content_length,
    drain_refused_body, expects_continue,
};

use crate::already_sent::AlreadySent;
use crate::body::{OpenStream, ProxiedBody, StreamParts};
use crate::client_body::ClientBody;
use crate::forwarded::{Seen, set_forwarded};
use crate::gateway::Gateway;
use crate::head::{BACKEND_MAX_HEADER_LIST_SIZE, ambiguous_host, over_backend_h2_limit};
use crate::metrics::RefusalLabel;
use crate::modules::Module;
use crate::outage;
use crate::redirect::rewrite_redirects;
use crate::safe_path;
use crate::upstream::NotSent;
use crate::websocket;

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1, and
/// the old `Proxy-Connection`; `Proxy-Authenticate`/`-Authorization` are for the proxy
/// in front). `TE` is dropped too, but for its `trailers`, which says the client takes
/// trailers: it is sent on, as hyper's HTTP/1.1 server and a backend's both need it to
/// send trailers. `Trailer` (the names of the trailer fields) is end-to-end and kept.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Streams `request` from `who` to `module`'s backend and the response back.
pub async fn forward(
    gateway: &Gateway,
    module: &Module,
    request: Request,
    who: &Authenticated,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(length) = content_length(&parts.headers)
        && length > gateway.max_body_bytes
    {
        if !expects_continue(&parts.headers) {
            drain_refused_body(body.into_data_stream(), 0).await;
        }
        return too_large(gateway.max_body_bytes);
    }
    if ambiguous_host(&parts) {
        return refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::AmbiguousHost,
            "send exactly one Host header (and, with an absolute request target, the same host)",
        );
    }
    if safe_path::is_unsafe(parts.uri.path()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsafePath,
            "the path has a dot-segment (`.`, `..`), an encoded slash or backslash, or a control character, possibly percent-encoded; send the path without them",
        );
    }
    let uri = match module.upstream.uri_for(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "the request path cannot be forwarded",
            );
        }
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let scheme = parts
        .extensions
        .get::<ClientScheme>()
        .copied()
        .unwrap_or_default();
    // The host as the client used it: `Host`, or an HTTP/2 request's `:authority`.
    let host = parts.headers.remove(header::HOST).or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let takes_trailers = te_has_trailers(&parts.headers);
    let upgrade = websocket::take_upgrade(&mut parts);
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = &upgrade {
        upgrade.restore_headers(&mut parts.headers);
    }
    if takes_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let seen = Seen {
        peer,
        scheme,
        host: host.as_ref(),
    };
    set_forwarded(&mut parts.headers, seen, &gateway.trusted_proxies);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    // The express lane sent it already: its response is read, not asked for again.
    let already = parts
        .extensions
        .remove::<AlreadySent>()
        .and_then(|sent| sent.take());
    parts.extensions.clear();

    let asks_for_stream = accepts_event_stream(&parts.headers) && upgrade.is_none();
    let over_h2c = asks_for_stream && gateway.upstreams.streams_over_h2c(module);
    if over_h2c && over_backend_h2_limit(&parts.method, &parts.uri, &parts.headers) {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!(
                "the request's headers are over the {BACKEND_MAX_HEADER_LIST_SIZE} bytes the backend takes (counted as HTTP/2 does: name, value and 32 bytes per field); send fewer or smaller headers"
            ),
        );
    }
    let mut slot = None;
    // A WebSocket tunnel counts as a stream.
    if asks_for_stream || upgrade.is_some() {
        match open_slot(gateway, who) {
            Ok(taken) => slot = Some(taken),
            Err(refused) => return refused.into_response(),
        }
    }
    let (body, outcome) = ClientBody::new(
        body,
        usize::try_from(gateway.max_body_bytes).unwrap_or(usize::MAX),
    );
    let upstream_request = hyper::Request::from_parts(parts, Body::new(body));

    let metrics = &gateway.metrics;
    let response = match gateway
        .upstreams
        .send(
            module,
            upstream_request,
            &outcome,
            over_h2c,
            metrics,
            already,
        )
        .await
    {
        Ok(response) => response,
        Err(NotSent::BodyTooLarge) => return too_large(gateway.max_body_bytes),
        Err(NotSent::InvalidBody) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                "the request body is not valid HTTP (bad chunk size or chunk terminator) or ended early; send it again, whole",
            );
        }
        // EventSource would give up for good on a 502/504: it gets a stream to retry.
        Err(NotSent::Refused(answer)) if asks_for_stream => {
            return outage::stream_answer(&module.name, answer, gateway.stream_retry).await;
        }
        Err(NotSent::Refused(answer)) => return answer,
    };

    let (mut parts, incoming) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // Read as chunked (or to the end) by hyper: a Content-Length next to it is wrong
        // and would cut the body for the client (RFC 9112 §6.3).
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut parts.headers);
    if gateway.rewrite_redirects
        && let Some(host) = &host
    {
        rewrite_redirects(
            &mut parts.headers,
            module.upstream.authority(),
            scheme,
            host,
        );
    }
    // The client is spoken to in HTTP/1.1, whatever the backend connection was.
    parts.version = Version::HTTP_11;
    if let Some(upgrade) = upgrade
        && parts.status == StatusCode::SWITCHING_PROTOCOLS
    {
        let response = hyper::Response::from_parts(parts, incoming);
        return websocket::switch(gateway, module, who, upgrade, slot, response);
    }
    let stream = if is_event_stream(&parts.headers) {
        // A stream the client did not announce takes its place now.
        let slot = match slot {
            Some(slot) => slot,
            None => match open_slot(gateway, who) {
                Ok(slot) => slot,
                Err(refused) => return refused.into_response(),
            },
        };
        Some(OpenStream::new(StreamParts {
            gauge: metrics.open_streams.clone(),
            // A child token per stream: its polls lock its own node, not the shared one.
            shutdown: gateway.shutdown.token().child_token().cancelled_owned(),
            slot: Some(slot),
            stall_after: gateway.streams.stall_timeout,
            stalled: metrics.stalled_streams.clone(),
            module: module.name.clone(),
            token: who.name.clone(),
        }))
    } else {
        None
    };
    let body = ProxiedBody::new(incoming, gateway.upstream_idle_timeout, stream);
    Response::from_parts(parts, Body::new(body))
}

/// A place among the open streams for one more of `who`'s, or why not (counted).
fn open_slot(gateway: &Gateway, who: &Authenticated) -> Result<StreamSlot, StreamRefusal> {
    gateway
        .stream_slots
        .try_open(&who.name)
        .inspect_err(|refusal| {
            let reason = match refusal {
                StreamRefusal::Full { .. } => ErrorCode::TooManyStreams,
                StreamRefusal::TokenFull { .. } => ErrorCode::TooManyStreamsForToken,
            };
            gateway
                .metrics
                .refused_streams
                .get_or_create(&RefusalLabel {
                    reason: reason.as_str(),
                })
                .inc();
        })
}

fn refuse(
    status: StatusCode,
    code: ErrorCode,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> Response {
    ApiError::new(status, code, detail).into_response()
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

/// `TE` lists `trailers`.
fn te_has_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_tokens_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("trailer", HeaderValue::from_static("x-checksum"));
        h.insert(
            "x-vx11-token",
            HeaderValue::from_static("vx11-operator-test-token"),
        );
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(h.contains_key("x-vx11-token") && h.contains_key("authorization"));
        assert!(h.contains_key("trailer"));
    }
}
