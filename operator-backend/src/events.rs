//! The operator event log: a history bounded in events and in encoded bytes, with
//! increasing ids, delivered live to every open stream.
//!
//! Delivery is by cursor rather than by a message channel: a subscriber remembers the id of
//! the last event it took, and when the log says "something new" it takes the newer events
//! from the history, a batch bounded in bytes at a time ([`Subscription::take`]), as many as
//! its stream has room to send. Replay and live delivery are then one code path, so no event
//! between them can be lost or repeated, a replay is never copied whole into one stream, and
//! a slow stream never overflows a channel; it can only fall behind the history (more events
//! published than the history keeps while it did not read), and then it continues from the
//! oldest event still kept.
//!
//! Bounds: one event's SSE frame is at most [`HistoryLimits::event_bytes`] (a larger one is
//! refused at [`EventLog::publish`], so a chat post of control characters, six bytes each
//! once escaped, is refused rather than stored), and the history keeps at most
//! [`HistoryLimits::events`] events and [`HistoryLimits::bytes`] bytes of frames, dropping the
//! oldest first.
//!
//! A broadcast is made cheap for many streams: an event's SSE frame is encoded once, when it
//! is published, and every stream sends that same [`Bytes`]; each subscriber keeps one
//! waker slot that a publish wakes (no per-event registration in a shared list), and the
//! history is read under a read lock, so streams taking the new event do not wait on each
//! other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use axum::body::Bytes;
use futures_util::task::AtomicWaker;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::sse;

/// The `event:` field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A message posted to `/operator/api/chat`.
    Chat,
    /// The token set changed (counts, and some names and fingerprints; never values).
    Tokens,
    /// The last event of a stream whose token stopped being valid (never in the history).
    Auth,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Chat => "chat",
            EventKind::Tokens => "tokens",
            EventKind::Auth => "auth",
        }
    }
}

/// One published event, encoded once for every stream.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: EventKind,
    /// The SSE frame streams send: `id:`, `event:`, `data:` and the blank line.
    pub frame: Bytes,
    /// The JSON (one line), a slice of `frame`.
    pub data: Bytes,
}

impl Event {
    /// What the event costs the history and a stream's buffer: its frame's length.
    pub fn bytes(&self) -> usize {
        self.frame.len()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    event: &'static str,
}

/// How much history is kept (`VX11_EVENT_HISTORY`, `VX11_EVENT_HISTORY_BYTES`) and how large
/// one event may be (`VX11_MAX_EVENT_BYTES`), all counted in frames as streams send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub events: usize,
    pub bytes: usize,
    pub event_bytes: usize,
}

impl HistoryLimits {
    /// The defaults of the settings: 1 000 events, 4 MiB, 64 KiB an event.
    pub const DEFAULT: Self = Self {
        events: 1000,
        bytes: 4 * 1024 * 1024,
        event_bytes: 64 * 1024,
    };
}

/// An event whose frame would be larger than [`HistoryLimits::event_bytes`]; nothing was
/// stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the event would be {bytes} bytes once encoded; the limit is {limit} bytes (VX11_MAX_EVENT_BYTES)"
)]
pub struct EventTooLarge {
    pub bytes: usize,
    pub limit: usize,
}

/// The history and its subscribers.
#[derive(Debug)]
pub struct EventLog {
    history: RwLock<History>,
    /// The id of the newest event (0: none), so that a subscriber polled with nothing
    /// new need not take the lock.
    latest: AtomicU64,
    subscribers: Mutex<Subscribers>,
    published: Family<EventLabels, Counter>,
    refused: Family<EventLabels, Counter>,
    /// Bytes of frames in the history now.
    history_bytes: Gauge,
}

#[derive(Debug)]
struct History {
    events: VecDeque<Arc<Event>>,
    limits: HistoryLimits,
    /// The sum of the kept events' [`Event::bytes`].
    bytes: usize,
    next_id: u64,
}

