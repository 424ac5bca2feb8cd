//! Starts the real `vx11-operator-backend` binary on loopback with a token directory
//! written as kubelet writes it, and reads its SSE streams and metrics over HTTP.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde_json::Value;
use vx11_tests::eventually;
use vx11_tests::services::{assert_no_value_in, assert_query_tokens_redacted};
use vx11_tokenset::{TokenDigest, TokenEntry, TokenFile, TokenState, kubelet_sim};

type ByteStream =
    Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_vx11-operator-backend");

/// A token the test knows the value of.
#[derive(Debug, Clone)]
pub struct TestToken {
    pub name: String,
    pub value: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl TestToken {
    pub fn new(name: &str) -> Self {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).unwrap();
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            name: name.to_owned(),
            value: format!("vx11_test_{name}_{suffix}"),
            expires_at: None,
        }
    }

    pub fn expiring_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    pub fn fingerprint(&self) -> String {
        TokenDigest::of(self.value.as_bytes())
            .fingerprint()
            .to_string()
    }
}

/// Writes `tokens.json` into `dir` with kubelet's sequence (a new `..data`).
pub fn project_tokens(dir: &Path, generation: u64, tokens: &[&TestToken]) {
    let entries = tokens
        .iter()
        .map(|t| TokenEntry {
            name: t.name.clone(),
            sha256: TokenDigest::of(t.value.as_bytes()),
            state: TokenState::Active,
            not_before: None,
            expires_at: t.expires_at,
        })
        .collect();
    let file = TokenFile::new(generation, entries);
    let payload = BTreeMap::from([("tokens.json".to_owned(), file.to_json().into_bytes())]);
    kubelet_sim::project(dir, &payload).unwrap();
}

/// A running backend; killed on drop if it is still running.
#[derive(Debug)]
pub struct Backend {
    child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub tokens_dir: PathBuf,
    log_path: PathBuf,
    secrets: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Backend {
    /// Starts the binary with `tokens` in its token directory (generation 1) and the
    /// extra environment `env`.
    pub async fn start(tokens: &[&TestToken], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens_dir = dir.path().join("tokens");
        project_tokens(&tokens_dir, 1, tokens);
        let log_path = dir.path().join("backend.log");
        let log = File::create(&log_path).unwrap();
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("VX11_OPERATOR_BACKEND_ADDR", "127.0.0.1:0")
            .env("VX11_METRICS_ADDR", "127.0.0.1:0")
            .env("VX11_TOKENS_DIR", &tokens_dir)
            .env(
                "RUST_LOG",
                "info,vx11_operator_backend=debug,vx11_tokenset=debug",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        let mut backend = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: "0.0.0.0:0".parse().unwrap(),
            tokens_dir,
            log_path,
            secrets: tokens.iter().map(|t| t.value.clone()).collect(),
            _dir: dir,
        };
        let (addr, metrics_addr) = eventually(
            "the backend logs its addresses",
            Duration::from_secs(20),
            || {
                let found = backend.listening_line();
                if found.is_none()
                    && let Ok(Some(status)) = backend.child.try_wait()
                {
                    panic!("the backend exited with {status}:\n{}", backend.logs());
                }
                std::future::ready(found.ok_or("not yet"))
            },
        )
        .await
        .unwrap();
        backend.addr = addr;
        backend.metrics_addr = metrics_addr;
        backend
    }

    fn listening_line(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.log_lines().into_iter().find_map(|line| {
            (line["message"] == "vx11-operator-backend listening").then(|| {
                (
                    line["addr"].as_str().unwrap().parse().unwrap(),
                    line["metrics_addr"].as_str().unwrap().parse().unwrap(),
                )
            })
        })
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// Token values the logs must never show (the ones given at start are already there).
    pub fn add_secret(&mut self, value: &str) {
        self.secrets.push(value.to_owned());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// No token value anywhere in the output, and every `token=` followed by `REDACTED`.
    pub fn assert_logs_clean(&self) {
        let logs = self.logs();
        assert!(!logs.is_empty(), "the backend wrote logs");
        assert_no_value_in("the backend's logs", &logs, &self.secrets);
        assert_query_tokens_redacted("the backend's logs", &logs);
    }

    /// One metric's value (the first line of that name, labels included in `name`).
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> Option<f64> {
        let text = client
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, from `/proc`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|line| {
            line.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
    }

    pub fn sigterm(&self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).unwrap();
    }

    /// Waits for the process to exit, for at most `within`.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("the backend exits", within, || {
            std::future::ready(child.try_wait().unwrap().ok_or("still running"))
        })
        .await
        .unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client for tests: connect and read timeouts, never a whole-request timeout
/// (that would cut streams).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One item of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event {
        id: Option<String>,
        event: String,
        data: String,
    },
    Comment(String),
}

impl SseItem {
    pub fn json(&self) -> Value {
        match self {
            SseItem::Event { data, .. } => serde_json::from_str(data).unwrap(),
            SseItem::Comment(_) => Value::Null,
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            SseItem::Event { event, .. } => event,
            SseItem::Comment(_) => ":",
        }
    }

    pub fn id(&self) -> Option<u64> {
        match self {
            SseItem::Event { id, .. } => id.as_ref()?.parse().ok(),
            SseItem::Comment(_) => None,
        }
    }
}

/// Reads an SSE response as it arrives.
pub struct SseReader {
    body: ByteStream,
    buffer: String,
    ended: bool,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "the stream opens");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next item, `None` once the server ended the stream; panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseItem> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_block(&block));
            }
            if self.ended {
                assert!(
                    self.buffer.trim().is_empty(),
                    "stream ended inside an event"
                );
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("no SSE item within {within:?}"),
                Ok(Some(Ok(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Some(Err(error))) => panic!("the stream failed: {error}"),
                Ok(None) => self.ended = true,
            }
        }
    }

    /// The next event (not a comment).
    pub async fn next_event(&mut self, within: Duration) -> Option<SseItem> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                SseItem::Comment(_) => continue,
                event => return Some(event),
            }
        }
    }

    /// Events until one of kind `kind` whose data satisfies `matches`.
    pub async fn find(
        &mut self,
        within: Duration,
        kind: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> SseItem {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let item = self
                .next_event(left)
                .await
                .unwrap_or_else(|| panic!("the stream ended before a `{kind}` event"));
            if item.kind() == kind && matches(&item.json()) {
                return item;
            }
        }
    }

    /// Every event until the server ends the stream.
    pub async fn collect(&mut self, within: Duration) -> Vec<SseItem> {
        let deadline = Instant::now() + within;
        let mut items = Vec::new();
        while let Some(item) = self
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            items.push(item);
        }
        items
    }
}

fn parse_block(block: &str) -> SseItem {
    let (mut id, mut event, mut data, mut comment) =
        (None, String::from("message"), Vec::new(), None);
    for line in block.lines() {
        if let Some(text) = line.strip_prefix(':') {
            comment = Some(text.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = value.to_owned(),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    match comment {
        Some(text) if data.is_empty() => SseItem::Comment(text),
        _ => SseItem::Event {
            id,
            event,
            data: data.join("\n"),
        },
    }
}
