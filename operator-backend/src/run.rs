//! The process: token reload, the two listeners, `tokens` events, and shutdown on SIGTERM.

use vx11_service::{Protocols, Serving, bind_listener, serve_until_shutdown, start};

use crate::app;
use crate::config::Config;
use crate::state::{AppState, Settings};
use crate::token_events::publish_token_changes;

/// Serves until SIGTERM or SIGINT. Logs `vx11-operator-backend listening` with both bound
/// addresses (so a port of 0 can be used and found).
pub async fn run(config: Config) -> std::io::Result<()> {
    let started = start(&config.service, config.legacy.clone()).await?;
    let store = started.store.clone();
    let listener = bind_listener(config.addr, "VX11_OPERATOR_BACKEND_ADDR")?;
    let state = AppState::new(
        store.clone(),
        Settings::from_config(&config),
        started.shutdown.clone(),
    );
    tokio::spawn(publish_token_changes(
        store.clone(),
        state.events.clone(),
        started.shutdown.clone(),
    ));

    let snapshot = store.snapshot();
    tracing::info!(
        addr = %listener.local_addr()?,
        metrics_addr = %started.metrics_listener.local_addr()?,
        mode = %config.service.policy_mode,
        tokens = snapshot.set.len(),
        generation = ?snapshot.generation,
        "vx11-operator-backend listening"
    );
    let listeners = state.metrics.listeners.clone();
    let (watcher, shutdown) = started.serve_metrics(
        state.metrics.registry.clone(),
        &config.service,
        listeners.clone(),
    );
    // h2c too: the gateway multiplexes event streams on one HTTP/2 connection per worker.
    let serving = Serving::new("api", Protocols::Http1AndH2c, &config.service, listeners);
    serve_until_shutdown(listener, app(state), shutdown, serving).await?;
    tracing::info!("vx11-operator-backend stopped");
    drop(watcher);
    Ok(())
}
