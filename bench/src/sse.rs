//! SSE at scale: opens many `GET /operator/api/events/stream?token=…&follow=true` streams
//! through the gateway(s) (raw HTTP/1.1 on one TCP connection each, so the client itself
//! stays small), then posts chat messages and times their arrival on every stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::percentile;
use crate::procfs::{fds, mib, rss_kib};

const MARKER: &str = "vx11bench-";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A gateway (or other proxy: nginx, HAProxy) to open streams through; repeat to
    /// spread streams over several addresses.
    #[arg(long = "gateway", required = true)]
    gateways: Vec<SocketAddr>,
    /// The processes of the gateway(s) or proxy, for memory figures: repeat for every
    /// process (nginx: master and workers; threads need no pid of their own), in any order;
    /// their RSS and descriptors are summed.
    #[arg(long = "gateway-pid")]
    gateway_pids: Vec<u32>,
    /// What is measured, recorded in the figures: `gateway`, `nginx`, `haproxy`, `direct`.
    #[arg(long, default_value = "gateway")]
    peer: String,
    /// Workers of the peer (threads or processes), recorded in the figures.
    #[arg(long)]
    workers: Option<u32>,
    /// The operator backend process.
    #[arg(long)]
    backend_pid: Option<u32>,
    /// Streams to open in total.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// File whose first line is the token to use.
    #[arg(long)]
    tokens_file: PathBuf,
    /// Broadcast events to time.
    #[arg(long, default_value_t = 5)]
    broadcasts: u32,
    /// Streams being opened at the same time. Kept under 128, the listen backlog both
    /// services get from std/tokio's `bind`: a burst over it drops SYNs, and the gateway's
    /// 1 s connect timeout to the backend fails before the SYN is retransmitted (1 s).
    #[arg(long, default_value_t = 100)]
    open_concurrency: usize,
    /// Give up opening after this long.
    #[arg(long, default_value_t = 180)]
    open_timeout_secs: u64,
    /// Give up waiting for one broadcast after this long.
    #[arg(long, default_value_t = 20)]
    deliver_timeout_secs: u64,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    for addr in &args.gateways {
        anyhow::ensure!(addr.ip().is_loopback(), "{addr}: loopback only");
    }
    let token = std::fs::read_to_string(&args.tokens_file)
        .with_context(|| format!("reading {}", args.tokens_file.display()))?
        .lines()
        .next()
        .context("the tokens file is empty")?
        .to_owned();
    let memory = Memory::new(&args.gateway_pids, args.backend_pid);
    let idle = memory.sample();

    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(args.open_concurrency));
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    let mut streams = JoinSet::new();
    let started = Instant::now();
    for i in 0..args.streams {
        let addr = args.gateways[i % args.gateways.len()];
        let request = format!(
            "GET /operator/api/events/stream?token={token}&follow=true HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        streams.spawn(follow(
            addr,
            request,
            permits.clone(),
            opened.clone(),
            failed.clone(),
            seen_tx.clone(),
        ));
    }
    drop(seen_tx);
    let open_deadline = started + Duration::from_secs(args.open_timeout_secs);
    let mut last_report = Instant::now();
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.streams
        && Instant::now() < open_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  sse: {} open, {} failed after {:.1} s",
                opened.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let open_count = opened.load(Ordering::Relaxed);
    let failed_count = failed.load(Ordering::Relaxed);
    eprintln!("  sse: {open_count} streams open in {open_secs:.2} s ({failed_count} failed)");

    // Let the replayed history drain and the allocators settle before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = memory.sample();

    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()?;
    let chat_url = format!("http://{}/operator/api/chat", args.gateways[0]);
    let mut delays_ms = Vec::new();
    let mut per_broadcast = Vec::new();
    for k in 0..args.broadcasts {
        // Drop anything left over from a previous broadcast that arrived after its deadline.
        while seen_rx.try_recv().is_ok() {}
        let sent = Instant::now();
        let status = client
            .post(&chat_url)
            .header("x-vx11-token", &token)
            .json(&json!({ "message": format!("{MARKER}{k}") }))
            .send()
            .await
            .context("posting the broadcast chat message")?
            .status();
        anyhow::ensure!(status.is_success(), "chat answered {status}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.deliver_timeout_secs);
        let mut these = Vec::with_capacity(open_count);
        while these.len() < open_count {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((seen_k, at))) if seen_k == k => {
                    these.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0)
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        these.sort_by(f64::total_cmp);
        eprintln!(
            "  sse: broadcast {k}: {} of {open_count} streams, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            these.len(),
            percentile(&these, 50.0),
            percentile(&these, 99.0),
            these.last().copied().unwrap_or(f64::NAN),
        );
        per_broadcast.push(json!({
            "delivered": these.len(),
            "p50_ms": percentile(&these, 50.0),
            "p99_ms": percentile(&these, 99.0),
            "max_ms": these.last().copied(),
        }));
        delays_ms.extend(these);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    delays_ms.sort_by(f64::total_cmp);

    streams.abort_all();
    while streams.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = memory.sample();

    let figures = json!({
        "peer": args.peer,
        "workers": args.workers,
        "pids": args.gateway_pids.len(),
        "streams": args.streams,
        "opened": open_count,
        "failed": failed_count,
        "gateways": args.gateways.len(),
        "open_secs": open_secs,
        "broadcasts": args.broadcasts,
        "delivered": delays_ms.len(),
        "expected": open_count * args.broadcasts as usize,
        "delay_p50_ms": percentile(&delays_ms, 50.0),
        "delay_p99_ms": percentile(&delays_ms, 99.0),
        "delay_max_ms": delays_ms.last().copied(),
        "per_broadcast": per_broadcast,
        "memory": {
            "idle": idle,
            "open": loaded,
            "closed": closed,
        },
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// One stream: opened under a permit, then read until aborted; every broadcast marker
/// seen is reported with the time it arrived.
async fn follow(
    addr: SocketAddr,
    request: String,
    permits: Arc<Semaphore>,
    opened: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    seen: mpsc::UnboundedSender<(u32, Instant)>,
) {
    let Ok(permit) = permits.acquire_owned().await else {
        return;
    };
    let opening = tokio::time::timeout(Duration::from_secs(30), open(addr, &request)).await;
    drop(permit);
    let (mut tcp, mut pending) = match opening {
        Ok(Ok(open)) => {
            opened.fetch_add(1, Ordering::Relaxed);
            open
        }
        Ok(Err(error)) => {
            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("  sse: a stream failed to open: {error:#}");
            }
            return;
        }
        Err(_) => {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut buf = [0u8; 2048];
    loop {
        scan_lines(&mut pending, &seen);
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// Connects, sends the request and reads the response head; returns what came after it.
async fn open(addr: SocketAddr, request: &str) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = tcp.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status_line = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
            anyhow::ensure!(
                status_line.starts_with("HTTP/1.1 200"),
                "answered {}",
                status_line.lines().next().unwrap_or_default()
            );
            return Ok((tcp, head.split_off(end + 4)));
        }
        anyhow::ensure!(head.len() < 16 * 1024, "response head too long");
    }
}

/// Reports the markers in the complete lines of `pending` and keeps the incomplete rest.
fn scan_lines(pending: &mut Vec<u8>, seen: &mpsc::UnboundedSender<(u32, Instant)>) {
    let Some(last_newline) = pending.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    let now = Instant::now();
    for line in pending[..last_newline].split(|&b| b == b'\n') {
        if let Some(k) = marker(line) {
            let _ = seen.send((k, now));
        }
    }
    pending.drain(..=last_newline);
}

fn marker(line: &[u8]) -> Option<u32> {
    let at = line
        .windows(MARKER.len())
        .position(|w| w == MARKER.as_bytes())?;
    let digits: String = line[at + MARKER.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    digits.parse().ok()
}

/// RSS and open file descriptors of the peer's processes (summed; `gateway_*` in the
/// figures, whichever peer it is) and of the backend.
struct Memory {
    gateways: Vec<u32>,
    backend: Option<u32>,
}

impl Memory {
    fn new(gateways: &[u32], backend: Option<u32>) -> Self {
        Self {
            gateways: gateways.to_vec(),
            backend,
        }
    }

    fn sample(&self) -> serde_json::Value {
        let gateway_kib: u64 = self.gateways.iter().filter_map(|&p| rss_kib(p).ok()).sum();
        let gateway_fds: usize = self.gateways.iter().filter_map(|&p| fds(p).ok()).sum();
        json!({
            "gateway_rss_mib": mib(gateway_kib),
            "gateway_fds": gateway_fds,
            "backend_rss_mib": self.backend.and_then(|p| rss_kib(p).ok()).map(mib),
            "backend_fds": self.backend.and_then(|p| fds(p).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_complete_lines_only() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pending =
            b"id: 1\nevent: chat\ndata: {\"message\":\"vx11bench-12\"}\n\ndata: {\"message\":\"vx11be".to_vec();
        scan_lines(&mut pending, &tx);
        assert_eq!(rx.try_recv().unwrap().0, 12);
        assert!(rx.try_recv().is_err());
        assert_eq!(pending, b"data: {\"message\":\"vx11be");
        pending.extend_from_slice(b"nch-3\"}\n");
        scan_lines(&mut pending, &tx);
        assert_eq!(rx.try_recv().unwrap().0, 3);
    }
}
