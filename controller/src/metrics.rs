//! Prometheus metrics, served with `/health` and `/ready` on `VX11_METRICS_ADDR`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use vx11_tokenset::TokenState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenSetLabels {
    pub namespace: String,
    pub tokenset: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabels {
    pub namespace: String,
    pub tokenset: String,
}

/// A TokenSet as the metrics name it: (namespace, name).
pub type SetKey = (String, String);

/// Every `state` label of `vx11_controller_tokens`.
pub const TOKEN_STATES: [TokenState; 3] =
    [TokenState::Active, TokenState::Staged, TokenState::Retiring];

/// The controller's metrics, `vx11_controller_*`.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<ReasonLabel, Counter>,
    pub rotations: Family<CauseLabel, Counter>,
    /// Written with [`Metrics::set_tokens`], removed with [`Metrics::forget_deleted`].
    tokens: Family<TokenSetLabels, Gauge>,
    /// The sets that have `tokens` series. A `Family` cannot list its label sets, and the
    /// series of a deleted set must go: the controller is not called for it (no finalizer).
    sets_with_series: Mutex<BTreeSet<SetKey>>,
    pub duration: Histogram,
    pub leader: Gauge,
    /// From staging a value to publishing it.
    pub propagation: Histogram,
    /// Consumer pods of each set that do not serve its current generation.
    stale_consumers: Family<SetLabels, Gauge>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            rotations: Family::default(),
            tokens: Family::default(),
            sets_with_series: Mutex::default(),
            duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            leader: Gauge::default(),
            propagation: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0,
            ]),
            stale_consumers: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("vx11_controller");
        r.register(
            "reconciles",
            "Reconciles of Vx11TokenSets",
            metrics.reconciles.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failed reconciles, by reason",
            metrics.failures.clone(),
        );
        r.register(
            "rotations",
            "Token values replaced, by cause (scheduled, requested, client_value_lost, source_changed)",
            metrics.rotations.clone(),
        );
        r.register(
            "tokens",
            "Token values in each set's tokens.json, by state",
            metrics.tokens.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            metrics.duration.clone(),
        );
        r.register(
            "propagation_seconds",
            "From staging a new value (services accept it) to publishing it to the client Secret (every consumer serves it)",
            metrics.propagation.clone(),
        );
        r.register(
            "stale_consumers",
            "Consumer pods of each set that do not serve its current tokens.json generation",
            metrics.stale_consumers.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without election)",
            metrics.leader.clone(),
        );
        Arc::new(metrics)
    }

    pub fn observe(&self, elapsed: Duration) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sets `vx11_controller_tokens` of one set and state.
    pub fn set_tokens(&self, namespace: &str, tokenset: &str, state: TokenState, count: usize) {
        // Under the lock, so that a concurrent `forget_deleted` removes both or neither.
        let mut sets = self.lock_sets();
        sets.insert((namespace.to_owned(), tokenset.to_owned()));
        self.tokens
            .get_or_create(&TokenSetLabels {
                namespace: namespace.to_owned(),
                tokenset: tokenset.to_owned(),
                state: state.as_str().to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets `vx11_controller_stale_consumers` of one set.
    pub fn set_stale_consumers(&self, namespace: &str, tokenset: &str, count: usize) {
        let mut sets = self.lock_sets();
        sets.insert((namespace.to_owned(), tokenset.to_owned()));
        self.stale_consumers
            .get_or_create(&SetLabels {
                namespace: namespace.to_owned(),
                tokenset: tokenset.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Removes every series of the sets in `scope` (a namespace, `None` for all) for which
    /// `exists(namespace, name)` is false. Returns the sets removed.
    pub fn forget_deleted(
        &self,
        scope: Option<&str>,
        exists: impl Fn(&str, &str) -> bool,
    ) -> Vec<SetKey> {
        let mut sets = self.lock_sets();
        let gone = deleted_sets(&sets, scope, exists);
        for (namespace, tokenset) in &gone {
            for state in TOKEN_STATES {
                self.tokens.remove(&TokenSetLabels {
                    namespace: namespace.clone(),
                    tokenset: tokenset.clone(),
                    state: state.as_str().to_owned(),
                });
            }
            self.stale_consumers.remove(&SetLabels {
                namespace: namespace.clone(),
                tokenset: tokenset.clone(),
            });
            sets.remove(&(namespace.clone(), tokenset.clone()));
        }
        gone
    }

    fn lock_sets(&self) -> std::sync::MutexGuard<'_, BTreeSet<SetKey>> {
        // The set stays consistent whatever panicked while holding it: take it back.
        self.sets_with_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sets of `tracked` in `scope` (a namespace, `None` for all) that do not `exist`.
pub fn deleted_sets(
    tracked: &BTreeSet<SetKey>,
    scope: Option<&str>,
    exists: impl Fn(&str, &str) -> bool,
) -> Vec<SetKey> {
    tracked
        .iter()
        .filter(|(namespace, _)| scope.is_none_or(|s| s == namespace))
        .filter(|(namespace, name)| !exists(namespace, name))
        .cloned()
        .collect()
}

/// Readiness: set once the API server answered and this replica is either leading or a
/// healthy standby.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/metrics`, `/health` (liveness: the process serves) and `/ready`.
pub fn router(registry: Arc<Registry>, ready: Arc<Readiness>) -> Router {
    let probes = Router::new()
        .route(
            "/health",
            get(|| async { (StatusCode::OK, r#"{"status":"ok"}"#) }),
        )
        .route(
            "/ready",
            get(|State(ready): State<Arc<Readiness>>| async move {
                if ready.get() {
                    (StatusCode::OK, r#"{"status":"ready"}"#)
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"starting"}"#)
                }
            }),
        )
        .with_state(ready);
    vx11_service::metrics_router(registry).merge(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> SetKey {
        (namespace.to_owned(), name.to_owned())
    }

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn a_scope_finds_only_its_own_deleted_sets() {
        let tracked: BTreeSet<SetKey> = [key("a", "kept"), key("a", "gone"), key("b", "gone")]
            .into_iter()
            .collect();
        let exists = |_: &str, name: &str| name == "kept";
        assert_eq!(
            deleted_sets(&tracked, Some("a"), exists),
            [key("a", "gone")]
        );
        assert_eq!(
            deleted_sets(&tracked, None, exists),
            [key("a", "gone"), key("b", "gone")]
        );
        assert!(deleted_sets(&tracked, Some("c"), |_, _| false).is_empty());
        assert!(deleted_sets(&tracked, None, |_, _| true).is_empty());
    }

    #[test]
    fn every_series_of_a_deleted_set_is_removed_and_no_other() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        for (namespace, name) in [("a", "kept"), ("a", "gone"), ("b", "gone")] {
            metrics.set_tokens(namespace, name, TokenState::Active, 2);
            metrics.set_tokens(namespace, name, TokenState::Retiring, 1);
        }
        let exists = |_: &str, name: &str| name == "kept";

        assert_eq!(
            metrics.forget_deleted(Some("a"), exists),
            [key("a", "gone")]
        );
        let text = exposition(&registry);
        assert!(!text.contains(r#"namespace="a",tokenset="gone""#), "{text}");
        assert!(
            text.contains(r#"namespace="b",tokenset="gone",state="retiring""#),
            "{text}"
        );
        assert!(
            text.contains(r#"namespace="a",tokenset="kept",state="active""#),
            "{text}"
        );

        assert_eq!(metrics.forget_deleted(None, exists), [key("b", "gone")]);
        let text = exposition(&registry);
        assert!(!text.contains(r#"tokenset="gone""#), "{text}");
        assert_eq!(text.matches(r#"tokenset="kept""#).count(), 2, "{text}");
        assert!(metrics.forget_deleted(None, exists).is_empty());

        // A set recreated under the same name gets series again.
        metrics.set_tokens("b", "gone", TokenState::Active, 1);
        assert!(exposition(&registry).contains(r#"namespace="b",tokenset="gone",state="active""#));
    }
}
