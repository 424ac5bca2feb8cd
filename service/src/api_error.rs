//! JSON failures with a stable `error` code and a human `detail`.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The `error` field of every JSON failure (and of an event stream's closing `auth` event).
/// Clients match on these strings: they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 401: no token in the request.
    MissingToken,
    /// 401: a token that is not in the set (or not valid yet).
    InvalidToken,
    /// 401 (or a stream's last event): the token's `expiresAt` passed.
    ExpiredToken,
    /// 400: a token that cannot be read (bad percent-encoding, not printable ASCII).
    MalformedToken,
    /// A stream's last event: its token left the set.
    TokenRevoked,
    /// 404: no such route.
    NotFound,
    /// 404: `/<module>/api/*` for a module the gateway does not route.
    UnknownModule,
    /// 405.
    MethodNotAllowed,
    /// 400: a request the gateway cannot forward.
    BadRequest,
    /// 413 at the gateway: the body is over `VX11_MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// 502: the backend did not answer the connection or the request.
    BackendUnavailable,
    /// 504: the backend sent no response head in time.
    BackendTimeout,
    /// 502: the backend's response head is over the gateway's limits
    /// (`VX11_MAX_RESPONSE_HEADER_BYTES`, `VX11_MAX_RESPONSE_HEADERS`).
    UpstreamResponseTooLarge,
    /// 400: the request body could not be read.
    InvalidBody,
    /// 415.
    UnsupportedMediaType,
    /// 400: the body is not JSON.
    InvalidJson,
    /// 422: chat without `message`.
    MissingMessage,
    /// 422: `message` is not a string.
    InvalidMessage,
    /// 422: `message` is blank.
    EmptyMessage,
    /// 413 at the backend: the chat body or message is too long.
    MessageTooLarge,
    /// 400: the event stream's query string does not parse.
    InvalidQuery,
    /// 400: `follow` is not a boolean.
    InvalidFollow,
    /// 400: `Last-Event-ID` / `lastEventId` is not an event id.
    InvalidLastEventId,
    /// 503: `VX11_MAX_STREAMS` event streams are open in this process.
    TooManyStreams,
    /// 429: `VX11_MAX_STREAMS_PER_TOKEN` event streams are open with this token.
    TooManyStreamsForToken,
    /// 431: the request head is too large to pass on.
    HeadersTooLarge,
    /// 400: more than one `Host` header (or `Host` disagreeing with the request target).
    AmbiguousHost,
    /// 400: a module path with dot-segments or encoded slashes, which backends could read
    /// as another path.
    UnsafePath,
    /// 403: a CORS preflight from an origin, or for a method or headers, that the
    /// gateway's `VX11_CORS_*` settings do not allow.
    CorsRefused,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::MalformedToken => "malformed_token",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownModule => "unknown_module",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::BackendTimeout => "backend_timeout",
            ErrorCode::UpstreamResponseTooLarge => "upstream_response_too_large",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::MissingMessage => "missing_message",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::EmptyMessage => "empty_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidFollow => "invalid_follow",
            ErrorCode::InvalidLastEventId => "invalid_last_event_id",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::TooManyStreamsForToken => "too_many_streams_for_token",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::AmbiguousHost => "ambiguous_host",
            ErrorCode::UnsafePath => "unsafe_path",
            ErrorCode::CorsRefused => "cors_refused",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error answer. `detail` helps the caller and never holds a token value.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: Cow<'static, str>,
    /// For 401s: the `WWW-Authenticate` challenge.
    pub challenge: Option<HeaderValue>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorCode,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            challenge: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such route; routes are /health, /ready and /<module>/api/...",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                error: self.code,
                detail: &self.detail,
            }),
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        // Left in the extensions for the access log and metrics.
        response.extensions_mut().insert(self.code);
        response
    }
}

/// A time in a refusal's detail, to the second (`-` for none).
pub fn rfc3339(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}
