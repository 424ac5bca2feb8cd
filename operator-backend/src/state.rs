//! What every request shares: the token set, the event log, the open streams' slots, the
//! metrics, the shutdown signal, and the settings the routes read.

use std::sync::Arc;
use std::time::Duration;

use vx11_service::{Shutdown, StreamLimits, StreamSlots};
use vx11_tokenset::TokenStore;

use crate::config::{Config, PolicyMode};
use crate::events::{EventLog, HistoryLimits};
use crate::metrics::BackendMetrics;

/// What the routes need to know of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy_mode: PolicyMode,
    pub history: HistoryLimits,
    pub sse_keep_alive: Duration,
    /// Stall timeout, buffer and the caps on open streams.
    pub streams: StreamLimits,
    /// Named in the not-ready answer of `/ready`.
    pub tokens_dir: String,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            policy_mode: config.service.policy_mode,
            history: config.history,
            sse_keep_alive: config.sse_keep_alive,
            streams: config.service.streams.clone(),
            tokens_dir: config.service.tokens_dir.display().to_string(),
        }
    }
}

/// Shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<TokenStore>,
    pub events: Arc<EventLog>,
    /// The open streams, against `VX11_MAX_STREAMS` and `VX11_MAX_STREAMS_PER_TOKEN`.
    pub slots: Arc<StreamSlots>,
    pub metrics: Arc<BackendMetrics>,
    pub shutdown: Shutdown,
    pub settings: Arc<Settings>,
}

impl AppState {
    pub fn new(store: Arc<TokenStore>, settings: Settings, shutdown: Shutdown) -> Self {
        let events = EventLog::new(settings.history);
        let slots = StreamSlots::new(&settings.streams);
        let metrics = Arc::new(BackendMetrics::register(store.clone(), &events));
        Self {
            store,
            events,
            slots,
            metrics,
            shutdown,
            settings: Arc::new(settings),
        }
    }
}
