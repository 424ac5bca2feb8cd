//! The process: token reload, the two listeners, `tokens` events, and shutdown on SIGTERM.

use vx11_tokenset::service::{
    Protocols, Shutdown, bind_listener, serve_metrics, serve_until_shutdown,
};
use vx11_tokenset::{TokenWatcher, WatchConfig};

use crate::config::Config;
use crate::token_events::publish_token_changes;
use crate::{AppState, Settings, app};

/// Serves until SIGTERM or SIGINT. Logs `vx11-operator-backend listening` with both bound
/// addresses (so a port of 0 can be used and found).
pub async fn run(config: Config) -> std::io::Result<()> {
    let mut watch = WatchConfig::new(&config.tokens_dir);
    watch.poll_interval = config.tokens_poll_interval;
    let watcher = TokenWatcher::start(watch, config.legacy.clone())?;
    let store = watcher.store().clone();

    let listener = bind_listener(config.addr, "VX11_OPERATOR_BACKEND_ADDR")?;
    let metrics_listener = bind_listener(config.metrics_addr, "VX11_METRICS_ADDR")?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let state = AppState::new(
        store.clone(),
        Settings::from_config(&config),
        shutdown.clone(),
    );
    tokio::spawn(publish_token_changes(
        store.clone(),
        state.events.clone(),
        shutdown.clone(),
    ));

    let snapshot = store.snapshot();
    tracing::info!(
        addr = %listener.local_addr()?,
        metrics_addr = %metrics_listener.local_addr()?,
        mode = %config.policy_mode,
        tokens = snapshot.set.len(),
        generation = ?snapshot.generation,
        "vx11-operator-backend listening"
    );
    tokio::spawn(serve_metrics(
        metrics_listener,
        state.metrics.registry.clone(),
        shutdown.clone(),
    ));
    // h2c too: the gateway multiplexes event streams on one HTTP/2 connection per worker.
    serve_until_shutdown(
        listener,
        app(state),
        shutdown,
        config.shutdown_grace,
        Protocols::Http1AndH2c,
    )
    .await?;
    tracing::info!("vx11-operator-backend stopped");
    drop(watcher);
    Ok(())
}
