//! `vx11-controller`: see the crate docs and `controller/README.md`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use vx11_controller::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Crd)) {
        let mut out = std::io::stdout().lock();
        return match out.write_all(vx11_controller::crd::crd_yaml().as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let pod_namespace =
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vx11-controller".to_owned());
    let settings = match cli.settings(pod_namespace, &host) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("Invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = vx11_controller::telemetry::init(&cli.log) {
        eprintln!("Invalid configuration: RUST_LOG: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vx11_controller::run::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, reason = error.metric_label(), "vx11-controller stopped");
            eprintln!("vx11-controller: {error}");
            ExitCode::FAILURE
        }
    }
}