/// The wakers of the open subscriptions, in slots a subscription keeps until dropped.
#[derive(Debug, Default)]
struct Subscribers {
    slots: Vec<Option<Arc<AtomicWaker>>>,
    free: Vec<usize>,
}

impl EventLog {
    /// A log keeping at most `limits.events` events and `limits.bytes` bytes. Ids start at
    /// the current Unix time in milliseconds, so they keep increasing across restarts: a
    /// client resuming with an id from before a restart gets the whole new history rather
    /// than nothing.
    pub fn new(limits: HistoryLimits) -> Arc<Self> {
        let first_id = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(1);
        Self::starting_at(limits, first_id)
    }

    /// Limits of zero are taken as one (the configuration refuses zero).
    pub fn starting_at(limits: HistoryLimits, first_id: u64) -> Arc<Self> {
        let limits = HistoryLimits {
            events: limits.events.max(1),
            event_bytes: limits.event_bytes.max(1),
            bytes: limits.bytes.max(limits.event_bytes).max(1),
        };
        Arc::new(Self {
            history: RwLock::new(History {
                events: VecDeque::with_capacity(limits.events.min(4096)),
                limits,
                bytes: 0,
                next_id: first_id.max(1),
            }),
            latest: AtomicU64::new(0),
            subscribers: Mutex::default(),
            published: Family::default(),
            refused: Family::default(),
            history_bytes: Gauge::default(),
        })
    }

    /// Appends an event to the history, dropping the oldest ones past the limits, and wakes
    /// every subscriber. An event whose frame would be over [`HistoryLimits::event_bytes`] is
    /// refused, and nothing changes.
    pub fn publish(
        &self,
        kind: EventKind,
        data: &serde_json::Value,
    ) -> Result<Arc<Event>, EventTooLarge> {
        // Compact JSON has no line break, so the data is one `data:` line.
        let json = data.to_string();
        let event = {
            let mut history = self.write();
            let id = history.next_id;
            let bytes = sse::frame_len(Some(id), kind.as_str(), &json);
            if bytes > history.limits.event_bytes {
                drop(history);
                self.refused
                    .get_or_create(&EventLabels {
                        event: kind.as_str(),
                    })
                    .inc();
                return Err(EventTooLarge {
                    bytes,
                    limit: self.read().limits.event_bytes,
                });
            }
            let frame = sse::frame(Some(id), kind.as_str(), &json);
            debug_assert_eq!(frame.len(), bytes);
            let data_end = frame.len() - "\n\n".len();
            let event = Arc::new(Event {
                id,
                kind,
                data: frame.slice(data_end - json.len()..data_end),
                frame,
            });
            history.next_id += 1;
            history.bytes += event.bytes();
            history.events.push_back(event.clone());
            // The new event alone is within both limits, so it is never the one dropped.
            while history.events.len() > history.limits.events
                || history.bytes > history.limits.bytes
            {
                let Some(oldest) = history.events.pop_front() else {
                    break;
                };
                history.bytes -= oldest.bytes();
            }
            self.history_bytes
                .set(i64::try_from(history.bytes).unwrap_or(i64::MAX));
            self.latest.store(id, Ordering::Release);
            event
        };
        debug_assert_eq!(event.data, json.as_bytes());
        // After the event is in the history: a subscriber that registered its waker before
        // this takes the event when woken, one that registers after finds it when it looks.
        for waker in self.lock_subscribers().slots.iter().flatten() {
            waker.wake();
        }
        self.published
            .get_or_create(&EventLabels {
                event: kind.as_str(),
            })
            .inc();
        Ok(event)
    }

    /// A reader of every event after `after` (all that are kept, without it), then of each
    /// new one.
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Subscription {
        let waker = Arc::new(AtomicWaker::new());
        let mut subscribers = self.lock_subscribers();
        let slot = match subscribers.free.pop() {
            Some(slot) => {
                subscribers.slots[slot] = Some(waker.clone());
                slot
            }
            None => {
                subscribers.slots.push(Some(waker.clone()));
                subscribers.slots.len() - 1
            }
        };
        Subscription {
            log: self.clone(),
            cursor: after.unwrap_or(0),
            waker,
            slot,
        }
    }

