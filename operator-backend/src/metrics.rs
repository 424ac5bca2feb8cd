//! The backend's Prometheus metrics: requests and auth failures (shared with the gateway),
//! open streams and how they ended, events published, and the token set.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use vx11_service::{ErrorCode, HttpMetrics, ListenerMetrics, StreamRefusal, TokenMetrics};
use vx11_tokenset::TokenStore;

use crate::events::EventLog;

pub const PREFIX: &str = "vx11_backend";

/// The stream gauges and counters; request counters live in [`HttpMetrics`].
#[derive(Debug, Default)]
pub struct StreamMetrics {
    open: Gauge,
    ended: Family<EndLabels, Counter>,
    refused: Family<EndLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    reason: &'static str,
}

/// Why a stream ended, for `vx11_backend_streams_ended_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client went away (the response was dropped before it ended).
    Disconnected,
    /// `follow=false`: the history was sent.
    Replayed,
    /// The service is shutting down.
    Shutdown,
    TokenRevoked,
    TokenExpired,
    /// The client read nothing for `VX11_STREAM_STALL_TIMEOUT` while events waited.
    Stalled,
}

impl StreamEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Disconnected => "disconnected",
            StreamEnd::Replayed => "replayed",
            StreamEnd::Shutdown => "shutdown",
            StreamEnd::TokenRevoked => ErrorCode::TokenRevoked.as_str(),
            StreamEnd::TokenExpired => ErrorCode::ExpiredToken.as_str(),
            StreamEnd::Stalled => "stalled",
        }
    }
}

impl StreamMetrics {
    /// Counts a stream as open until the returned guard is dropped.
    pub fn opened(self: &Arc<Self>) -> OpenStream {
        self.open.inc();
        OpenStream {
            metrics: self.clone(),
            end: StreamEnd::Disconnected,
            opened_at: Instant::now(),
        }
    }

    /// Counts a stream refused before it started, by the refusal's error code.
    pub fn refused(&self, refusal: StreamRefusal) {
        let reason = match refusal {
            StreamRefusal::Full { .. } => ErrorCode::TooManyStreams,
            StreamRefusal::TokenFull { .. } => ErrorCode::TooManyStreamsForToken,
        };
        self.refused
            .get_or_create(&EndLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Streams open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }
}

/// Held by an open stream; dropping it (the stream ended or its client went away) takes
/// the stream out of the gauge.
#[derive(Debug)]
pub struct OpenStream {
    metrics: Arc<StreamMetrics>,
    end: StreamEnd,
    opened_at: Instant,
}

impl OpenStream {
    /// Records why the stream is ending; without this, a drop counts as a disconnect.
    pub fn ending(&mut self, end: StreamEnd) {
        self.end = end;
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open.dec();
        self.metrics
            .ended
            .get_or_create(&EndLabels {
                reason: self.end.as_str(),
            })
            .inc();
        tracing::debug!(
            reason = self.end.as_str(),
            open_ms = self.opened_at.elapsed().as_millis() as u64,
            "event stream ended"
        );
    }
}

/// Everything the backend exports, registered in one registry.
#[derive(Debug)]
pub struct BackendMetrics {
    pub registry: Arc<Registry>,
    pub http: Arc<HttpMetrics>,
    pub streams: Arc<StreamMetrics>,
    /// Connections of both listeners (`vx11_connections_*`).
    pub listeners: ListenerMetrics,
}

impl BackendMetrics {
    pub fn register(store: Arc<TokenStore>, events: &EventLog) -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry, PREFIX);
        let streams = Arc::new(StreamMetrics::default());
        registry.register(
            format!("{PREFIX}_open_streams"),
            "Event streams open now",
            streams.open.clone(),
        );
        registry.register(
            format!("{PREFIX}_streams_ended"),
            "Event streams ended, by reason",
            streams.ended.clone(),
        );
        registry.register(
            format!("{PREFIX}_streams_refused"),
            "Event streams refused before they started (VX11_MAX_STREAMS, VX11_MAX_STREAMS_PER_TOKEN), by reason",
            streams.refused.clone(),
        );
        registry.register(
            format!("{PREFIX}_events_refused"),
            "Events refused because their encoded frame was over VX11_MAX_EVENT_BYTES, by event type",
            events.refused_counter(),
        );
        registry.register(
            format!("{PREFIX}_event_history_bytes"),
            "Bytes of encoded events in the history (at most VX11_EVENT_HISTORY_BYTES)",
            events.history_bytes_gauge(),
        );
        registry.register(
            format!("{PREFIX}_events_published"),
            "Events published to the operator event stream, by event type",
            events.published_counter(),
        );
        registry.register_collector(Box::new(TokenMetrics(store)));
        let listeners = ListenerMetrics::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            http,
            streams,
            listeners,
        }
    }
}
