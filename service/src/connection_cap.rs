//! How many connections one listener keeps open at once ([`ListenerLimits::max_connections`],
//! counted over all the workers that accept on it), what it does past that (closes the new
//! connection at once), and what it tells about it: `vx11_connections_refused_total`, and
//! one warning per [`REFUSAL_LOG_INTERVAL`] with the count since the last one, never one per
//! connection (an attacker must not be able to flood the logs).
//!
//! [`ListenerLimits::max_connections`]: crate::ListenerLimits::max_connections

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::connection::Expiry;

/// At most one "connection limit reached" warning per listener this often.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// `api` or `metrics`.
    pub listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub listener: &'static str,
    /// `idle`, `header_timeout` or `stalled`.
    pub reason: &'static str,
}

/// The listeners' metrics of one process: `vx11_connections_open`,
/// `vx11_connections_refused_total`, `vx11_connections_closed_total{reason}`,
/// `vx11_connections_moved_total`.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    open: Family<ListenerLabel, Gauge>,
    refused: Family<ListenerLabel, Counter>,
    closed: Family<ClosedLabels, Counter>,
    moved: Family<ListenerLabel, Counter>,
}

impl ListenerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "vx11_connections_open",
            "Connections open on each listener",
            metrics.open.clone(),
        );
        registry.register(
            "vx11_connections_refused",
            "Connections closed on arrival because the listener had VX11_MAX_CONNECTIONS open",
            metrics.refused.clone(),
        );
        registry.register(
            "vx11_connections_closed",
            "Connections closed by a listener limit: idle (VX11_IDLE_TIMEOUT), a request head too slow (VX11_HEADER_READ_TIMEOUT), or a peer reading nothing (VX11_STREAM_STALL_TIMEOUT)",
            metrics.closed.clone(),
        );
        registry.register(
            "vx11_connections_moved",
            "Keep-alive connections handed to the worker of the CPU their packets now arrive on (VX11_WORKER_CPUS=auto)",
            metrics.moved.clone(),
        );
        metrics
    }
}

/// The open connections of one listener, shared by the workers accepting on it.
#[derive(Debug)]
pub struct ConnectionCap {
    listener: &'static str,
    max: usize,
    open: AtomicUsize,
    metrics: ListenerMetrics,
    /// This listener's `vx11_connections_open`, looked up once (not twice per connection).
    open_gauge: Gauge,
    refusals: Mutex<Refusals>,
}

#[derive(Debug)]
struct Refusals {
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl ConnectionCap {
    /// `listener` names it in metrics and logs (`api` or `metrics`).
    pub fn new(listener: &'static str, max: usize, metrics: ListenerMetrics) -> Arc<Self> {
        let open_gauge = metrics
            .open
            .get_or_create(&ListenerLabel { listener })
            .clone();
        Arc::new(Self {
            listener,
            max,
            open: AtomicUsize::new(0),
            metrics,
            open_gauge,
            refusals: Mutex::new(Refusals {
                unlogged: 0,
                last_logged: None,
            }),
        })
    }

    /// A place for one more connection, or `None` (counted and, at most once per interval,
    /// logged) when `max` are open.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.refused();
            return None;
        }
        self.open_gauge.inc();
        Some(Admitted(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A connection closed by its clock.
    pub fn closed(&self, expiry: Expiry) {
        self.metrics
            .closed
            .get_or_create(&ClosedLabels {
                listener: self.listener,
                reason: expiry.as_str(),
            })
            .inc();
    }

    /// A keep-alive connection went to another worker (`crate::moves`).
    pub(crate) fn moved(&self) {
        self.metrics
            .moved
            .get_or_create(&ListenerLabel {
                listener: self.listener,
            })
            .inc();
    }

    fn refused(&self) {
        self.metrics
            .refused
            .get_or_create(&ListenerLabel {
                listener: self.listener,
            })
            .inc();
        let mut refusals = self
            .refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        refusals.unlogged += 1;
        let now = Instant::now();
        let due = refusals
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                listener = self.listener,
                max_connections = self.max,
                refused = refusals.unlogged,
                "connection limit reached: new connections are closed on arrival (VX11_MAX_CONNECTIONS); \
                 raise it or add replicas if this is not an attack"
            );
            refusals.unlogged = 0;
            refusals.last_logged = Some(now);
        }
    }
}

/// One admitted connection; its place is given back on drop.
#[derive(Debug)]
pub struct Admitted(Arc<ConnectionCap>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.open_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn past_the_cap_connections_are_refused_and_counted_and_places_come_back() {
        let mut registry = Registry::default();
        let cap = ConnectionCap::new("api", 2, ListenerMetrics::register(&mut registry));
        let first = cap.admit().unwrap();
        let _second = cap.admit().unwrap();
        for _ in 0..5 {
            assert!(cap.admit().is_none());
        }
        let text = scrape(&registry);
        assert!(
            text.contains("vx11_connections_refused_total{listener=\"api\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("vx11_connections_open{listener=\"api\"} 2"),
            "{text}"
        );
        drop(first);
        assert_eq!(cap.open(), 1);
        assert!(cap.admit().is_some());
    }
}
