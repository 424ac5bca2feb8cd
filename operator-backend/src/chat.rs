//! `POST /operator/api/chat` `{"message": "…"}`: stores the message as a `chat` event and
//! answers its id.
//!
//! Two bounds: the message itself ([`MAX_MESSAGE_BYTES`] of UTF-8), and the event it makes
//! once encoded (`VX11_MAX_EVENT_BYTES`, 64 KiB by default). JSON escapes a control
//! character as six bytes (`\u0001`), so a message of 16 KiB can make a 98 KB event; such a
//! message is refused with 413 rather than stored.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use vx11_service::{
    ApiError, Authenticated, ErrorCode, content_length, drain_refused_body, expects_continue,
};

use crate::events::EventKind;
use crate::state::AppState;

/// The longest message, in bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The largest request body: room for a message of the longest length even if every
/// character of it is JSON-escaped (`\u0000` is six bytes for one).
pub const MAX_BODY_BYTES: usize = 6 * MAX_MESSAGE_BYTES + 1024;

pub async fn post_chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Authenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_content_type(&headers)?;
    let body = read_body(&headers, body).await?;
    let message = message_of(&body)?;
    let received_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let event = state
        .events
        .publish(
            EventKind::Chat,
            &json!({
                "message": message,
                "receivedAt": received_at,
                "from": {"name": &*caller.name, "fingerprint": caller.fingerprint.to_string()},
            }),
        )
        .map_err(|refused| {
            too_large(format!(
                "`message` ({} bytes) makes an event of {} bytes once encoded (JSON escapes \
                 control characters, quotes and backslashes); the limit is {} bytes \
                 (VX11_MAX_EVENT_BYTES); send a shorter message or fewer control characters",
                message.len(),
                refused.bytes,
                refused.limit
            ))
        })?;
    tracing::debug!(id = event.id, bytes = message.len(), token = %caller.fingerprint, "chat message stored");
    Ok(Json(json!({"id": event.id, "receivedAt": received_at})))
}

/// The body, if it is at most [`MAX_BODY_BYTES`].
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let body_too_large = || {
        too_large(format!(
            "the request body is over {MAX_BODY_BYTES} bytes; a message may be at most {MAX_MESSAGE_BYTES} bytes"
        ))
    };
    let declared = content_length(headers);
    if expects_continue(headers) && declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // Answered before the body is asked for, so the client never sends it.
        return Err(body_too_large());
    }
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                "the request body could not be read",
            )
        })?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            drain_refused_body(chunks, bytes.len() + chunk.len()).await;
            return Err(body_too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A body without a content type is read as JSON (curl-friendly); any other type than
/// JSON is refused.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the message as JSON, with Content-Type: application/json",
        ))
    }
}

/// The `message` of a `{"message": "…"}` body.
fn message_of(body: &[u8]) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!(
                "the body is not valid JSON ({} at line {}, column {}); send {{\"message\": \"…\"}}",
                classify(&error),
                error.line(),
                error.column()
            ),
        )
    })?;
    let message = match value.get("message") {
        None | Some(Value::Null) => {
            return Err(unprocessable(
                ErrorCode::MissingMessage,
                "the body has no `message`; send {\"message\": \"…\"}",
            ));
        }
        Some(Value::String(message)) => message,
        Some(_) => {
            return Err(unprocessable(
                ErrorCode::InvalidMessage,
                "`message` must be a string",
            ));
        }
    };
    if message.trim().is_empty() {
        return Err(unprocessable(
            ErrorCode::EmptyMessage,
            "`message` is empty; send some text",
        ));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(too_large(format!(
            "`message` is {} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (16 KiB)",
            message.len()
        )));
    }
    Ok(message.clone())
}

fn classify(error: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match error.classify() {
        Category::Eof => "it ends too early",
        Category::Syntax => "syntax error",
        Category::Data | Category::Io => "unreadable data",
    }
}

fn unprocessable(code: ErrorCode, detail: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
}

fn too_large(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MessageTooLarge,
        detail,
    )
}
