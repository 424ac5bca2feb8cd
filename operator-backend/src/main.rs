use std::process::ExitCode;

use vx11_operator_backend::config::Config;
use vx11_operator_backend::run::run;
use vx11_service::init_json_logs_with_filter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => return invalid(&error),
    };
    if let Err(error) = init_json_logs_with_filter(&config.service.log_filter) {
        return invalid(&format!("RUST_LOG (--log): {error}"));
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "vx11-operator-backend stopped");
            eprintln!("vx11-operator-backend: {error}");
            ExitCode::FAILURE
        }
    }
}

fn invalid(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("Invalid configuration: {error}");
    ExitCode::from(2)
}
