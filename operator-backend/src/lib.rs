//! The vx11 operator backend: `GET /operator/api/health`, `POST /operator/api/chat` and
//! the operator event stream (`/operator/api/events[/stream]`, SSE), every one behind the
//! token check, plus the public `/health` and `/ready`.
//!
//! - [`config`]: flags and environment.
//! - [`events`]: the bounded event history and its subscribers.
//! - [`stream`]: the SSE responses, closed when their token is revoked or expires.
//! - [`chat`], [`health`]: the other API routes; [`token_events`]: `tokens` events.
//! - [`sse`]: the event-stream wire format; `alarm`: what else a stream waits on.
//! - [`metrics`]: Prometheus; [`run`]: the process (listeners, reload, shutdown).

mod alarm;
#[cfg(test)]
mod app_tests;
pub mod chat;
pub mod config;
pub mod events;
pub mod health;
pub mod metrics;
pub mod run;
pub mod sse;
pub mod stream;
pub mod token_events;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use vx11_service::{ApiError, ErrorCode, Shutdown, access_log, health_routes, require_token};
use vx11_tokenset::TokenStore;

use crate::config::{Config, PolicyMode};
use crate::events::EventLog;
use crate::metrics::BackendMetrics;

/// What the routes need to know of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy_mode: PolicyMode,
    pub event_history: usize,
    pub sse_keep_alive: Duration,
    /// Named in the not-ready answer of `/ready`.
    pub tokens_dir: String,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            policy_mode: config.service.policy_mode,
            event_history: config.event_history,
            sse_keep_alive: config.sse_keep_alive,
            tokens_dir: config.service.tokens_dir.display().to_string(),
        }
    }
}

/// Shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<TokenStore>,
    pub events: Arc<EventLog>,
    pub metrics: Arc<BackendMetrics>,
    pub shutdown: Shutdown,
    pub settings: Arc<Settings>,
}

impl AppState {
    pub fn new(store: Arc<TokenStore>, settings: Settings, shutdown: Shutdown) -> Self {
        let events = EventLog::new(settings.event_history);
        let metrics = Arc::new(BackendMetrics::register(store.clone(), &events));
        Self {
            store,
            events,
            metrics,
            shutdown,
            settings: Arc::new(settings),
        }
    }
}

/// The backend's routes.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/operator/api/health", get(health::operator_health))
        .route("/operator/api/chat", post(chat::post_chat))
        .route("/operator/api/events/stream", get(stream::events_stream))
        .route("/operator/api/events", get(stream::events))
        .route_layer(from_fn_with_state(state.store.clone(), require_token))
        .with_state(state.clone());
    Router::new()
        .merge(health_routes(
            state.store.clone(),
            state.settings.tokens_dir.clone(),
        ))
        .merge(api)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(from_fn_with_state(state.metrics.http.clone(), access_log))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such route; the operator backend serves /health, /ready, /operator/api/health, \
         /operator/api/chat, /operator/api/events and /operator/api/events/stream",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not take that method: chat is POST, everything else GET",
    )
}
