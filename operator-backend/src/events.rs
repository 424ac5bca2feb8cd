//! The operator event log: a bounded in-memory history with increasing ids, delivered live
//! to every open stream.
//!
//! Delivery is by cursor rather than by a message channel: a subscriber remembers the id of
//! the last event it took, and when the log says "something new" it takes every newer event
//! from the history. Replay and live delivery are then one code path, so no event between
//! them can be lost or repeated, and a slow stream never overflows a channel; it can only
//! fall behind the history (more than its capacity of events published while it did not
//! read), and then it continues from the oldest event still kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;

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

/// One published event; `data` is its JSON, serialized once for every stream.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: EventKind,
    pub data: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    event: &'static str,
}

/// The history and its subscribers.
#[derive(Debug)]
pub struct EventLog {
    history: Mutex<History>,
    /// The id of the newest event; subscribers wait on its changes.
    latest: watch::Sender<u64>,
    published: Family<EventLabels, Counter>,
}

#[derive(Debug)]
struct History {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    next_id: u64,
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
            history: Mutex::new(History {
                events: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                next_id: first_id.max(1),
            }),
            latest: watch::Sender::new(0),
            published: Family::default(),
        })
    }

    /// Appends an event to the history and wakes every subscriber.
    pub fn publish(&self, kind: EventKind, data: &serde_json::Value) -> Arc<Event> {
        let data = data.to_string();
        let event = {
            let mut history = self.lock();
            let event = Arc::new(Event {
                id: history.next_id,
                kind,
                data,
            });
            history.next_id += 1;
            if history.events.len() == history.capacity {
                history.events.pop_front();
            }
            history.events.push_back(event.clone());
            // Under the lock, so the value only grows.
            self.latest.send_replace(event.id);
            event
        };
        self.published
            .get_or_create(&EventLabels {
                event: kind.as_str(),
            })
            .inc();
        event
    }

    /// Every event after `after` (all that are kept, without it), then each new one.
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Subscription {
        let _history = self.lock();
        Subscription {
            log: self.clone(),
            cursor: after.unwrap_or(0),
            changes: self.latest.subscribe(),
        }
    }

    /// Open subscriptions (each stream holds one until it is dropped).
    pub fn subscribers(&self) -> usize {
        self.latest.receiver_count()
    }

    /// The id of the newest event, if any was published.
    pub fn last_id(&self) -> Option<u64> {
        self.lock().events.back().map(|e| e.id)
    }

    /// `<prefix>_events_published_total{event}`, for the registry.
    pub fn published_counter(&self) -> Family<EventLabels, Counter> {
        self.published.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One reader's position in the log; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    log: Arc<EventLog>,
    /// The id of the last event taken (0: none yet).
    cursor: u64,
    changes: watch::Receiver<u64>,
}

impl Subscription {
    /// The events after the cursor that are in the history now; moves the cursor past them.
    pub fn take(&mut self) -> Vec<Arc<Event>> {
        self.changes.borrow_and_update();
        let history = self.log.lock();
        let Some(front) = history.events.front() else {
            return Vec::new();
        };
        let skip = usize::try_from(self.cursor.saturating_add(1).saturating_sub(front.id))
            .unwrap_or(usize::MAX);
        let batch: Vec<_> = history.events.iter().skip(skip).cloned().collect();
        if let Some(last) = batch.last() {
            self.cursor = last.id;
        }
        batch
    }

    /// Waits until there are events after the cursor and takes them.
    pub async fn next(&mut self) -> Vec<Arc<Event>> {
        loop {
            let batch = self.take();
            if !batch.is_empty() {
                return batch;
            }
            // The sender lives in the log this subscription holds, so this cannot fail.
            if self.changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
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
