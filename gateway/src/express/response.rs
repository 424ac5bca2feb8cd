//! A backend's response head as the express lane reads it: taken when it is the plain case
//! (HTTP/1.1, a final status, framed by `Content-Length` or chunked, or without a body by
//! its status; not an event stream; no URL to rewrite; `Connection` naming nothing but
//! `keep-alive` or `close`), and written for the client as hyper's server writes what the
//! full path hands it: the status's canonical reason, the headers in order with names in
//! lower case and hop-by-hop ones dropped, then `connection: close` when the client asked,
//! `transfer-encoding: chunked` for a chunked body, the length of an empty body where one
//! may be, and `date` when the backend sent none.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;

use crate::proxy::HOP_BY_HOP;

use super::request::{STACK_HEADERS, header_slots, push_field, push_lower};

/// How the body after the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// A response head the lane passes on.
#[derive(Debug)]
pub struct Head {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The backend keeps the connection for another request.
    pub reusable: bool,
}

/// What a look at the backend's bytes found.
#[derive(Debug)]
pub enum Look {
    Partial,
    /// The client's head is in the given buffer.
    Plain(Head),
    /// Not the plain case: the request goes the full path.
    Other,
}

/// Looks at the response head at the start of `buf`; when the lane takes it, writes the
/// client's head to `out` (appended). `close`: the client's connection closes after it.
pub fn look(
    buf: &[u8],
    max_headers: usize,
    rewrite_redirects: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Look {
    let mut on_stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let storage = header_slots(&mut on_stack, &mut on_heap, max_headers);
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        storage,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Look::Partial,
        Err(_) => return Look::Other,
    };
    match head(&response, len, rewrite_redirects, close, out) {
        Some(head) => Look::Plain(head),
        None => Look::Other,
    }
}

fn head(
    response: &httparse::Response<'_, '_>,
    len: usize,
    rewrite_redirects: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Option<Head> {
    if response.version? != 1 {
        return None;
    }
    let status = StatusCode::from_u16(response.code?).ok()?;
    if status.is_informational() {
        return None;
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut length = None;
    let mut chunked = false;
    let mut reusable = true;
    let mut has_date = false;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok()?.trim();
            if length.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            length = Some(value.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return None;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in std::str::from_utf8(header.value).ok()?.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    reusable = false;
                } else if !token.eq_ignore_ascii_case("keep-alive") && !token.is_empty() {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            if header
                .value
                .trim_ascii_start()
                .starts_with(b"text/event-stream")
            {
                return None;
            }
        } else if name.eq_ignore_ascii_case("date") {
            has_date = true;
        } else if rewrite_redirects
            && (name.eq_ignore_ascii_case("location") || name.eq_ignore_ascii_case("refresh"))
        {
            return None;
        }
    }
    let framing = match (chunked, length) {
        (true, _) if bodiless => return None,
        (true, _) => Framing::Chunked,
        (false, _) if bodiless => Framing::Length(0),
        (false, Some(length)) => Framing::Length(length),
        // Read to the end of the connection: the full path's.
        (false, None) => return None,
    };

    push_status_line(out, status);
    // hyper writes no length of its own for a body it sees empty: a status without a body
    // gets none, any other `content-length: 0` after the other fields.
    let empty = framing == Framing::Length(0);
    for header in response.headers.iter() {
        let name = header.name;
        // Never passed on: the full path's list (RFC 9110 §7.6.1).
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || ((chunked || empty) && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        push_lower(out, name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        push_field(out, b"connection", b"close");
    }
    if chunked {
        push_field(out, b"transfer-encoding", b"chunked");
    }
    if empty && !bodiless {
        push_field(out, b"content-length", b"0");
    }
    if !has_date {
        push_date_field(out);
    }
    out.extend_from_slice(b"\r\n");
    Some(Head {
        len,
        status: status.as_u16(),
        framing,
        reusable,
    })
}

/// `HTTP/1.1 <code> <reason>`, with the canonical reason (hyper's `<none>` for a code without
/// one).
pub(super) fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `date: <now>`, the field hyper adds to an answer without one.
pub(super) fn push_date_field(out: &mut Vec<u8>) {
    out.extend_from_slice(b"date: ");
    push_date(out);
    out.extend_from_slice(b"\r\n");
}

/// The IMF-fixdate of now, formatted once a second per thread (as hyper caches it).
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look_at(raw: &str, close: bool) -> (Look, String) {
        let mut out = Vec::new();
        let look = look(raw.as_bytes(), 100, true, close, &mut out);
        (look, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_plain_head_is_written_as_hyper_writes_it() {
        let (look, out) = look_at(
            "HTTP/1.1 200 Fine\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\ndate: Sun, 06 Dec 2026 23:00:00 GMT\r\n\r\nok",
            true,
        );
        let Look::Plain(head) = look else {
            panic!("not taken: {look:?}")
        };
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.reusable);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: Sun, 06 Dec 2026 23:00:00 GMT\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_chunked_head_loses_its_length_and_gains_a_date() {
        let (look, out) = look_at(
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nConnection: close\r\n\r\n",
            false,
        );
        let Look::Plain(head) = look else {
            panic!("not taken: {look:?}")
        };
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.reusable);
        assert!(
            out.starts_with("HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\ndate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\n\r\n"), "{out}");
    }

    #[test]
    fn heads_the_full_path_must_see_are_left_to_it() {
        for raw in [
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 302 Found\r\nLocation: http://backend:8011/x\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            let (look, _) = look_at(raw, false);
            assert!(matches!(look, Look::Other), "{raw:?}: {look:?}");
        }
        assert!(matches!(
            look_at("HTTP/1.1 200 OK\r\nContent-Le", false).0,
            Look::Partial
        ));
    }
}
