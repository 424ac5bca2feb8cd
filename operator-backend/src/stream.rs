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
//! away, the body is dropped and with it the subscription, the token watch, the
//! open-stream count ([`OpenStream`]) and the stream's slot ([`StreamSlot`]).
//!
//! Limits (`VX11_STREAM_*`, `VX11_MAX_STREAMS*`, shared with the gateway):
//!
//! - Before a stream starts, it takes a [`StreamSlot`]: past `VX11_MAX_STREAMS` open
//!   streams it is answered 503 `too_many_streams`, past `VX11_MAX_STREAMS_PER_TOKEN` with
//!   one token name 429 `too_many_streams_for_token`.
//! - A stream holds at most `VX11_STREAM_BUFFER_BYTES` (plus one event) for its client: the
//!   frames hyper has not written out yet ([`Flight`]) and the batch it took from the
//!   history. At that mark it stops reading the history (its cursor stays where it is) until
//!   the client reads; nothing more is held, however much is published or replayed.
//! - A client that reads nothing for `VX11_STREAM_STALL_TIMEOUT` while frames wait for it
//!   is dropped: the body ends with an error, so hyper closes the HTTP/1.1 connection or
//!   resets that one HTTP/2 stream (the others on the connection go on). It is counted in
//!   `vx11_backend_streams_ended_total{reason="stalled"}` and logged once, at info. The
//!   client can come back with `Last-Event-ID`. To be able to notice, a stream keeps hyper's
//!   HTTP/1.1 write queue from filling (at most [`MAX_HELD_FRAMES`] pieces and
//!   [`MAX_HANDED_BYTES`] bytes held, a large event handed out in pieces): hyper polls the
//!   body only while it has room, and the stall timer is in the body. (The listener also
//!   closes any connection whose socket takes nothing for the stall timeout.)
//!
//! The body sends each event's frame as encoded once at publish ([`Event::frame`]), and
//! waits on its other futures through [`Alarm`]s, so a broadcast to many streams costs each
//! one a read of the history and a write, not a walk through the shared locks behind the
//! shutdown token and the token store. The keep-alive timer is not reset per event: when it
//! fires after an event it is moved to that event's time plus the interval, so a comment
//! still goes out after every quiet interval, as axum's `Sse` does.
//!
//! Over 500 lines on purpose: the body's state machine (`Open`, its stall and keep-alive
//! clocks) is one piece, and its fields stay private to it; the two handlers above it only
//! parse the request and start it.

use std::collections::VecDeque;
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
use vx11_service::{ApiError, Authenticated, ErrorCode, StreamSlot, rfc3339};
use vx11_tokenset::{TokenStore, Verdict};

use crate::alarm::{Alarm, Bell};
use crate::events::{Event, EventKind, Subscription};
use crate::flight::Flight;
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
    // Before the stream starts: a refusal is a plain JSON answer.
    let slot = match state.slots.try_open(&caller.name) {
        Ok(slot) => slot,
        Err(refusal) => {
            state.metrics.streams.refused(refusal);
            tracing::debug!(?refusal, token = %caller.fingerprint, "event stream refused");
            return Ok(refusal.into_response());
        }
    };
    tracing::debug!(follow, after, token = %caller.fingerprint, "event stream opened");
    let stream = EventStream::open(state, caller, slot, follow, after);
    Ok((
        vx11_service::event_stream_headers(),
        Body::from_stream(stream),
    )
        .into_response())
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

/// Frames a stream lets hyper hold at most. hyper's HTTP/1.1 writer queues up to 16
/// buffers and polls the body only while it has room; staying under that keeps the body
/// polled, so its stall timer can end a stream whose client reads nothing.
pub const MAX_HELD_FRAMES: usize = 8;

/// Bytes a stream takes ahead of its client at most (what hyper holds and what it took from
/// the history), whatever `VX11_STREAM_BUFFER_BYTES` says.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// Bytes a stream lets hyper hold at most, a large event's frame handed out in pieces of
/// this size: under hyper's HTTP/1.1 write buffer, which is `VX11_MAX_HEADER_BYTES` (at
/// least 8 KiB), for the same reason as [`MAX_HELD_FRAMES`].
pub const MAX_HANDED_BYTES: usize = 4 * 1024;

