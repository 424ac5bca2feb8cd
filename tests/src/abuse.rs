//! What the abuse suite (`tests/tests/abuse/`) needs around the real binaries: a process's
//! resident memory, a background client that must keep getting 200 while an attack runs,
//! and raw TCP connections that send exactly the bytes an attacker would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Resident memory of process `pid`, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open file descriptors of process `pid` that are sockets.
pub fn open_sockets(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A client that sends `GET path` with `headers` every `every` on fresh connections (so a
/// full listener shows) until stopped, counting answers that are 200 and those that are not.
#[derive(Debug)]
pub struct ValidClient {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_failure: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`ValidClient`] saw.
#[derive(Debug, Clone)]
pub struct ValidClientReport {
    pub ok: u64,
    pub failed: u64,
    pub last_failure: Option<String>,
}

impl ValidClient {
    pub fn start(
        addr: SocketAddr,
        path: &str,
        headers: Vec<(String, String)>,
        every: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let last_failure = Arc::new(std::sync::Mutex::new(None));
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: vx11\r\nconnection: close\r\n");
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let task = {
            let (stop, ok, failed, last_failure) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                last_failure.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_secs(5), status_of(addr, &request))
                        .await
                    {
                        Ok(Ok(200)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        outcome => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut last) = last_failure.lock() {
                                *last = Some(format!("{outcome:?}"));
                            }
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        Self {
            stop,
            ok,
            failed,
            last_failure,
            task,
        }
    }

    /// Stops the client and says what it saw.
    pub async fn stop(self) -> ValidClientReport {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        ValidClientReport {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_failure: self.last_failure.lock().ok().and_then(|last| last.clone()),
        }
    }
}

/// Sends `request` (whole, with `Connection: close`) on a new connection and returns the
/// status code of the answer.
pub async fn status_of(addr: SocketAddr, request: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    parse_status(&answer).ok_or_else(|| {
        std::io::Error::other(format!(
            "no status line in {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ))
    })
}

/// The status code of an HTTP/1.x answer's first line.
pub fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Waits up to `limit` for the peer to close `stream` (reads and discards what it sends).
/// True when it closed (EOF or reset) within the limit.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let closing = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closing).await.is_ok()
}

/// Writes `tokens.json` with `tokens` (each active) into `dir` the way kubelet projects a
/// Secret (a timestamped directory behind `..data`).
pub fn project_active_tokens(
    dir: &std::path::Path,
    generation: u64,
    tokens: &[(&str, &vx11_tokenset::TokenValue)],
) -> std::io::Result<()> {
    use vx11_tokenset::{TokenEntry, TokenFile, TokenState};
    let entries = tokens
        .iter()
        .map(|(name, value)| TokenEntry {
            name: (*name).to_string(),
            sha256: value.digest(),
            state: TokenState::Active,
            not_before: None,
            expires_at: None,
        })
        .collect();
    let json = TokenFile::new(generation, entries).to_json();
    let payload =
        std::collections::BTreeMap::from([("tokens.json".to_string(), json.into_bytes())]);
    vx11_tokenset::kubelet_sim::project(dir, &payload).map(|_| ())
}
