//! `GET /health` (liveness, public) and `GET /ready` (a non-empty token set is loaded).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use vx11_tokenset::TokenStore;

/// The two public probe routes; `tokens_dir` is named in the not-ready answer.
pub fn health_routes(store: Arc<TokenStore>, tokens_dir: String) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .with_state((store, Arc::<str>::from(tokens_dir)))
}

async fn ready(
    State((store, dir)): State<(Arc<TokenStore>, Arc<str>)>,
) -> (StatusCode, Json<Value>) {
    let snapshot = store.snapshot();
    let health = store.health();
    let body = json!({
        "status": if snapshot.set.is_empty() { "not_ready" } else { "ready" },
        "generation": snapshot.generation,
        "tokens": snapshot.set.len(),
        "loadedAt": snapshot.loaded_at,
        "lastError": health.last_error,
    });
    if snapshot.set.is_empty() {
        let mut body = body;
        body["detail"] = json!(format!(
            "no tokens loaded: put tokens.json (or a plain `tokens` list) in {dir}, or set VX11_OPERATOR_TOKEN"
        ));
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    } else {
        (StatusCode::OK, Json(body))
    }
}
