//! vx11-bench: the pieces of `bench/run.sh` that are easier in Rust than in shell. Each
//! subcommand does one bounded job on loopback and writes its figures as JSON.

mod procfs;
mod reload;
mod sse;
mod table;
mod tokens;
mod upstream;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vx11-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A minimal HTTP/1.1 upstream answering every request with a small JSON body.
    Upstream(upstream::Args),
    /// Writes the token fixtures: a kubelet-style token dir and the nginx map.
    Tokens(tokens::Args),
    /// Opens many SSE streams through the gateway(s) and times one broadcast event.
    Sse(sse::Args),
    /// Swaps the token dir as kubelet does and times the first accepted request.
    Reload(reload::Args),
    /// Prints the results table from a results directory.
    Table(table::Args),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Upstream(args) => upstream::run(args).await,
        Command::Tokens(args) => tokens::run(args),
        Command::Sse(args) => sse::run(args).await,
        Command::Reload(args) => reload::run(args).await,
        Command::Table(args) => table::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vx11-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
