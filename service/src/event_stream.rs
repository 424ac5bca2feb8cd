//! The response headers of every `text/event-stream` answer, the backend's streams and the
//! gateway's outage stream alike.

use http::header::{self, HeaderMap, HeaderValue};

/// `Content-Type: text/event-stream`, `Cache-Control: no-cache`, and `X-Accel-Buffering: no`
/// so that proxies in front (nginx and the like) pass events on at once.
pub fn event_stream_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers
}
