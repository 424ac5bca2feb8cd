//! Reading the rest of an oversized request body before answering 413.

use std::time::Duration;

use axum::body::BodyDataStream;
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
