//! What the gateway and the operator backend share around the token set: the check as an
//! HTTP answer, `/health` and `/ready`, JSON logs, Prometheus metrics of the set, and a
//! graceful shutdown on SIGTERM.

mod access;
mod access_line;
mod api_error;
mod auth;
mod drain;
mod health;
mod metrics;
mod policy;
mod serve;
mod telemetry;

pub use access::{HttpMetrics, RequestRecord, access_log, require_token};
pub use access_line::{AccessLine, access_log_enabled};
pub use api_error::{ApiError, ErrorCode};
pub use auth::{Authenticated, authenticate};
pub use drain::{DRAIN_BYTES, DRAIN_TIME, drain_refused_body};
pub use health::health_routes;
pub use metrics::{TokenMetrics, metrics_router, serve_metrics};
pub use policy::{OPERATOR_MODULE, PolicyMode};
pub use serve::{
    H2C_MAX_CONCURRENT_STREAMS, LISTEN_BACKLOG, Protocols, Shutdown, bind_listener,
    bind_reuseport_listeners, serve_until_shutdown,
};
pub use telemetry::{LogFilterError, init_json_logs, init_json_logs_with_filter};
