//! Request heads the gateway refuses to pass on: an ambiguous `Host`, and a head larger than
//! the backend's HTTP/2 limit.
//!
//! Why the second matters: all of a worker's event streams to a module share one h2c
//! connection. A header block over the backend's `SETTINGS_MAX_HEADER_LIST_SIZE` that spans
//! several frames makes the backend's h2 end the whole connection (GOAWAY
//! `COMPRESSION_ERROR`), cutting every other client's stream on it. The gateway refuses such
//! a request itself (431), before it reaches the shared connection.

use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::http::{Method, Uri};

/// The backend's HTTP/2 header list limit: hyper's server default (16 KiB), which
/// vx11-operator-backend keeps. h2 refuses a list whose size reaches it. hyper's client does
/// not expose the value a backend advertises, so this is the limit assumed for every
/// backend reached over h2c.
pub const BACKEND_MAX_HEADER_LIST_SIZE: usize = 16 * 1024;

/// Per-field overhead HTTP/2 adds to a header list's size (RFC 9113 §6.5.2).
const FIELD_OVERHEAD: usize = 32;

/// More than one `Host`, or (absolute-form request target) a `Host` that is not the
/// target's authority: the backend and the gateway could take different hosts from it.
pub fn ambiguous_host(parts: &Parts) -> bool {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return true;
    }
    match (first, parts.uri.authority()) {
        (Some(host), Some(authority)) => !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes()),
        _ => false,
    }
}

/// The size HTTP/2 gives the header list of a request to `uri` with `headers`: for each
/// field, pseudo-fields (`:method`, `:scheme`, `:authority`, `:path`) included, its name's
/// and value's lengths plus 32 (RFC 9113 §6.5.2, as h2 counts it).
pub fn h2_header_list_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let pseudo = [
        (":method", method.as_str().len()),
        (":scheme", uri.scheme_str().map_or(0, str::len)),
        (
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path",
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        ),
    ];
    let pseudo: usize = pseudo
        .iter()
        .map(|(name, value)| name.len() + value + FIELD_OVERHEAD)
        .sum();
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum();
    pseudo + fields
}

/// The request is over what the backend's HTTP/2 accepts.
pub fn over_backend_h2_limit(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    h2_header_list_size(method, uri, headers) >= BACKEND_MAX_HEADER_LIST_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request};

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn two_hosts_or_a_host_other_than_the_target_are_ambiguous() {
        let one = Request::get("/x").header("host", "a").body(()).unwrap();
        assert!(!ambiguous_host(&parts(one)));
        let none = Request::get("/x").body(()).unwrap();
        assert!(!ambiguous_host(&parts(none)));
        let two = Request::get("/x")
            .header("host", "a")
            .header("host", "a")
            .body(())
            .unwrap();
        assert!(ambiguous_host(&parts(two)));
        let agreeing = Request::get("http://a:1/x")
            .header("host", "A:1")
            .body(())
            .unwrap();
        assert!(!ambiguous_host(&parts(agreeing)));
        let other = Request::get("http://a/x")
            .header("host", "b")
            .body(())
            .unwrap();
        assert!(ambiguous_host(&parts(other)));
    }

    #[test]
    fn the_size_counts_every_field_with_its_overhead_as_h2_does() {
        let uri: Uri = "http://b:8011/operator/api/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("text/event-stream"));
        // :method GET, :scheme http, :authority b:8011, :path /operator/api/x, accept.
        let expected = (7 + 3 + 32) + (7 + 4 + 32) + (10 + 6 + 32) + (5 + 15 + 32) + (6 + 17 + 32);
        assert_eq!(h2_header_list_size(&Method::GET, &uri, &headers), expected);

        // Many small fields: far under 16 KiB as bytes on the wire, over it for HTTP/2.
        let mut many = HeaderMap::new();
        for i in 0..500 {
            many.insert(
                axum::http::HeaderName::try_from(format!("x-{i}")).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert!(over_backend_h2_limit(&Method::GET, &uri, &many));
        assert!(!over_backend_h2_limit(&Method::GET, &uri, &headers));
    }
}
