//! The `text/event-stream` wire format, written once per event rather than once per stream:
//! an event's frame is a [`Bytes`] every stream sends as it is (a reference count, no copy).
//! The bytes are those axum's `Sse` writes: `id:`, `event:`, then the data with each line
//! break starting a new `data:` line, then a blank line.

use axum::body::Bytes;

/// The comment sent on a quiet stream.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

/// One event's frame. `id` is `None` for events outside the history (`auth`).
pub fn frame(id: Option<u64>, event: &str, data: &str) -> Bytes {
    debug_assert!(!event.contains(['\r', '\n']), "an event name is one line");
    let mut frame = Vec::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id.to_string().as_bytes());
        frame.push(b'\n');
    }
    frame.extend_from_slice(b"event: ");
    frame.extend_from_slice(event.as_bytes());
    frame.push(b'\n');
    if !data.is_empty() {
        frame.extend_from_slice(b"data: ");
        for byte in data.bytes() {
            frame.push(byte);
            if byte == b'\n' || byte == b'\r' {
                frame.extend_from_slice(b"data: ");
            }
        }
        frame.push(b'\n');
    }
    frame.push(b'\n');
    frame.into()
}

/// The length of [`frame`]`(id, event, data)`, without building it (to refuse an event
/// over the limit before any copy of it is made).
pub fn frame_len(id: Option<u64>, event: &str, data: &str) -> usize {
    let id_line = id.map_or(0, |id| "id: \n".len() + decimal_digits(id));
    let event_line = "event: \n".len() + event.len();
    let data_lines = if data.is_empty() {
        0
    } else {
        let breaks = data.bytes().filter(|&b| b == b'\n' || b == b'\r').count();
        "data: \n".len() + data.len() + breaks * "data: ".len()
    };
    id_line + event_line + data_lines + "\n".len()
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::response::IntoResponse;
    use std::time::Duration;

    use axum::response::sse::{Event, KeepAlive, Sse};
    use http_body_util::BodyExt;

    use super::*;

    /// What axum's `Sse` writes for the same event.
    async fn axum_frame(id: Option<u64>, event: &str, data: &str) -> Bytes {
        let mut sse = Event::default();
        if let Some(id) = id {
            sse = sse.id(id.to_string());
        }
        let sse = sse.event(event).data(data);
        let stream = futures_util::stream::iter([Ok::<_, Infallible>(sse)]);
        let body = Sse::new(stream).into_response().into_body();
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn frames_are_the_bytes_axum_writes() {
        for (id, event, data) in [
            (Some(1_764_000_000_000), "chat", r#"{"message":"hi"}"#),
            (None, "auth", r#"{"error":"token_revoked"}"#),
            (Some(7), "chat", "one\ntwo\r\nthree\rfour\n"),
            (Some(8), "tokens", ""),
        ] {
            assert_eq!(
                frame(id, event, data),
                axum_frame(id, event, data).await,
                "{event} {data:?}"
            );
        }
        for (id, event, data) in [
            (Some(0), "chat", "x"),
            (Some(9), "chat", ""),
            (Some(10), "tokens", "a\r\nb\rc\n"),
            (Some(u64::MAX), "chat", "{}"),
            (None, "auth", "{}"),
        ] {
            assert_eq!(frame_len(id, event, data), frame(id, event, data).len());
        }
        assert_eq!(
            frame(Some(42), "chat", "a\nb"),
            "id: 42\nevent: chat\ndata: a\ndata: b\n\n"
        );
    }

    #[tokio::test]
    async fn the_keep_alive_is_the_comment_axum_writes() {
        let keep_alive = KeepAlive::new()
            .interval(Duration::from_millis(1))
            .text("keep-alive");
        let quiet = futures_util::stream::pending::<Result<Event, Infallible>>();
        let mut body = Sse::new(quiet)
            .keep_alive(keep_alive)
            .into_response()
            .into_body();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), KEEP_ALIVE);
    }
}
