//! JSON logs through `tracing` to stderr, filtered by `RUST_LOG` (default `info`); the same
//! format as the gateway's and the operator backend's. Token values never reach a log line:
//! they live in `TokenValue`, whose `Debug`/`Display` print only the fingerprint.

pub use vx11_service::{LogFilterError, init_json_logs_with_filter};

/// Installs the JSON subscriber with `RUST_LOG`'s directives (or `info`).
pub fn init(directives: &str) -> Result<(), LogFilterError> {
    init_json_logs_with_filter(directives)
}
