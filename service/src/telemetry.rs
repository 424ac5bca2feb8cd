//! JSON logs through `tracing`, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;
pub use tracing_subscriber::filter::ParseError as LogFilterError;

/// Installs the process-wide JSON log subscriber, writing to stderr.
pub fn init_json_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    install(filter);
}

/// Like [`init_json_logs`], with the filter given as directives in `RUST_LOG` syntax (for a
/// binary that takes the filter as a flag too); refuses directives that do not parse.
pub fn init_json_logs_with_filter(directives: &str) -> Result<(), LogFilterError> {
    install(EnvFilter::builder().parse(directives)?);
    Ok(())
}

fn install(filter: EnvFilter) {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
