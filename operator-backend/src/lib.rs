//! The vx11 operator backend: `GET /operator/api/health`, `POST /operator/api/chat` and
//! the operator event stream (`/operator/api/events[/stream]`, SSE), every one behind the
//! token check, plus the public `/health` and `/ready`.
//!
//! - [`config`]: flags and environment.
//! - [`events`]: the event history, bounded in events and bytes, and its subscribers.
//! - [`stream`]: the SSE responses, closed when their token is revoked or expires or their
//!   client stops reading; [`flight`]: what a stream's client has not read yet.
//! - [`chat`], [`health`]: the other API routes; [`token_events`]: `tokens` events.
//! - [`sse`]: the event-stream wire format; `alarm`: what else a stream waits on.
//! - [`metrics`]: Prometheus; [`state`]: what requests share; [`run`]: the process
//!   (listeners, reload, shutdown).

mod alarm;
#[cfg(test)]
mod app_tests;
pub mod chat;
pub mod config;
pub mod events;
pub mod flight;
pub mod health;
pub mod metrics;
pub mod run;
pub mod sse;
pub mod state;
pub mod stream;
pub mod token_events;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use vx11_service::{ApiError, ErrorCode, access_log, health_routes, require_token};

pub use crate::state::{AppState, Settings};

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
