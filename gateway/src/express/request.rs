//! A client's request head as the express lane reads it: taken when it is the plain case
//! (a `GET` over HTTP/1.1 to a module that is on, without a body, with exactly one `Host`, a
//! safe path, a token that passes, none of the headers that ask more of a proxy), and then
//! written out for the backend as the full path would write it: the same headers in the
//! same order, names in lower case, hop-by-hop ones dropped, `X-Forwarded-*` set, the
//! backend's `Host` last. Anything else is left to the full path.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;

use axum::http::uri::PathAndQuery;
use vx11_service::{Authenticated, authenticate_carriers};
use vx11_tokenset::{Carriers, TOKEN_HEADER};

use crate::dispatch::module_of;
use crate::forwarded::PeerText;
use crate::gateway::Gateway;
use crate::modules::Module;
use crate::safe_path;

/// A request the lane answers.
#[derive(Debug)]
pub struct Plain {
    /// Bytes of the head in the connection's buffer.
    pub head_len: usize,
    pub module: Arc<Module>,
    pub who: Authenticated,
    /// The request target's path and query, in the buffer (for the access line).
    pub path: Range<usize>,
    pub query: Option<Range<usize>>,
    /// The client said `Connection: close`.
    pub close: bool,
}

/// What a look at the buffer's start found.
#[derive(Debug)]
pub enum Look {
    /// The head is not all there yet.
    Partial,
    /// The lane takes it; the backend's head is in the given buffer.
    Plain(Plain),
    /// The full path takes it (and the rest of the connection).
    Other,
}

/// What a connection says in every request it forwards.
#[derive(Debug)]
pub struct Forwarding {
    /// `X-Forwarded-For`: the peer's address.
    pub forwarded_for: PeerText,
    /// The peer is a trusted proxy (`VX11_TRUSTED_PROXIES`): its `X-Forwarded-*` are kept,
    /// by the full path.
    pub trusted: bool,
}

/// Request headers that hand the request to the full path: a body, hop-by-hop headers
/// other than `Connection: keep-alive|close`, an upgrade, an expectation.
const HANDED_OVER: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "te",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Header slots kept on the stack (8 KiB): as many as `VX11_MAX_HEADERS` and
/// `VX11_MAX_RESPONSE_HEADERS` allow by default (a test holds them to it). Past that, each
/// look allocates its slots.
pub(super) const STACK_HEADERS: usize = 256;

/// `max` header slots for httparse, on the stack when they fit (left uninitialised: httparse
/// writes each before it reads it).
pub(super) fn header_slots<'s, 'b>(
    on_stack: &'s mut [MaybeUninit<httparse::Header<'b>>; STACK_HEADERS],
    on_heap: &'s mut Vec<MaybeUninit<httparse::Header<'b>>>,
    max: usize,
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    if max <= STACK_HEADERS {
        &mut on_stack[..max]
    } else {
        on_heap.resize_with(max, MaybeUninit::uninit);
        &mut on_heap[..]
    }
}

/// Dropped from what the backend gets: set anew by the gateway.
const REPLACED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Looks at the head at the start of `buf`; when the lane takes it, writes the backend's
/// head to `upstream` (cleared first).
pub fn look(
    gateway: &Gateway,
    forwarding: &Forwarding,
    buf: &[u8],
    max_headers: usize,
    upstream: &mut Vec<u8>,
) -> Look {
    let mut on_stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let storage = header_slots(&mut on_stack, &mut on_heap, max_headers);
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Look::Partial,
        Err(_) => return Look::Other,
    };
    match take(gateway, forwarding, &request, buf, head_len, upstream) {
        Some(plain) => Look::Plain(plain),
        None => Look::Other,
    }
}

fn take(
    gateway: &Gateway,
    forwarding: &Forwarding,
    request: &httparse::Request<'_, '_>,
    buf: &[u8],
    head_len: usize,
    upstream: &mut Vec<u8>,
) -> Option<Plain> {
    if request.method? != "GET" || request.version? != 1 {
        return None;
    }
    let target = request.path?;
    if !target.starts_with('/') || target.contains('#') {
        return None;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if safe_path::is_unsafe(path) {
        return None;
    }
    let module = gateway.modules.get(module_of(path)?)?;
    if !module.on {
        return None;
    }
    let mut close = false;
    let mut host = None;
    let mut carriers = Carriers {
        query,
        ..Carriers::default()
    };
    for header in request.headers.iter() {
        let name = header.name;
        if HANDED_OVER.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return None;
        }
        if forwarding.trusted && REPLACED[1..].iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return None;
        }
        if name.eq_ignore_ascii_case("connection") {
            close |= connection_says_close(header.value)?;
        } else if name.eq_ignore_ascii_case("host") {
            if host.replace(header.value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("accept") {
            if contains(header.value, b"text/event-stream") {
                return None;
            }
        } else if name.eq_ignore_ascii_case(TOKEN_HEADER) {
            // The first one counts, as in a header map.
            carriers.token_header.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("authorization") {
            carriers.authorization.get_or_insert(header.value);
        }
    }
    let host = host?;
    let who = authenticate_carriers(&gateway.store, carriers).ok()?;
    // The backend's target is the client's; one the full path would refuse is left to it.
    PathAndQuery::try_from(target).ok()?;

    upstream.clear();
    upstream.extend_from_slice(b"GET ");
    upstream.extend_from_slice(target.as_bytes());
    upstream.extend_from_slice(b" HTTP/1.1\r\n");
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection")
            || REPLACED.iter().any(|r| name.eq_ignore_ascii_case(r))
        {
            continue;
        }
        push_lower(upstream, name.as_bytes());
        upstream.extend_from_slice(b": ");
        upstream.extend_from_slice(header.value);
        upstream.extend_from_slice(b"\r\n");
    }
    push_field(
        upstream,
        b"x-forwarded-for",
        forwarding.forwarded_for.as_bytes(),
    );
    push_field(upstream, b"x-forwarded-proto", b"http");
    push_field(upstream, b"x-forwarded-host", host);
    push_field(upstream, b"host", module.upstream.host_header().as_bytes());
    upstream.extend_from_slice(b"\r\n");

    let start = offset_in(buf, target.as_bytes())?;
    let path_end = start + path.len();
    Some(Plain {
        head_len,
        module: module.clone(),
        who,
        path: start..path_end,
        query: query.map(|q| path_end + 1..path_end + 1 + q.len()),
        close,
    })
}

/// `Connection` lists only `keep-alive` and `close` (anything else names headers to drop,
/// which the full path does): whether it says `close`.
fn connection_says_close(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in std::str::from_utf8(value).ok()?.split(',') {
        let token = token.trim();
        if token.eq_ignore_ascii_case("close") {
            close = true;
        } else if !token.eq_ignore_ascii_case("keep-alive") && !token.is_empty() {
            return None;
        }
    }
    Some(close)
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn push_lower(out: &mut Vec<u8>, name: &[u8]) {
    out.extend(name.iter().map(u8::to_ascii_lowercase));
}

pub(super) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where `part` (a slice of `whole`) starts in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::STACK_HEADERS;

    #[test]
    fn the_default_header_limits_fit_in_the_slots_on_the_stack() {
        let requests = vx11_service::ListenerLimits::default().max_headers;
        let responses = crate::proxy_settings::ProxySettings::default().max_response_headers;
        assert!(requests <= STACK_HEADERS, "{requests} request headers");
        assert!(responses <= STACK_HEADERS, "{responses} response headers");
    }
}
