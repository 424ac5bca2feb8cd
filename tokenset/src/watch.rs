//! Hot reload of the token directory that kubelet projects a Secret into: watched by
//! [`DirWatcher`], each change read again and compared with what is installed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::dir_watch::{DirWatchConfig, DirWatcher};
use crate::legacy::LegacyTokens;
use crate::load_error::LoadError;
use crate::source::{DEFAULT_MAX_FILE_BYTES, TokenSource};
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
    _watcher: DirWatcher,
}

impl TokenWatcher {
    /// Loads the directory once, then watches it on a thread of its own. A missing
    /// directory is not an error: the set starts empty and appears with the files.
    pub fn start(config: WatchConfig, legacy: LegacyTokens) -> std::io::Result<Self> {
        let store = Arc::new(TokenStore::new());
        let mut reloader = Reloader::new(
            TokenSource {
                dir: config.dir.clone(),
                legacy,
                max_file_bytes: config.max_file_bytes,
            },
            store.clone(),
        );
        let mut watch = DirWatchConfig::new(config.dir, "token");
        watch.poll_interval = config.poll_interval;
        watch.debounce = config.debounce;
        let watcher = DirWatcher::start(watch, "vx11-token-watch", move || reloader.reload())?;
        Ok(Self {
            store,
            _watcher: watcher,
        })
    }

    pub fn store(&self) -> &Arc<TokenStore> {
        &self.store
    }
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
