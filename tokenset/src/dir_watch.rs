//! Watching a directory that kubelet projects a Secret into, for whatever reads it (the
//! token set, the gateway's TLS certificate).
//!
//! kubelet swaps a `..data` symlink to update a Secret volume, so the watch is on the
//! directory, never on a file (a file watch follows the old inode, deleted a moment later),
//! and on its nearest existing ancestor, to see the directory appear or be replaced. Events
//! are not sorted by kind: any event is debounced and the reader's `reload` called, which
//! reads the files again and compares them with what is installed. A poll on a fixed
//! interval calls it too, to catch whatever the events missed.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// How a directory is watched.
#[derive(Debug, Clone)]
pub struct DirWatchConfig {
    pub dir: PathBuf,
    /// Re-read this often even when no event came.
    pub poll_interval: Duration,
    /// Wait this long after an event for the burst of a symlink swap to end.
    pub debounce: Duration,
    /// What the directory holds, for log lines (`token`, `TLS certificate`).
    pub what: &'static str,
}

impl DirWatchConfig {
    pub fn new(dir: impl Into<PathBuf>, what: &'static str) -> Self {
        Self {
            dir: dir.into(),
            poll_interval: Duration::from_secs(2),
            debounce: Duration::from_millis(30),
            what,
        }
    }
}

/// Calls a reload function on every change of a directory (and every poll interval) on a
/// thread of its own, until dropped.
#[derive(Debug)]
pub struct DirWatcher {
    stop: mpsc::Sender<Wake>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum Wake {
    Changed,
    Stop,
}

impl DirWatcher {
    /// Calls `reload` once now, on the caller's thread, then on every change from a thread
    /// named `thread_name`. A directory that does not exist yet is watched for.
    pub fn start(
        config: DirWatchConfig,
        thread_name: &str,
        mut reload: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = events.send(Wake::Changed);
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, poll_interval = ?config.poll_interval, what = config.what,
                    "cannot watch the directory for events; reloading by polling only");
                None
            }
        };
        let mut watches = DirWatches::new(config.dir.clone(), config.what, watcher);
        watches.refresh();
        reload();
        let thread = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || watch_loop(&config, &rx, &mut watches, &mut reload))?;
        Ok(Self {
            stop: tx,
            thread: Some(thread),
        })
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch_loop(
    config: &DirWatchConfig,
    rx: &mpsc::Receiver<Wake>,
    watches: &mut DirWatches,
    reload: &mut impl FnMut(),
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
        reload();
    }
}

/// The notify watches on the directory and on its nearest existing ancestor, renewed when
/// either is replaced.
struct DirWatches {
    dir: PathBuf,
    what: &'static str,
    watcher: Option<RecommendedWatcher>,
    /// (device, inode) of the watched directory.
    dir_id: Option<(u64, u64)>,
    ancestor: Option<PathBuf>,
}

impl DirWatches {
    fn new(dir: PathBuf, what: &'static str, watcher: Option<RecommendedWatcher>) -> Self {
        Self {
            dir,
            what,
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
                        tracing::warn!(%error, dir = %self.dir.display(), what = self.what, "cannot watch the directory; polling")
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
