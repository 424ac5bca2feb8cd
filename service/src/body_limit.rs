//! Request bodies over a limit: the declared length, `Expect: 100-continue`, and reading
//! the rest of a refused body before answering 413.

use std::time::Duration;

use axum::body::BodyDataStream;
use axum::http::{HeaderMap, header};
use futures_util::StreamExt as _;

/// A body over the limit is still read (and dropped) up to this size, for this long,
/// before the 413 goes out.
pub const DRAIN_BYTES: usize = 8 * 1024 * 1024;
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what is left of a refused body, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]. A server that answers and closes while the client is still sending
/// resets the connection, and the client may never see the answer; past these bounds the
/// connection is closed anyway.
pub async fn drain_refused_body(mut chunks: BodyDataStream, already_read: usize) {
    let mut drained = already_read;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while drained <= DRAIN_BYTES
            && let Some(Ok(chunk)) = chunks.next().await
        {
            drained += chunk.len();
        }
    })
    .await;
}

/// The `Content-Length` a request declares, if it is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The client waits for `100 Continue` before it sends the body: a refusal sent now means
/// the body is never sent, so there is nothing to drain.
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
