//! Hot reload of the token directory that kubelet projects a Secret into.
//!
//! kubelet swaps a `..data` symlink to update a Secret volume, so the watch is on the
//! directory, never on a file (a file watch follows the old inode, deleted a moment later),
//! and on its nearest existing ancestor, to see the directory appear or be replaced. Events
//! are not sorted by kind: any event is debounced, the files are read again and compared
//! with what is installed. A poll on a fixed interval catches whatever the events missed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::legacy::LegacyTokens;
use crate::source::{DEFAULT_MAX_FILE_BYTES, LoadError, TokenSource};
use crate::store::TokenStore;

/// How the token directory is watched.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub dir: PathBuf,
    /// Re-read this often even when no event came.
    pub poll_interval: Duration,
    /// Wait this long after an event for the burst of a symlink swap to end.
    pub debounce: Duration,
    pub max_file_bytes: u64,
}

impl WatchConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            poll_interval: Duration::from_secs(2),
            debounce: Duration::from_millis(30),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Keeps a [`TokenStore`] in step with a directory until dropped.
#[derive(Debug)]
pub struct TokenWatcher {
    store: Arc<TokenStore>,
    stop: mpsc::Sender<Wake>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum Wake {
    Changed,
    Stop,
}

impl TokenWatcher {
    /// Loads the directory once, then watches it on a thread of its own. A missing
    /// directory is not an error: the set starts empty and appears with the files.
    pub fn start(config: WatchConfig, legacy: LegacyTokens) -> std::io::Result<Self> {
        let store = Arc::new(TokenStore::new());
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = events.send(Wake::Changed);
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, poll_interval = ?config.poll_interval,
                    "cannot watch the token directory for events; reloading by polling only");
                None
            }
        };
        let mut watches = DirWatches::new(config.dir.clone(), watcher);
        let mut reloader = Reloader::new(
            TokenSource {
                dir: config.dir.clone(),
                legacy,
                max_file_bytes: config.max_file_bytes,
            },
            store.clone(),
        );
        watches.refresh();
        reloader.reload();

        let thread = std::thread::Builder::new()
            .name("vx11-token-watch".into())
            .spawn(move || watch_loop(&config, &rx, &mut watches, &mut reloader))?;
        Ok(Self {
            store,
            stop: tx,
            thread: Some(thread),
        })
    }

    pub fn store(&self) -> &Arc<TokenStore> {
        &self.store
    }
}

impl Drop for TokenWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch_loop(
    config: &WatchConfig,
    rx: &mpsc::Receiver<Wake>,
    watches: &mut DirWatches,
    reloader: &mut Reloader,
) {
    // A long burst of events still reloads at least this often.
    let max_settle = config.debounce * 8;
    loop {
        match rx.recv_timeout(config.poll_interval) {
            Ok(Wake::Changed) => {
                let burst_start = Instant::now();
                loop {
                    match rx.recv_timeout(config.debounce) {
                        Ok(Wake::Changed) if burst_start.elapsed() < max_settle => continue,
                        Ok(Wake::Changed) | Err(RecvTimeoutError::Timeout) => break,
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
        watches.refresh();
        reloader.reload();
    }
}

/// The notify watches on the directory and on its nearest existing ancestor, renewed when
/// either is replaced.
struct DirWatches {
    dir: PathBuf,
    watcher: Option<RecommendedWatcher>,
    /// (device, inode) of the watched directory.
    dir_id: Option<(u64, u64)>,
    ancestor: Option<PathBuf>,
}

impl DirWatches {
    fn new(dir: PathBuf, watcher: Option<RecommendedWatcher>) -> Self {
        Self {
            dir,
            watcher,
            dir_id: None,
            ancestor: None,
        }
    }

    fn refresh(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let dir_id = std::fs::metadata(&self.dir)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| (m.dev(), m.ino()));
        if dir_id != self.dir_id {
            let _ = watcher.unwatch(&self.dir);
            self.dir_id = None;
            if dir_id.is_some() {
                match watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
                    Ok(()) => self.dir_id = dir_id,
                    Err(error) => {
                        tracing::warn!(%error, dir = %self.dir.display(), "cannot watch the token directory; polling")
                    }
                }
            }
        }
        let ancestor = nearest_existing_ancestor(&self.dir);
        if ancestor != self.ancestor {
            if let Some(old) = self.ancestor.take() {
                let _ = watcher.unwatch(&old);
            }
            if let Some(new) = ancestor
                && watcher.watch(&new, RecursiveMode::NonRecursive).is_ok()
            {
                self.ancestor = Some(new);
            }
        }
    }
}

fn nearest_existing_ancestor(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
}

/// Reads the source and installs what changed; keeps the last good set on any error.
struct Reloader {
    source: TokenSource,
    store: Arc<TokenStore>,
    installed: Option<[u8; 32]>,
    /// The content (or, for read errors, the message) last reported as bad.
    reported: Option<Failure>,
    loaded_from_files: bool,
}

#[derive(PartialEq, Eq)]
enum Failure {
    Content([u8; 32]),
    Read(LoadError),
}

impl Reloader {
    fn new(source: TokenSource, store: Arc<TokenStore>) -> Self {
        Self {
            source,
            store,
            installed: None,
            reported: None,
            loaded_from_files: false,
        }
    }

    fn reload(&mut self) {
        let raw = match self.source.read() {
            Ok(raw) => raw,
            Err(error) => return self.fail(Failure::Read(error.clone()), error),
        };
        if !raw.has_files() {
            if self.loaded_from_files {
                let error = LoadError::SourceGone {
                    dir: self.source.dir.clone(),
                };
                return self.fail(Failure::Read(error.clone()), error);
            }
            if self.installed.is_none() && self.source.legacy.is_empty() {
                return; // Nothing to serve yet: not ready, every request refused.
            }
        }
        let key = raw.content_key();
        if self.installed == Some(key) {
            if self.reported.take().is_some() {
                self.store.clear_error();
                tracing::info!("token source is back to the content being served");
            }
            return;
        }
        if self.reported == Some(Failure::Content(key)) {
            return;
        }
        match self.source.parse(&raw) {
            Ok(parsed) => {
                if parsed.plaintext_count > 0 {
                    tracing::warn!(
                        tokens = parsed.plaintext_count,
                        dir = %self.source.dir.display(),
                        "read plaintext tokens from the plain `tokens` list; prefer tokens.json with digests"
                    );
                }
                let count = parsed.set.len();
                let snapshot = self.store.install(parsed.set, parsed.generation);
                tracing::info!(
                    generation = ?snapshot.generation,
                    tokens = count,
                    serial = snapshot.serial,
                    "token set loaded"
                );
                self.installed = Some(key);
                self.reported = None;
                self.loaded_from_files |= raw.has_files();
            }
            Err(error) => self.fail(Failure::Content(key), error),
        }
    }

    fn fail(&mut self, failure: Failure, error: LoadError) {
        if self.reported.as_ref() == Some(&failure) {
            return;
        }
        tracing::warn!(%error, "token source not loaded; keeping the last good set");
        self.store.record_error(error.to_string());
        self.reported = Some(failure);
    }
}
