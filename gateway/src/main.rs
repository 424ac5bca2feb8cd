use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use prometheus_client::registry::Registry;
use vx11_gateway::Gateway;
use vx11_gateway::config::{Args, Config};
use vx11_gateway::metrics::GatewayMetrics;
use vx11_gateway::worker_cpus::CpuList;
use vx11_gateway::workers::{MakeApp, Workers};
use vx11_service::{
    ListenerMetrics, Protocols, Serving, StreamSlots, Tls, TlsMetrics, bind_reuseport_listeners,
    init_json_logs_with_filter, start, steer_by_cpu,
};
use vx11_tokenset::LegacyTokens;

/// This runtime only handles signals and `/metrics`; requests are served by the workers'
/// own runtimes ([`Workers`]).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("Invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let legacy = match LegacyTokens::from_env() {
        Ok(legacy) => legacy,
        Err(error) => {
            eprintln!("Invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = init_json_logs_with_filter(&config.service.log_filter) {
        eprintln!("Invalid configuration: RUST_LOG: {error}");
        return ExitCode::from(2);
    }
    match run(config, legacy).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "vx11-gateway stopped");
            eprintln!("vx11-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, legacy: LegacyTokens) -> std::io::Result<()> {
    let started = start(&config.service, legacy).await?;
    let store = started.store.clone();
    let listeners = bind_reuseport_listeners(config.addr, "VX11_GATEWAY_ADDR", config.workers)?;
    if let Some(cpus) = &config.worker_cpus {
        steer_by_cpu(&listeners, cpus)?;
    }
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::register(&mut registry, store.clone());
    let listener_metrics = ListenerMetrics::register(&mut registry);
    let tls = match &config.tls_dir {
        Some(dir) => Some(
            Tls::start(
                dir,
                config.service.tokens_poll_interval,
                TlsMetrics::register(&mut registry),
            )
            .map_err(std::io::Error::other)?,
        ),
        None => None,
    };

    let snapshot = store.snapshot();
    tracing::info!(
        addr = %listeners[0].local_addr()?,
        metrics_addr = %started.metrics_listener.local_addr()?,
        mode = %config.service.policy_mode,
        workers = config.workers,
        worker_cpus = %config.worker_cpus.clone().map_or("off".to_string(), |cpus| CpuList(cpus).to_string()),
        tls = tls.is_some(),
        express = config.express && tls.is_none() && !config.cors.is_on(),
        modules = ?config.modules.names(),
        tokens = snapshot.set.len(),
        generation = ?snapshot.generation,
        "vx11-gateway listening"
    );
    let (watcher, shutdown) = started.serve_metrics(
        Arc::new(registry),
        &config.service,
        listener_metrics.clone(),
    );
    // One connection count for all the workers: the limit is the process's.
    let mut serving = Serving::new(
        "api",
        Protocols::Http1AndH2,
        &config.service,
        listener_metrics,
    );
    serving.tls = tls;
    let listeners = listeners
        .into_iter()
        .map(tokio::net::TcpListener::into_std)
        .collect::<std::io::Result<Vec<_>>>()?;
    // One count of open streams for the whole process: the caps hold across workers.
    let stream_slots = StreamSlots::new(&config.service.streams);
    let make_app: MakeApp = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        Arc::new(move || {
            Arc::new(Gateway::new(
                &config,
                store.clone(),
                metrics.clone(),
                shutdown.clone(),
                stream_slots.clone(),
            ))
        })
    };
    let workers = Workers::start(
        listeners,
        make_app,
        &shutdown,
        &serving,
        config.express,
        config.worker_cpus.as_deref(),
    )?;
    tokio::task::spawn_blocking(move || workers.join())
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!("vx11-gateway stopped");
    drop(watcher);
    Ok(())
}