/// How a stream whose client read nothing ends: the body's error, on which hyper closes
/// the HTTP/1.1 connection or resets the HTTP/2 stream.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing for {0:?} while events waited for it (VX11_STREAM_STALL_TIMEOUT)")]
pub struct Stalled(Duration);

/// One open stream; the response body owns it. `None` once it ended, so that its
/// subscription, count and slot are released then, not when the body is dropped.
struct EventStream(Option<Open>);

struct Open {
    /// Taken from the history, not handed to hyper yet.
    pending: VecDeque<Arc<Event>>,
    pending_bytes: usize,
    /// What is left of the frame being handed out in pieces.
    partial: Bytes,
    subscription: Subscription,
    follow: bool,
    /// Without `follow`: the newest event when the stream opened, where the replay ends.
    replay_through: u64,
    grant: Grant,
    shutdown: Alarm<()>,
    keep_alive: KeepAlive,
    /// What hyper holds of this stream's frames.
    flight: Arc<Flight>,
    /// `VX11_STREAM_BUFFER_BYTES`, at most [`MAX_HELD_BYTES`].
    budget: usize,
    stall: Stall,
    open: OpenStream,
    _slot: StreamSlot,
    finished: bool,
}

impl EventStream {
    fn open(
        state: &AppState,
        caller: Authenticated,
        slot: StreamSlot,
        follow: bool,
        after: Option<u64>,
    ) -> Self {
        // The token watch is taken before the token is checked again (first thing the
        // stream does), so a reload since the request's own check cannot be missed.
        let bell = Bell::new();
        let grant = Grant::new(&bell, state.store.clone(), caller);
        let subscription = state.events.subscribe(after);
        let shutdown = state.shutdown.clone();
        let limits = &state.settings.streams;
        Self(Some(Open {
            pending: VecDeque::new(),
            pending_bytes: 0,
            partial: Bytes::new(),
            subscription,
            follow,
            replay_through: state.events.last_id().unwrap_or(0),
            grant,
            shutdown: bell.alarm(Box::pin(async move { shutdown.triggered().await })),
            keep_alive: KeepAlive::new(&bell, state.settings.sse_keep_alive),
            flight: Flight::new(),
            budget: limits.buffer_bytes.clamp(1, MAX_HELD_BYTES),
            stall: Stall::new(&bell, limits.stall_timeout),
            open: state.metrics.streams.opened(),
            _slot: slot,
            finished: false,
        }))
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Stalled>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(open) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        let next = open.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = next {
            self.0 = None;
        }
        next
    }
}

