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
//!
//! The body sends each event's frame as encoded once at publish ([`Event::frame`]), and
//! waits on its other futures through [`Alarm`]s, so a broadcast to many streams costs each
//! one a read of the history and a write, not a walk through the shared locks behind the
//! shutdown token and the token store. The keep-alive timer is not reset per event: when it
//! fires after an event it is moved to that event's time plus the interval, so a comment
//! still goes out after every quiet interval, as axum's `Sse` does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use vx11_service::{ApiError, Authenticated, ErrorCode, rfc3339};
use vx11_tokenset::{TokenStore, Verdict};

use crate::alarm::{Alarm, Bell};
use crate::events::{Event, EventKind, Subscription};
use crate::metrics::{OpenStream, StreamEnd};
use crate::sse;
use crate::state::AppState;

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
            ErrorCode::InvalidQuery,
            "the query string could not be read; it takes follow=true|false and lastEventId=<id>",
        )
    })?;
    let follow = match query.follow.as_deref() {
        None => follow_by_default,
        Some(text) => parse_bool(text).ok_or_else(|| {
            bad_request(ErrorCode::InvalidFollow, "`follow` must be true or false")
        })?,
    };
    let after = resume_point(headers, query.last_event_id.as_deref())?;
    tracing::debug!(follow, after, token = %caller.fingerprint, "event stream opened");
    let stream = EventStream::open(state, caller, follow, after);
    Ok((sse::headers(), Body::from_stream(stream)).into_response())
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
            ErrorCode::InvalidLastEventId,
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

fn bad_request(code: ErrorCode, detail: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

/// One open stream; the response body owns it. `None` once it ended, so that its
/// subscription and count are released then, not when the body is dropped.
struct EventStream(Option<Open>);

struct Open {
    pending: VecDeque<Arc<Event>>,
    subscription: Subscription,
    follow: bool,
    grant: Grant,
    shutdown: Alarm<()>,
    keep_alive: KeepAlive,
    open: OpenStream,
    finished: bool,
}

impl EventStream {
    fn open(state: &AppState, caller: Authenticated, follow: bool, after: Option<u64>) -> Self {
        // The token watch is taken before the token is checked again (first thing the
        // stream does), so a reload since the request's own check cannot be missed.
        let bell = Bell::new();
        let grant = Grant::new(&bell, state.store.clone(), caller);
        let mut subscription = state.events.subscribe(after);
        let shutdown = state.shutdown.clone();
        Self(Some(Open {
            pending: subscription.take().into(),
            subscription,
            follow,
            grant,
            shutdown: bell.alarm(Box::pin(async move { shutdown.triggered().await })),
            keep_alive: KeepAlive::new(&bell, state.settings.sse_keep_alive),
            open: state.metrics.streams.opened(),
            finished: false,
        }))
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(open) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        let next = open.poll_frame(cx);
        if let Poll::Ready(None) = next {
            self.0 = None;
        }
        next.map(|frame| frame.map(Ok))
    }
}

impl Open {
    /// The next frame to send; `None` at the end. Checks, in order: the token (when due),
    /// the events taken, shutdown, a token-set change, the token's expiry, new events,
    /// the keep-alive.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.finished {
            return Poll::Ready(None);
        }
        loop {
            if self.grant.recheck_due {
                match self.grant.recheck() {
                    Ok(deadline) => self.grant.expiry.set(sleep_until(deadline)),
                    Err(revoked) => {
                        self.finished = true;
                        self.open.ending(revoked.stream_end());
                        return Poll::Ready(Some(revoked.frame(&self.grant.caller)));
                    }
                }
            }
            if let Some(event) = self.pending.pop_front() {
                self.keep_alive.sent();
                return Poll::Ready(Some(event.frame.clone()));
            }
            if !self.follow {
                self.open.ending(StreamEnd::Replayed);
                return Poll::Ready(None);
            }
            if self.shutdown.poll(cx).is_ready() {
                self.open.ending(StreamEnd::Shutdown);
                return Poll::Ready(None);
            }
            if let Poll::Ready(changes) = self.grant.changes.poll(cx) {
                self.grant.changes.set(match changes {
                    Some(changes) => next_change(changes),
                    None => Box::pin(std::future::pending()),
                });
                self.grant.recheck_due = true;
                continue;
            }
            if self.grant.expiry.poll(cx).is_ready() {
                self.grant.recheck_due = true;
                continue;
            }
            if let Poll::Ready(batch) = self.subscription.poll_take(cx) {
                self.pending.extend(batch);
                continue;
            }
            if self.keep_alive.poll_due(cx).is_ready() {
                return Poll::Ready(Some(sse::KEEP_ALIVE));
            }
            return Poll::Pending;
        }
    }
}

