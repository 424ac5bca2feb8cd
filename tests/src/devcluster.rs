//! A long-lived local control plane for people (and for running vx11 without a cluster): state
//! in a fixed directory, a fixed port, one at a time per directory.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal;
use nix::unistd::Pid;

use crate::{ControlPlane, Error, Result};

/// The API server's port for the dev cluster (not 6443, to stay clear of real clusters).
pub const DEFAULT_PORT: u16 = 16443;

/// Where the dev cluster lives: `$VX11_CACHE_DIR/devcluster`, else `~/.cache/vx11/devcluster`.
pub fn default_state_dir() -> PathBuf {
    let cache = std::env::var_os("VX11_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/vx11")))
        .unwrap_or_else(|| std::env::temp_dir().join("vx11"));
    cache.join("devcluster")
}

/// A dev cluster started by this process. Dropping it kills the control plane; [`stop`]
/// shuts it down gracefully.
///
/// [`stop`]: DevCluster::stop
#[derive(Debug)]
pub struct DevCluster {
    control_plane: ControlPlane,
    pid_file: PathBuf,
}

impl DevCluster {
    /// Starts a control plane with the controller-manager in `dir` on `port`, or fails if a dev
    /// cluster is already running there (see [`running`](Self::running)).
    pub async fn start(dir: &Path, port: u16) -> Result<Self> {
        if let Some(pid) = Self::running(dir) {
            return Err(Error::Binaries(format!(
                "a dev cluster is already running from {} (pid {pid}); its kubeconfig is {}",
                dir.display(),
                dir.join("kubeconfig").display()
            )));
        }
        let control_plane = ControlPlane::builder()
            .state_dir(dir)
            .apiserver_port(port)
            .with_controller_manager()
            .start()
            .await?;
        let pid_file = dir.join("devcluster.pid");
        fs::write(&pid_file, std::process::id().to_string())
            .map_err(|e| Error::io(format!("writing {}", pid_file.display()), e))?;
        Ok(Self {
            control_plane,
            pid_file,
        })
    }

    /// The pid of the process serving a dev cluster from `dir`, if one is alive.
    pub fn running(dir: &Path) -> Option<i32> {
        let pid: i32 = fs::read_to_string(dir.join("devcluster.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        signal::kill(Pid::from_raw(pid), None).ok().map(|()| pid)
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
