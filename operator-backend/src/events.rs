//! The operator event log: a bounded in-memory history with increasing ids, delivered live
//! to every open stream.
//!
//! Delivery is by cursor rather than by a message channel: a subscriber remembers the id of
//! the last event it took, and when the log says "something new" it takes every newer event
//! from the history. Replay and live delivery are then one code path, so no event between
//! them can be lost or repeated, and a slow stream never overflows a channel; it can only
//! fall behind the history (more than its capacity of events published while it did not
//! read), and then it continues from the oldest event still kept.
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

use crate::sse;

/// The `event:` field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A message posted to `/operator/api/chat`.
    Chat,
    /// The token set changed (names, fingerprints and states; never values).
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    event: &'static str,
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
}

#[derive(Debug)]
struct History {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    next_id: u64,
}

/// The wakers of the open subscriptions, in slots a subscription keeps until dropped.
#[derive(Debug, Default)]
struct Subscribers {
    slots: Vec<Option<Arc<AtomicWaker>>>,
    free: Vec<usize>,
}

impl EventLog {
    /// A log keeping the newest `capacity` events. Ids start at the current Unix time in
    /// milliseconds, so they keep increasing across restarts: a client resuming with an id
    /// from before a restart gets the whole new history rather than nothing.
    pub fn new(capacity: usize) -> Arc<Self> {
        let first_id = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(1);
        Self::starting_at(capacity, first_id)
    }

    pub fn starting_at(capacity: usize, first_id: u64) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            history: RwLock::new(History {
                events: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                next_id: first_id.max(1),
            }),
            latest: AtomicU64::new(0),
            subscribers: Mutex::default(),
            published: Family::default(),
        })
    }

    /// Appends an event to the history and wakes every subscriber.
    pub fn publish(&self, kind: EventKind, data: &serde_json::Value) -> Arc<Event> {
        // Compact JSON has no line break, so the data is one `data:` line.
        let json = data.to_string();
        let event = {
            let mut history = self.write();
            let id = history.next_id;
            let frame = sse::frame(Some(id), kind.as_str(), &json);
            let data_end = frame.len() - "\n\n".len();
            let event = Arc::new(Event {
                id,
                kind,
                data: frame.slice(data_end - json.len()..data_end),
                frame,
            });
            history.next_id += 1;
            if history.events.len() == history.capacity {
                history.events.pop_front();
            }
            history.events.push_back(event.clone());
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
        event
    }

    /// Every event after `after` (all that are kept, without it), then each new one.
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

    /// `<prefix>_events_published_total{event}`, for the registry.
    pub fn published_counter(&self) -> Family<EventLabels, Counter> {
        self.published.clone()
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
    /// The events after the cursor that are in the history now; moves the cursor past them.
    pub fn take(&mut self) -> Vec<Arc<Event>> {
        if self.log.latest.load(Ordering::Acquire) <= self.cursor {
            return Vec::new();
        }
        let history = self.log.read();
        let (Some(front), Some(back)) = (history.events.front(), history.events.back()) else {
            return Vec::new();
        };
        if back.id <= self.cursor {
            return Vec::new();
        }
        let skip = usize::try_from(self.cursor.saturating_add(1).saturating_sub(front.id))
            .unwrap_or(usize::MAX);
        let batch: Vec<_> = history.events.iter().skip(skip).cloned().collect();
        if let Some(last) = batch.last() {
            self.cursor = last.id;
        }
        batch
    }

    /// Takes the events after the cursor, or, when there are none, arranges for `cx`'s
    /// task to be woken by the next publish.
    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Vec<Arc<Event>>> {
        // Registered before looking, so a publish in between wakes the task.
        self.waker.register(cx.waker());
        let batch = self.take();
        if batch.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(batch)
        }
    }

    /// Waits until there are events after the cursor and takes them.
    pub async fn next(&mut self) -> Vec<Arc<Event>> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
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

    #[test]
    fn history_is_bounded_and_ids_increase() {
        let log = EventLog::starting_at(3, 10);
        for n in 0..5 {
            log.publish(EventKind::Chat, &json!({ "n": n }));
        }
        assert_eq!(ids(&log.subscribe(None).take()), [12, 13, 14]);
        assert_eq!(ids(&log.subscribe(Some(12)).take()), [13, 14]);
        assert_eq!(ids(&log.subscribe(Some(14)).take()), Vec::<u64>::new());
        // Resuming from an event that fell out of the history continues at the oldest kept.
        assert_eq!(ids(&log.subscribe(Some(5)).take()), [12, 13, 14]);
        assert_eq!(log.last_id(), Some(14));
    }

    #[test]
    fn an_event_is_encoded_once_as_its_sse_frame() {
        let log = EventLog::starting_at(3, 10);
        let event = log.publish(EventKind::Chat, &json!({ "message": "a\nb" }));
        assert_eq!(
            event.frame,
            "id: 10\nevent: chat\ndata: {\"message\":\"a\\nb\"}\n\n"
        );
        assert_eq!(event.data, r#"{"message":"a\nb"}"#);
    }

    #[test]
    fn subscriber_slots_are_released_and_reused() {
        let log = EventLog::starting_at(3, 1);
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
        let log = EventLog::new(10);
        assert!(log.publish(EventKind::Chat, &json!({})).id >= before);
    }

    #[tokio::test]
    async fn live_events_follow_the_replay() {
        let log = EventLog::starting_at(100, 1);
        log.publish(EventKind::Chat, &json!({}));
        let mut sub = log.subscribe(None);
        assert_eq!(ids(&sub.take()), [1]);
        log.publish(EventKind::Tokens, &json!({}));
        log.publish(EventKind::Chat, &json!({}));
        assert_eq!(ids(&sub.next().await), [2, 3]);
        assert_eq!(sub.cursor(), 3);
        assert_eq!(log.subscribers(), 1);
        drop(sub);
        assert_eq!(log.subscribers(), 0);
    }

    /// Subscribers that join while others publish see every event exactly once, in order,
    /// from where they joined.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_event_lost_or_repeated_between_replay_and_live() {
        const EVENTS: u64 = 2000;
        let log = EventLog::starting_at(EVENTS as usize + 1, 1);
        let publisher = {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..EVENTS {
                    log.publish(EventKind::Chat, &json!({ "n": n }));
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut readers = Vec::new();
        for joined_after in [None, Some(100), Some(1500)] {
            let log = log.clone();
            readers.push(tokio::spawn(async move {
                let mut sub = log.subscribe(joined_after);
                let mut seen = Vec::new();
                while seen.last() != Some(&EVENTS) {
                    seen.extend(ids(&sub.next().await));
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