    /// Open subscriptions (each stream holds one until it is dropped).
    pub fn subscribers(&self) -> usize {
        let subscribers = self.lock_subscribers();
        subscribers.slots.len() - subscribers.free.len()
    }

    /// The id of the newest event, if any was published.
    pub fn last_id(&self) -> Option<u64> {
        self.read().events.back().map(|e| e.id)
    }

    /// Events and bytes of frames in the history now.
    pub fn kept(&self) -> (usize, usize) {
        let history = self.read();
        (history.events.len(), history.bytes)
    }

    pub fn limits(&self) -> HistoryLimits {
        self.read().limits
    }

    /// `<prefix>_events_published_total{event}`, for the registry.
    pub fn published_counter(&self) -> Family<EventLabels, Counter> {
        self.published.clone()
    }

    /// `<prefix>_events_refused_total{event}`: events over `VX11_MAX_EVENT_BYTES`.
    pub fn refused_counter(&self) -> Family<EventLabels, Counter> {
        self.refused.clone()
    }

    /// `<prefix>_event_history_bytes`.
    pub fn history_bytes_gauge(&self) -> Gauge {
        self.history_bytes.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, History> {
        self.history.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One reader's position in the log; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    log: Arc<EventLog>,
    /// The id of the last event taken (0: none yet).
    cursor: u64,
    /// Woken by every publish; holds the waker of the task reading this subscription.
    waker: Arc<AtomicWaker>,
    slot: usize,
}

impl Subscription {
    /// The events after the cursor that are in the history now, up to id `through`, as many
    /// as fit in `max_bytes` of frames (at least one, when there is one, so that an event
    /// larger than a stream's room still goes out alone); moves the cursor past them.
    pub fn take(&mut self, max_bytes: usize, through: u64) -> Vec<Arc<Event>> {
        let latest = self.log.latest.load(Ordering::Acquire);
        if latest <= self.cursor || through <= self.cursor {
            return Vec::new();
        }
        let history = self.log.read();
        let (Some(front), Some(back)) = (history.events.front(), history.events.back()) else {
            return Vec::new();
        };
        if back.id <= self.cursor {
            return Vec::new();
        }
        // Ids in the history are consecutive: the first one after the cursor is found by
        // subtraction, not by a search.
        let skip = usize::try_from(self.cursor.saturating_add(1).saturating_sub(front.id))
            .unwrap_or(usize::MAX);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for event in history.events.iter().skip(skip) {
            if event.id > through || (!batch.is_empty() && bytes + event.bytes() > max_bytes) {
                break;
            }
            bytes += event.bytes();
            batch.push(event.clone());
        }
        if let Some(last) = batch.last() {
            self.cursor = last.id;
        }
        batch
    }

    /// Takes a batch as [`take`](Self::take) does, or, when there is none, arranges for
    /// `cx`'s task to be woken by the next publish.
    pub fn poll_take(&mut self, cx: &mut Context<'_>, max_bytes: usize) -> Poll<Vec<Arc<Event>>> {
        // Registered before looking, so a publish in between wakes the task.
        self.waker.register(cx.waker());
        let batch = self.take(max_bytes, u64::MAX);
        if batch.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(batch)
        }
    }

    /// Waits until there are events after the cursor and takes a batch of at most
    /// `max_bytes`.
    pub async fn next(&mut self, max_bytes: usize) -> Vec<Arc<Event>> {
        std::future::poll_fn(|cx| self.poll_take(cx, max_bytes)).await
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = self.log.lock_subscribers();
        subscribers.slots[self.slot] = None;
        subscribers.free.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    fn log_of(events: usize, first_id: u64) -> Arc<EventLog> {
        EventLog::starting_at(
            HistoryLimits {
                events,
                ..HistoryLimits::DEFAULT
            },
            first_id,
        )
    }

    /// Everything after `after`, in batches of any size.
    fn all_after(log: &Arc<EventLog>, after: Option<u64>) -> Vec<u64> {
        ids(&log.subscribe(after).take(usize::MAX, u64::MAX))
    }

    #[test]
    fn history_is_bounded_and_ids_increase() {
        let log = log_of(3, 10);
        for n in 0..5 {
            log.publish(EventKind::Chat, &json!({ "n": n })).unwrap();
        }
        assert_eq!(all_after(&log, None), [12, 13, 14]);
        assert_eq!(all_after(&log, Some(12)), [13, 14]);
        assert_eq!(all_after(&log, Some(14)), Vec::<u64>::new());
        // Resuming from an event that fell out of the history continues at the oldest kept.
        assert_eq!(all_after(&log, Some(5)), [12, 13, 14]);
        assert_eq!(log.last_id(), Some(14));
    }

    fn chat_of(len: usize) -> serde_json::Value {
        json!({ "message": "m".repeat(len) })
    }

    #[test]
    fn history_is_bounded_in_bytes_oldest_dropped_first() {
        let log = EventLog::starting_at(
            HistoryLimits {
                events: 1000,
                bytes: 10_000,
                event_bytes: 4_000,
            },
            // Ids of three digits all along: frames of one length.
            100,
        );
        let mut published = Vec::new();
        for _ in 0..40 {
            published.push(log.publish(EventKind::Chat, &chat_of(900)).unwrap());
        }
        let frame = published[0].bytes();
        assert!(frame > 900 && frame < 1000, "{frame}");
        let (events, bytes) = log.kept();
        assert_eq!(events, 10_000 / frame, "as many as fit in 10 000 bytes");
        assert_eq!(bytes, events * frame);
        assert_eq!(
            log.history_bytes_gauge().get(),
            i64::try_from(bytes).unwrap()
        );
        assert_eq!(
            all_after(&log, None),
            ids(&published[40 - events..]),
            "the newest are kept"
        );
        // A large event pushes out as many small ones as it needs.
        let large = log.publish(EventKind::Chat, &chat_of(3_900)).unwrap();
        let (after_events, after_bytes) = log.kept();
        assert!(after_bytes <= 10_000, "{after_bytes}");
        assert_eq!(after_bytes, large.bytes() + (after_events - 1) * frame);
        assert_eq!(log.last_id(), Some(large.id));
    }

    #[test]
    fn an_event_over_the_limit_is_refused_by_its_encoded_size_and_changes_nothing() {
        let log = EventLog::starting_at(
            HistoryLimits {
                events: 10,
                bytes: 100_000,
                event_bytes: 1_000,
            },
            1,
        );
        log.publish(EventKind::Chat, &chat_of(10)).unwrap();
        // 200 control characters are 200 bytes of message and 1 200 of JSON (`\u0001`).
        let control = json!({ "message": "\u{1}".repeat(200) });
        let refused = log.publish(EventKind::Chat, &control).unwrap_err();
        assert!(refused.bytes > 1_200, "{refused:?}");
        assert_eq!(refused.limit, 1_000);
        assert!(
            refused.to_string().contains("VX11_MAX_EVENT_BYTES"),
            "{refused}"
        );
        assert_eq!(log.kept().0, 1, "nothing stored");
        assert_eq!(log.last_id(), Some(1));
        // The next event gets the next id: a refusal uses none.
        assert_eq!(log.publish(EventKind::Chat, &chat_of(10)).unwrap().id, 2);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("refused", "", log.refused_counter());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("refused_total{event=\"chat\"} 1"), "{text}");
    }

    #[test]
    fn the_history_is_read_by_cursor_a_bounded_batch_at_a_time() {
        let log = log_of(100, 1);
        for _ in 0..10 {
            log.publish(EventKind::Chat, &chat_of(100)).unwrap();
        }
        let frame = log.subscribe(None).take(1, u64::MAX)[0].bytes();
        let mut sub = log.subscribe(None);
        assert_eq!(ids(&sub.take(3 * frame, u64::MAX)), [1, 2, 3]);
        assert_eq!(ids(&sub.take(3 * frame + 1, u64::MAX)), [4, 5, 6]);
        // Less room than one event still takes one, so a stream never waits forever.
        assert_eq!(ids(&sub.take(1, u64::MAX)), [7]);
        // Up to an id: a replay ends at the event that was newest when it started.
        assert_eq!(ids(&sub.take(usize::MAX, 8)), [8]);
        assert_eq!(ids(&sub.take(usize::MAX, 8)), Vec::<u64>::new());
        assert_eq!(sub.cursor(), 8);
        assert_eq!(ids(&sub.take(usize::MAX, u64::MAX)), [9, 10]);
        assert_eq!(ids(&sub.take(usize::MAX, u64::MAX)), Vec::<u64>::new());
    }

    #[test]
    fn an_event_is_encoded_once_as_its_sse_frame() {
        let log = log_of(3, 10);
        let event = log
            .publish(EventKind::Chat, &json!({ "message": "a\nb" }))
            .unwrap();
        assert_eq!(
            event.frame,
            "id: 10\nevent: chat\ndata: {\"message\":\"a\\nb\"}\n\n"
        );
        assert_eq!(event.data, r#"{"message":"a\nb"}"#);
    }

    #[test]
    fn subscriber_slots_are_released_and_reused() {
        let log = log_of(3, 1);
        let first = log.subscribe(None);
        let second = log.subscribe(None);
        drop(first);
        assert_eq!(log.subscribers(), 1);
        let third = log.subscribe(None);
        assert_eq!(log.subscribers(), 2);
        assert_eq!(
            log.lock_subscribers().slots.len(),
            2,
            "the freed slot is reused"
        );
        drop((second, third));
        assert_eq!(log.subscribers(), 0);
    }

    #[test]
    fn ids_start_from_the_clock() {
        let before = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        let log = EventLog::new(HistoryLimits::DEFAULT);
        assert!(log.publish(EventKind::Chat, &json!({})).unwrap().id >= before);
    }

    #[tokio::test]
    async fn live_events_follow_the_replay() {
        let log = log_of(100, 1);
        log.publish(EventKind::Chat, &json!({})).unwrap();
        let mut sub = log.subscribe(None);
        assert_eq!(ids(&sub.take(usize::MAX, u64::MAX)), [1]);
        log.publish(EventKind::Tokens, &json!({})).unwrap();
        log.publish(EventKind::Chat, &json!({})).unwrap();
        assert_eq!(ids(&sub.next(usize::MAX).await), [2, 3]);
        assert_eq!(sub.cursor(), 3);
        assert_eq!(log.subscribers(), 1);
        drop(sub);
        assert_eq!(log.subscribers(), 0);
    }

    /// Subscribers that join while others publish see every event exactly once, in order,
    /// from where they joined, in batches of any size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_event_lost_or_repeated_between_replay_and_live() {
        const EVENTS: u64 = 2000;
        let log = log_of(EVENTS as usize + 1, 1);
        let publisher = {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..EVENTS {
                    log.publish(EventKind::Chat, &json!({ "n": n })).unwrap();
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut readers = Vec::new();
        for (joined_after, batch_bytes) in [(None, usize::MAX), (Some(100), 1), (Some(1500), 200)] {
            let log = log.clone();
            readers.push(tokio::spawn(async move {
                let mut sub = log.subscribe(joined_after);
                let mut seen = Vec::new();
                while seen.last() != Some(&EVENTS) {
                    seen.extend(ids(&sub.next(batch_bytes).await));
                }
                (joined_after, seen)
            }));
            tokio::task::yield_now().await;
        }
        publisher.await.unwrap();
        for reader in readers {
            let (after, seen) = reader.await.unwrap();
            let first = after.unwrap_or(0) + 1;
            assert_eq!(
                seen,
                (first..=EVENTS).collect::<Vec<_>>(),
                "after {after:?}"
            );
        }
    }
}
