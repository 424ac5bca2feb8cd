//! The operator event stream, `text/event-stream`:
//!
//! - `GET /operator/api/events/stream` follows by default: the history, then live events,
//!   with keep-alive comments, until the client leaves, the service shuts down, or the
//!   stream's token stops being valid.
//! - `GET /operator/api/events` replays by default: the history, then the end.
//! - `follow=true|false` chooses; `Last-Event-ID` (header) or `lastEventId` (query) starts
//!   after that id.
//!
//! A following stream checks its token again on every token reload and at the token's
//! `expiresAt`; a token that is no longer valid gets one last `auth` event and the stream
//! ends. The `auth` event has no `id:`, being for this stream only and not in the history,
//! so a client's `Last-Event-ID` stays at the last event it really got.
//!
//! No task is spawned per stream: the response body is the stream, so when the client goes
//! away, the body is dropped and with it the subscription, the token watch and the
//! open-stream count ([`OpenStream`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use vx11_tokenset::service::{ApiError, Authenticated, Shutdown};
use vx11_tokenset::{TokenStore, Verdict};

use crate::AppState;
use crate::events::{Event, EventKind, Subscription};
use crate::metrics::{OpenStream, StreamEnd};

/// The query parameters besides `token`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    follow: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// `GET /operator/api/events/stream`: follows unless `follow=false`.
pub async fn events_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Authenticated>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    open(&state, caller, &headers, query, true)
}

/// `GET /operator/api/events`: replays and ends unless `follow=true`.
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Authenticated>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    open(&state, caller, &headers, query, false)
}

fn open(
    state: &AppState,
    caller: Authenticated,
    headers: &HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
    follow_by_default: bool,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        bad_request(
            "invalid_query",
            "the query string could not be read; it takes follow=true|false and lastEventId=<id>",
        )
    })?;
    let follow = match query.follow.as_deref() {
        None => follow_by_default,
        Some(text) => parse_bool(text)
            .ok_or_else(|| bad_request("invalid_follow", "`follow` must be true or false"))?,
    };
    let after = resume_point(headers, query.last_event_id.as_deref())?;
    tracing::debug!(follow, after, token = %caller.fingerprint, "event stream opened");
    let stream = EventStream::open(state, caller, follow, after);
    let keep_alive = KeepAlive::new()
        .interval(state.settings.sse_keep_alive)
        .text("keep-alive");
    let mut response = Sse::new(stream.into_stream())
        .keep_alive(keep_alive)
        .into_response();
    // Proxies in front (nginx and the like) must pass events on at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `Last-Event-ID` (what EventSource sends on reconnecting) wins over `lastEventId`.
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let invalid = || {
        bad_request(
            "invalid_last_event_id",
            "Last-Event-ID (or lastEventId) must be the id of an event, a number",
        )
    };
    let text = match headers.get("last-event-id") {
        Some(value) => value.to_str().map_err(|_| invalid())?,
        None => query.unwrap_or_default(),
    };
    match text.trim() {
        "" => Ok(None),
        id => id.parse().map(Some).map_err(|_| invalid()),
    }
}

