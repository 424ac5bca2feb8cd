//! What the gateway and the operator backend share around the token set: the settings
//! both take and their start-up, the token check as an HTTP answer, the access line,
//! JSON failures with their codes, `/health` and `/ready`, Prometheus metrics of the set,
//! the policy mode, and serving until a graceful shutdown on SIGTERM.
//!
//! Layers: `vx11-tokenset` (the token format, check and reload) → this crate (HTTP
//! plumbing) → the binaries.

mod access;
mod access_line;
mod api_error;
mod auth;
mod body_limit;
mod client_connection;
mod client_tcp;
mod connection;
mod connection_cap;
mod connection_service;
mod cpus;
mod duration;
mod event_stream;
pub mod express;
mod health;
mod hyper_connection;
mod listen;
mod metrics;
mod moves;
mod policy;
mod scheme;
mod serve;
mod serving;
pub mod settings;
mod shutdown;
mod stream_slots;
mod telemetry;
mod tls;
mod tls_pair;

pub use access::{
    AnsweredRecord, HttpMetrics, RequestRecord, access_log, require_token, with_access_line,
    with_token_check,
};
pub use access_line::{AccessLine, access_log_enabled, keep_access_lines, write_kept_access_lines};
pub use api_error::{ApiError, ErrorCode, rfc3339};
pub use auth::{Authenticated, authenticate, authenticate_carriers};
pub use body_limit::{
    DRAIN_BYTES, DRAIN_TIME, content_length, drain_refused_body, expects_continue,
};
pub use connection_cap::{ConnectionCap, ListenerMetrics, REFUSAL_LOG_INTERVAL};
pub use connection_service::ConnectionPlace;
pub use cpus::{allowed_cpus, pin_current_thread};
pub use duration::parse_duration;
pub use event_stream::event_stream_headers;
pub use health::health_routes;
pub use listen::{LISTEN_BACKLOG, bind_listener, bind_reuseport_listeners, steer_by_cpu};
pub use metrics::{TokenMetrics, metrics_router, serve_metrics};
pub use moves::{WorkerMoves, worker_moves};
pub use policy::{OPERATOR_MODULE, PolicyMode, off_by_policy};
pub use scheme::ClientScheme;
pub use serve::serve_until_shutdown;
pub use serving::{
    App, FORWARDING_HEADROOM, H2C_MAX_CONCURRENT_STREAMS, Headroom, PUBLIC_MAX_CONCURRENT_STREAMS,
    Protocols, Serving,
};
pub use settings::{
    ListenerLimits, MIN_HEADER_BYTES, ServiceSettings, SettingError, Started, StreamLimits,
    args_from_lookup, clap_message, start,
};
pub use shutdown::Shutdown;
pub use stream_slots::{StreamRefusal, StreamSlot, StreamSlots};
pub use telemetry::{LogFilterError, init_json_logs, init_json_logs_with_filter};
pub use tls::{ALPN, Tls, TlsError, TlsMetrics};
pub use tls_pair::{CERT_FILE, KEY_FILE, LeafInfo, PairError};
