//! Shared fixtures for the token-set integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vx11_tokenset::{
    LegacyTokens, TokenEntry, TokenFile, TokenState, TokenValue, TokenWatcher, WatchConfig,
    kubelet_sim,
};

/// Polls `condition` every 5 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A token directory inside a temp dir (so that its parent can be watched and the
/// directory itself removed and recreated).
pub struct TokenDir {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TokenDir {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tokens");
        Self { _root: root, dir }
    }

    /// Writes `files` the way kubelet updates a Secret volume.
    pub fn project(&self, files: &[(&str, &[u8])]) {
        let payload: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        kubelet_sim::project(&self.dir, &payload).unwrap();
    }

    pub fn project_file(&self, file: &TokenFile) {
        self.project(&[("tokens.json", file.to_json().as_bytes())]);
    }

    /// A watcher that only events can wake within a test's deadlines.
    pub fn watch_events_only(&self) -> TokenWatcher {
        let mut config = WatchConfig::new(&self.dir);
        config.poll_interval = Duration::from_secs(3600);
        TokenWatcher::start(config, LegacyTokens::default()).unwrap()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// A token file of `count` fresh tokens at `generation`, with their values.
pub fn token_file(generation: u64, count: usize) -> (TokenFile, Vec<TokenValue>) {
    let values: Vec<_> = (0..count)
        .map(|_| TokenValue::generate(32).unwrap())
        .collect();
    let entries = values
        .iter()
        .enumerate()
        .map(|(i, v)| TokenEntry {
            name: format!("token-{i}"),
            sha256: v.digest(),
            state: TokenState::Active,
            not_before: None,
            expires_at: None,
        })
        .collect();
    (TokenFile::new(generation, entries), values)
}

/// Everything every test in this binary logged, through a global JSON subscriber (the
/// watcher logs from its own thread, so a thread-local one would miss it).
pub fn captured_logs() -> String {
    let buffer = log_buffer();
    let bytes = buffer.lock().unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn capture_logs() {
    log_buffer();
}

fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = SharedWriter(buffer.clone());
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            buffer
        })
        .clone()
}

#[derive(Clone)]
struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails if any of `values` appears in `text`.
pub fn assert_no_value_in(text: &str, values: &[&str]) {
    for value in values {
        assert!(
            !text.contains(value),
            "a token value leaked into output: fingerprint {}",
            vx11_tokenset::TokenDigest::of(value.as_bytes()).fingerprint()
        );
    }
}
