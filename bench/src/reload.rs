//! Reload latency: swap the token directory as kubelet does (a new timestamped dir, a
//! `..data` symlink renamed over the old one) with a set holding one new token, then ask the
//! gateway with that token every millisecond until it is accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::json;
use vx11_tokenset::{TOKEN_FILE_NAME, TokenEntry, TokenFile, TokenState, TokenValue};

use crate::percentile;
use crate::tokens::{NAME_PREFIX, project_file};

const ROTATING: &str = "reload-bench";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's token directory (written by `vx11-bench tokens`).
    #[arg(long)]
    dir: PathBuf,
    /// The gateway.
    #[arg(long)]
    gateway: SocketAddr,
    /// Swaps to time.
    #[arg(long, default_value_t = 100)]
    swaps: u32,
    /// Time between a swap's first accepted request and the next swap.
    #[arg(long, default_value_t = 50)]
    pause_ms: u64,
    /// A swap not seen within this long counts as a miss (and its time as this long).
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.gateway.ip().is_loopback(), "loopback only");
    let path = args.dir.join(TOKEN_FILE_NAME);
    let current = TokenFile::parse(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let base: Vec<TokenEntry> = current
        .tokens
        .into_iter()
        .filter(|e| e.name.starts_with(NAME_PREFIX))
        .collect();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("http://{}/operator/api/health", args.gateway);
    let limit = Duration::from_secs(args.timeout_secs);

    let mut times_ms = Vec::with_capacity(args.swaps as usize);
    let mut missed = 0u32;
    let mut attempts_total = 0u64;
    for i in 0..args.swaps {
        let token = TokenValue::generate(32)?;
        let mut entries = base.clone();
        entries.push(TokenEntry {
            name: ROTATING.into(),
            sha256: token.digest(),
            state: TokenState::Active,
            not_before: None,
            expires_at: None,
        });
        let file = TokenFile::new(current.generation + u64::from(i) + 1, entries);
        let swapped = Instant::now();
        project_file(&args.dir, &file)?;
        let mut accepted = None;
        while swapped.elapsed() < limit {
            attempts_total += 1;
            let status = client
                .get(&url)
                .header("x-vx11-token", token.expose())
                .send()
                .await
                .map(|r| r.status());
            match status {
                Ok(StatusCode::OK) => {
                    accepted = Some(swapped.elapsed());
                    break;
                }
                Ok(StatusCode::UNAUTHORIZED) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Ok(other) => anyhow::bail!("the gateway answered {other} during the reload test"),
            }
        }
        let elapsed = accepted.unwrap_or_else(|| {
            missed += 1;
            limit
        });
        times_ms.push(elapsed.as_secs_f64() * 1000.0);
        if (i + 1) % 25 == 0 {
            eprintln!("  reload: {} swaps", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    times_ms.sort_by(f64::total_cmp);
    let figures = json!({
        "swaps": args.swaps,
        "missed": missed,
        "attempts": attempts_total,
        "p50_ms": percentile(&times_ms, 50.0),
        "p99_ms": percentile(&times_ms, 99.0),
        "max_ms": times_ms.last().copied(),
        "min_ms": times_ms.first().copied(),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
