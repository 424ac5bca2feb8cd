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

use crate::{Serving, Shutdown, serve_until_shutdown};

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

/// `GET /generation`: the `tokens.json` generation this process serves, for the controller's
/// staged rotation (it publishes a new value once every consumer pod serves it). On the
/// metrics port, so the controller needs no credentials and no access to the API port; it
/// shows a generation and a count, never a digest or a value. `generation` is `null` when no
/// token file was read (legacy variables or a plain `tokens` list).
pub fn generation_router(store: Arc<TokenStore>) -> Router {
    Router::new()
        .route("/generation", get(served_generation))
        .with_state(store)
}

async fn served_generation(State(store): State<Arc<TokenStore>>) -> impl IntoResponse {
    let snapshot = store.snapshot();
    axum::Json(serde_json::json!({
        "generation": snapshot.generation,
        "tokens": snapshot.set.len(),
        "loadedAt": snapshot.loaded_at,
    }))
}

/// Serves `/metrics` and `/generation` on their own listener until shutdown, under the same
/// listener limits as the API port.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    store: Arc<TokenStore>,
    shutdown: Shutdown,
    serving: Serving,
) -> std::io::Result<()> {
    let app = metrics_router(registry).merge(generation_router(store));
    serve_until_shutdown(listener, app, shutdown, serving).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;
    use vx11_tokenset::{Origin, SetEntry, TokenDigest, TokenSet};

    async fn generation_of(store: Arc<TokenStore>) -> serde_json::Value {
        let response = generation_router(store)
            .oneshot(Request::get("/generation").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn generation_reports_the_served_file_and_no_digest() {
        let store = Arc::new(TokenStore::new());
        assert_eq!(
            generation_of(store.clone()).await["generation"],
            serde_json::Value::Null
        );
        let digest = TokenDigest::of(b"vx11_a-value-served-by-this-process");
        store.install(
            TokenSet::new(vec![SetEntry::new("operator", digest, Origin::TokenFile)]),
            Some(7),
        );
        let body = generation_of(store).await;
        assert_eq!(
            (body["generation"].as_u64(), body["tokens"].as_u64()),
            (Some(7), Some(1))
        );
        assert!(!body.to_string().contains(&digest.to_hex()[..12]));
    }
}
