//! `GET /operator/api/health`: what the backend serves, for a caller with a token.

use axum::Json;
use axum::extract::{Extension, State};
use serde_json::{Value, json};
use vx11_service::Authenticated;

use crate::state::AppState;

pub async fn operator_health(
    State(state): State<AppState>,
    Extension(caller): Extension<Authenticated>,
) -> Json<Value> {
    let snapshot = state.store.snapshot();
    let reload = state.store.health();
    Json(json!({
        "status": "ok",
        "service": "vx11-operator-backend",
        "mode": state.settings.policy_mode.as_str(),
        "generation": snapshot.generation,
        "tokens": snapshot.set.len(),
        "loadedAt": snapshot.loaded_at,
        "lastError": reload.last_error,
        "openStreams": state.metrics.streams.open(),
        "lastEventId": state.events.last_id(),
        "caller": {
            "name": &*caller.name,
            "fingerprint": caller.fingerprint.to_string(),
        },
    }))
}
