//! A long-lived local control plane for people (and for running vx11 without a cluster): state
//! in a fixed directory, a fixed port, one at a time per directory.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use crate::{ControlPlane, Error, NodeOptions, Result};

/// The API server's port for the dev cluster (not 6443, to stay clear of real clusters).
pub const DEFAULT_PORT: u16 = 16443;

/// Where the dev cluster lives: `$VX11_CACHE_DIR/devcluster`, else `~/.cache/vx11/devcluster`.
pub fn default_state_dir() -> PathBuf {
    crate::cache::cache_root().join("devcluster")
}

/// A dev cluster started by this process. Dropping it kills the control plane; [`stop`]
/// shuts it down gracefully.
///
/// [`stop`]: DevCluster::stop
#[derive(Debug)]
pub struct DevCluster {
    control_plane: ControlPlane,
    pid_file: PathBuf,
    // Held while this process serves the directory; the kernel releases it however the
    // process ends, so a crash never leaves the directory looking busy.
    _lock: File,
}

impl DevCluster {
    /// Starts a control plane with the controller-manager in `dir` on `port`, or fails with
    /// [`Error::AlreadyRunning`] if another process serves a dev cluster from `dir`.
    pub async fn start(dir: &Path, port: u16) -> Result<Self> {
        Self::start_with(dir, port, None).await
    }

    /// As [`start`](Self::start), with a real node when `node` is given (the API server then
    /// lives in the node's network namespace, at `https://10.89.0.2:<port>`).
    pub async fn start_with(dir: &Path, port: u16, node: Option<NodeOptions>) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock = lock_file(dir)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::AlreadyRunning {
                    dir: dir.to_path_buf(),
                    pid: read_pid(dir),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", dir.display()), e));
            }
        }
        let pid_file = dir.join("devcluster.pid");
        fs::write(&pid_file, std::process::id().to_string())
            .map_err(|e| Error::io(format!("writing {}", pid_file.display()), e))?;
        let mut builder = ControlPlane::builder()
            .state_dir(dir)
            .apiserver_port(port)
            .with_controller_manager();
        if let Some(node) = node {
            builder = builder.with_node(node);
        }
        let control_plane = builder.start().await?;
        Ok(Self {
            control_plane,
            pid_file,
            _lock: lock,
        })
    }

    /// Whether some process serves a dev cluster from `dir`, and its pid if known.
    pub fn running(dir: &Path) -> Option<Option<u32>> {
        let lock = lock_file(dir).ok()?;
        match lock.try_lock() {
            Err(TryLockError::WouldBlock) => Some(read_pid(dir)),
            _ => None,
        }
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// Stops etcd, the API server and the controller-manager gracefully.
    pub fn stop(self) {
        let _ = fs::remove_file(&self.pid_file);
        self.control_plane.stop();
    }
}

fn lock_file(dir: &Path) -> Result<File> {
    let path = dir.join("devcluster.lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn read_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("devcluster.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
