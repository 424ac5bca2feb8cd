//! The set a service serves right now, swapped whole on reload: readers never block and
//! never see half a set.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::set::{TokenSet, Verdict};

/// One loaded set and what is known about it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub set: TokenSet,
    /// The token file's generation; `None` when no token file was read.
    pub generation: Option<u64>,
    /// When this set was installed; `None` for the empty set a service starts with.
    pub loaded_at: Option<DateTime<Utc>>,
    /// Grows by one with every installed set, whatever its source.
    pub serial: u64,
}

/// Reload outcomes, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadHealth {
    /// Why the newest content was not installed, while that is still so.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Sets installed since start (the first load included).
    pub reloads_total: u64,
    /// Failed attempts since start (each bad content counted once).
    pub reload_errors_total: u64,
}

/// The current token set of a service.
#[derive(Debug)]
pub struct TokenStore {
    current: ArcSwap<Snapshot>,
    health: Mutex<ReloadHealth>,
    changes: watch::Sender<u64>,
}

impl Default for TokenStore {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            health: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl TokenStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Checks a presented token against the current set, at `now`.
    pub fn check<R>(
        &self,
        presented: &str,
        now: DateTime<Utc>,
        f: impl FnOnce(Verdict<'_>) -> R,
    ) -> R {
        let current = self.current.load();
        f(current.set.check(presented, now))
    }

    /// Ready once a non-empty set is loaded.
    pub fn is_ready(&self) -> bool {
        !self.current.load().set.is_empty()
    }

    pub fn health(&self) -> ReloadHealth {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notified with the new serial whenever a set is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Installs a new set and clears any error.
    pub fn install(&self, set: TokenSet, generation: Option<u64>) -> Arc<Snapshot> {
        let serial = self.current.load().serial + 1;
        let snapshot = Arc::new(Snapshot {
            set,
            generation,
            loaded_at: Some(Utc::now()),
            serial,
        });
        self.current.store(snapshot.clone());
        {
            let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
            health.reloads_total += 1;
            health.last_error = None;
            health.last_error_at = None;
        }
        self.changes.send_replace(serial);
        snapshot
    }

    /// Records a failed load; the current set stays.
    pub fn record_error(&self, error: String) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.reload_errors_total += 1;
        health.last_error = Some(error);
        health.last_error_at = Some(Utc::now());
    }

    /// Clears an error whose cause went away without a new set (the good content came back).
    pub fn clear_error(&self) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.last_error = None;
        health.last_error_at = None;
    }
}