/// The keep-alive comment, due after `interval` without a frame.
struct KeepAlive {
    interval: Duration,
    last_sent: Instant,
    timer: Alarm<()>,
}

impl KeepAlive {
    fn new(bell: &Arc<Bell>, interval: Duration) -> Self {
        let last_sent = Instant::now();
        Self {
            interval,
            last_sent,
            timer: bell.alarm(Box::pin(tokio::time::sleep_until(last_sent + interval))),
        }
    }

    /// An event was sent: the timer is not moved now (it would cost every stream of a
    /// broadcast a timer reset), but when it fires.
    fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = self.last_sent + self.interval;
            if due <= now {
                self.last_sent = now;
                self.timer
                    .set(Box::pin(tokio::time::sleep_until(now + self.interval)));
                return Poll::Ready(());
            }
            self.timer.set(Box::pin(tokio::time::sleep_until(due)));
        }
    }
}

fn sleep_until(deadline: Option<Instant>) -> BoxFuture<'static, ()> {
    match deadline {
        Some(deadline) => Box::pin(tokio::time::sleep_until(deadline)),
        None => Box::pin(std::future::pending()),
    }
}

/// The next change of the token set; `None` once the store is gone.
fn next_change(
    mut changes: watch::Receiver<u64>,
) -> BoxFuture<'static, Option<watch::Receiver<u64>>> {
    Box::pin(async move { changes.changed().await.ok().map(|()| changes) })
}

/// The token a stream was opened with, checked again when the set changes or the
/// token's entry expires.
struct Grant {
    store: Arc<TokenStore>,
    changes: Alarm<Option<watch::Receiver<u64>>>,
    /// When to check again: the token's `expiresAt`, or [`MAX_EXPIRY_WAIT`] at most.
    expiry: Alarm<()>,
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
    fn new(bell: &Arc<Bell>, store: Arc<TokenStore>, caller: Authenticated) -> Self {
        Self {
            changes: bell.alarm(next_change(store.subscribe())),
            expiry: bell.alarm(Box::pin(std::future::pending())),
            store,
            expires_at: caller.expires_at,
            caller,
            recheck_due: true,
        }
    }

    /// Checks the token again; while it passes, says when to check next.
    fn recheck(&mut self) -> Result<Option<Instant>, Revoked> {
        self.recheck_due = false;
        let snapshot = self.store.snapshot();
        match snapshot.set.check_digest(&self.caller.digest, Utc::now()) {
            Verdict::Accepted(entry) => {
                self.expires_at = entry.expires_at;
                Ok(self.deadline())
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
    fn frame(&self, caller: &Authenticated) -> Bytes {
        let (code, detail) = match self {
            Revoked::Removed => (
                ErrorCode::TokenRevoked,
                format!(
                    "token `{}` ({}) is no longer in the token set; reconnect with a current token",
                    caller.name, caller.fingerprint
                ),
            ),
            Revoked::Expired(at) => (
                ErrorCode::ExpiredToken,
                format!(
                    "token `{}` ({}) expired at {}; reconnect with a current token",
                    caller.name,
                    caller.fingerprint,
                    rfc3339(*at),
                ),
            ),
        };
        tracing::info!(
            reason = code.as_str(),
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
        sse::frame(None, EventKind::Auth.as_str(), &data.to_string())
    }
}