fn bad_request(code: &'static str, detail: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

/// One open stream; the response body owns it.
struct EventStream {
    pending: VecDeque<Arc<Event>>,
    subscription: Subscription,
    follow: bool,
    grant: Grant,
    shutdown: Shutdown,
    open: OpenStream,
    finished: bool,
}

impl EventStream {
    fn open(state: &AppState, caller: Authenticated, follow: bool, after: Option<u64>) -> Self {
        // The token watch is taken before the token is checked again (first thing the
        // stream does), so a reload since the request's own check cannot be missed.
        let grant = Grant::new(state.store.clone(), caller);
        let mut subscription = state.events.subscribe(after);
        Self {
            pending: subscription.take().into(),
            subscription,
            follow,
            grant,
            shutdown: state.shutdown.clone(),
            open: state.metrics.streams.opened(),
            finished: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
        futures_util::stream::unfold(self, |stream| stream.advance())
    }

    async fn advance(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        if self.finished {
            return None;
        }
        loop {
            if self.grant.recheck_due
                && let Err(revoked) = self.grant.recheck()
            {
                self.finished = true;
                self.open.ending(revoked.stream_end());
                let event = revoked.event(&self.grant.caller);
                return Some((Ok(event), self));
            }
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(to_sse(&event)), self));
            }
            if !self.follow {
                self.open.ending(StreamEnd::Replayed);
                return None;
            }
            let expiry = self.grant.deadline();
            tokio::select! {
                biased;
                () = self.shutdown.triggered() => {
                    self.open.ending(StreamEnd::Shutdown);
                    return None;
                }
                changed = self.grant.changes.changed(), if !self.grant.store_gone => match changed {
                    Ok(()) => self.grant.recheck_due = true,
                    Err(_) => self.grant.store_gone = true,
                },
                () = sleep_until(expiry) => self.grant.recheck_due = true,
                batch = self.subscription.next() => self.pending.extend(batch),
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(&event.data)
}

/// The token a stream was opened with, checked again when the set changes or the
/// token's entry expires.
struct Grant {
    store: Arc<TokenStore>,
    changes: watch::Receiver<u64>,
    store_gone: bool,
    caller: Authenticated,
    expires_at: Option<DateTime<Utc>>,
    recheck_due: bool,
}

/// Why a stream's token no longer passes.
enum Revoked {
    Removed,
    Expired(Option<DateTime<Utc>>),
}

/// Wake at least this often while waiting for a far expiry (so a wall-clock jump is
/// noticed, and a date far ahead never overflows the timer).
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(60);

impl Grant {
    fn new(store: Arc<TokenStore>, caller: Authenticated) -> Self {
        Self {
            changes: store.subscribe(),
            store,
            store_gone: false,
            expires_at: caller.expires_at,
            caller,
            recheck_due: true,
        }
    }

    fn recheck(&mut self) -> Result<(), Revoked> {
        self.recheck_due = false;
        let snapshot = self.store.snapshot();
        match snapshot.set.check_digest(&self.caller.digest, Utc::now()) {
            Verdict::Accepted(entry) => {
                self.expires_at = entry.expires_at;
                Ok(())
            }
            Verdict::Expired(entry) => Err(Revoked::Expired(entry.expires_at)),
            Verdict::NotYetValid(_) | Verdict::Invalid | Verdict::Missing => Err(Revoked::Removed),
        }
    }

    /// When the stream's token expires, as a timer deadline.
    fn deadline(&self) -> Option<Instant> {
        let left = (self.expires_at? - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Some(Instant::now() + left.min(MAX_EXPIRY_WAIT))
    }
}

impl Revoked {
    fn stream_end(&self) -> StreamEnd {
        match self {
            Revoked::Removed => StreamEnd::TokenRevoked,
            Revoked::Expired(_) => StreamEnd::TokenExpired,
        }
    }

    /// The stream's last event. Names the token by name and fingerprint only.
    fn event(&self, caller: &Authenticated) -> SseEvent {
        let (code, detail) = match self {
            Revoked::Removed => (
                "token_revoked",
                format!(
                    "token `{}` ({}) is no longer in the token set; reconnect with a current token",
                    caller.name, caller.fingerprint
                ),
            ),
            Revoked::Expired(at) => (
                "expired_token",
                format!(
                    "token `{}` ({}) expired at {}; reconnect with a current token",
                    caller.name,
                    caller.fingerprint,
                    at.map_or_else(
                        || "-".into(),
                        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                ),
            ),
        };
        tracing::info!(
            reason = code,
            token = %caller.fingerprint,
            token_name = %caller.name,
            "event stream closed: its token is no longer valid"
        );
        let data = json!({
            "error": code,
            "detail": detail,
            "name": &*caller.name,
            "fingerprint": caller.fingerprint.to_string(),
            "at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        SseEvent::default()
            .event(EventKind::Auth.as_str())
            .data(data.to_string())
    }
}
