//! Prometheus metrics, served with `/health` and `/ready` on `VX11_METRICS_ADDR`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The controller's metrics, `vx11_controller_*`.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<ReasonLabel, Counter>,
    pub rotations: Family<CauseLabel, Counter>,
    pub tokens: Family<TokenSetLabels, Gauge>,
    pub duration: Histogram,
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            rotations: Family::default(),
            tokens: Family::default(),
            duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            leader: Gauge::default(),
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
    vx11_tokenset::service::metrics_router(registry).merge(probes)
}
