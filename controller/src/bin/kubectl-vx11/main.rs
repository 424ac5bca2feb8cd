//! `kubectl-vx11`: the kubectl plugin for vx11 token sets (`kubectl vx11 …` once on PATH;
//! `cargo install --path controller --bin kubectl-vx11`). One module per job: [`cli`] (flags
//! and help), [`connect`] (kubeconfig, context, namespace), [`status`] (rendering, pure),
//! [`rotate`] (the request and `--wait`'s predicate), [`token`] (the published value),
//! [`wait`] (conditions, polling). Exit status: 0 ok, 1 error, 2 usage.

mod cli;
mod connect;
mod error;
mod rotate;
mod sets;
mod status;
mod table;
mod token;
mod wait;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// Writes `text` to stdout at once (a `--wait` prints its request before it waits).
pub fn emit(text: &str) -> error::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

async fn run(cli: Cli) -> error::Result<String> {
    let target = connect::connect(&cli.connection).await?;
    match &cli.command {
        Command::Status(args) => status::run(&target, args).await,
        Command::Rotate(args) => rotate::run(&target, args).await,
        Command::Token(args) => token::run(&target, args).await,
        Command::Wait(args) => wait::run(&target, args).await,
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2, --help and --version 0 (clap's convention).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli)).and_then(|text| emit(&text));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::Error::Io(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
