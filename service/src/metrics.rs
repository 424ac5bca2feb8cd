//! Prometheus metrics of the token set (read at scrape time) and the `/metrics` listener.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use vx11_tokenset::TokenStore;

use crate::Shutdown;

/// `vx11_tokens_*`: generation, count, readiness, reloads and reload errors.
#[derive(Debug)]
pub struct TokenMetrics(pub Arc<TokenStore>);

impl Collector for TokenMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let health = self.0.health();
        let gauges: [(&str, &str, i64); 4] = [
            (
                "vx11_tokens_generation",
                "Generation of the token file being served (0 without one)",
                snapshot.generation.unwrap_or(0) as i64,
            ),
            (
                "vx11_tokens",
                "Token digests in the set being served",
                snapshot.set.len() as i64,
            ),
            (
                "vx11_tokens_load_error",
                "1 while the newest token content could not be loaded (the last good set is served)",
                i64::from(health.last_error.is_some()),
            ),
            (
                "vx11_tokens_loaded_timestamp_seconds",
                "When the set being served was loaded",
                snapshot.loaded_at.map_or(0, |t| t.timestamp()),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            (
                "vx11_token_reloads",
                "Token sets installed",
                health.reloads_total,
            ),
            (
                "vx11_token_reload_errors",
                "Token contents that failed to load",
                health.reload_errors_total,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// `GET /metrics` in the OpenMetrics text format.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(registry)
}

async fn render(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves `/metrics` on its own listener until shutdown.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(registry))
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
}