impl Open {
    /// The next frame to send; `None` at the end, an error for a client that reads
    /// nothing. Checks, in order: the token (when due), a stall, the events taken (while
    /// hyper has room for them), the history (while this stream has room), shutdown, a
    /// token-set change, the token's expiry, new events, the keep-alive.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Stalled>>> {
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
                        let frame = revoked.frame(&self.grant.caller);
                        return Poll::Ready(Some(Ok(self.flight.send(frame))));
                    }
                }
            }
            if let Poll::Ready(waited) = self.stall.poll(cx, &self.flight) {
                self.finished = true;
                self.open.ending(StreamEnd::Stalled);
                tracing::info!(
                    token = %self.grant.caller.fingerprint,
                    token_name = %self.grant.caller.name,
                    held_bytes = self.flight.bytes(),
                    waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    "event stream dropped: its client read nothing while events waited \
                     (VX11_STREAM_STALL_TIMEOUT); it can resume with Last-Event-ID"
                );
                return Poll::Ready(Some(Err(Stalled(waited))));
            }
            if let Some(piece) = self.next_piece() {
                return Poll::Ready(Some(Ok(self.send(piece))));
            }
            if self.blocked() {
                // Until the client reads: nothing more is taken from the history.
                self.flight.wake_on_delivery(cx);
                if !self.blocked() {
                    continue;
                }
            } else if !self.follow {
                let batch = self.subscription.take(self.room(), self.replay_through);
                if batch.is_empty() {
                    self.open.ending(StreamEnd::Replayed);
                    return Poll::Ready(None);
                }
                self.queue(batch);
                continue;
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
            if !self.blocked()
                && let Poll::Ready(batch) = self.subscription.poll_take(cx, self.room())
            {
                self.queue(batch);
                continue;
            }
            // Only while the client has all that was sent: the comment is for a quiet
            // stream, not for one whose client does not read.
            if self.flight.frames() == 0 && self.keep_alive.poll_due(cx).is_ready() {
                return Poll::Ready(Some(Ok(self.send(sse::KEEP_ALIVE))));
            }
            return Poll::Pending;
        }
    }

    /// Bytes that may still be taken from the history.
    fn room(&self) -> usize {
        self.budget
            .saturating_sub(self.flight.bytes() + self.pending_bytes + self.partial.len())
    }

    /// Whether hyper may be handed more now.
    fn may_hand_out(&self) -> bool {
        self.flight.frames() < MAX_HELD_FRAMES && self.flight.bytes() < MAX_HANDED_BYTES
    }

    /// The next piece of the taken events for hyper, while it may hold more: a frame whole
    /// when it fits, else in pieces (slices of the same buffer, no copy).
    fn next_piece(&mut self) -> Option<Bytes> {
        if !self.may_hand_out() {
            return None;
        }
        if self.partial.is_empty() {
            let event = self.pending.pop_front()?;
            self.pending_bytes -= event.bytes();
            self.partial = event.frame.clone();
        }
        let room = MAX_HANDED_BYTES - self.flight.bytes();
        let take = self.partial.len().min(room);
        Some(self.partial.split_to(take))
    }

    /// Waiting for the client to read: taken events that hyper has no room for, or no
    /// room to take any.
    fn blocked(&self) -> bool {
        if self.pending.is_empty() && self.partial.is_empty() {
            self.room() == 0
        } else {
            !self.may_hand_out()
        }
    }

    fn queue(&mut self, batch: Vec<Arc<Event>>) {
        self.pending_bytes += batch.iter().map(|event| event.bytes()).sum::<usize>();
        self.pending.extend(batch);
    }

    /// Hands `frame` to hyper, counted as held until it is written.
    fn send(&mut self, frame: Bytes) -> Bytes {
        self.stall.sending(&self.flight);
        self.keep_alive.sent();
        self.flight.send(frame)
    }
}

/// Notices a client that reads nothing: frames held and none delivered for `timeout`.
/// Like the keep-alive, the timer is not moved per frame but when it fires.
struct Stall {
    timeout: Duration,
    timer: Alarm<()>,
    /// [`Flight::delivered`] when last looked at.
    delivered: u64,
    /// Since when nothing was delivered (with frames held), or recently (with none).
    since: Instant,
}

impl Stall {
    fn new(bell: &Arc<Bell>, timeout: Duration) -> Self {
        let since = Instant::now();
        Self {
            timeout,
            timer: bell.alarm(Box::pin(tokio::time::sleep_until(since + timeout))),
            delivered: 0,
            since,
        }
    }

    /// A frame is about to be handed out: with nothing held before it, the wait for the
    /// client starts now.
    fn sending(&mut self, flight: &Flight) {
        if flight.frames() == 0 {
            self.since = Instant::now();
            self.delivered = flight.delivered();
        }
    }

    /// Ready, with how long it waited, once the client has read nothing for `timeout`
    /// while frames were held for it.
    fn poll(&mut self, cx: &mut Context<'_>, flight: &Flight) -> Poll<Duration> {
        let delivered = flight.delivered();
        if delivered != self.delivered {
            self.delivered = delivered;
            self.since = Instant::now();
        }
        loop {
            if self.timer.poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if flight.frames() == 0 {
                self.since = now;
            }
            let due = self.since + self.timeout;
            if due <= now {
                return Poll::Ready(now - self.since);
            }
            self.timer.set(Box::pin(tokio::time::sleep_until(due)));
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
