//! A real Kubernetes control plane for vx11's tests and local runs.
//!
//! - [`ControlPlane`]: embedded etcd + kube-apiserver (+ kube-controller-manager on request),
//!   built from pinned Go modules by `tests/controlplane/build.sh`, started in a temporary
//!   directory on free loopback ports, torn down on drop. Several run side by side.
//! - [`KubeletProjector`]: kubelet's part, projecting a Secret into a directory with the same
//!   file operations kubelet's AtomicWriter performs ([`atomic_writer`]).
//! - [`eventually`]: a bounded wait for tests.
//!
//! ```no_run
//! # async fn demo() -> vx11_tests::Result<()> {
//! use vx11_tests::ControlPlane;
//! let cp = ControlPlane::builder().with_controller_manager().start().await?;
//! let client = cp.client()?;
//! let as_controller = cp.service_account_client("vx11", "vx11-controller")?;
//! println!("kubectl --kubeconfig {}", cp.kubeconfig_path().display());
//! # Ok(()) }
//! ```

/// kubelet's AtomicWriter, from the token-set library (which tests its readers with it).
pub use vx11_tokenset::kubelet_sim as atomic_writer;
pub mod abuse;
mod binaries;
mod cache;
mod controlplane;
pub mod devcluster;
pub mod doc_commands;
mod eventually;
pub mod forward;
pub mod images;
mod kubeconfig;
mod kubelet;
pub mod local;
pub mod node;
pub mod node_install;
mod objects;
mod pki;
mod process;
pub mod services;

use std::path::PathBuf;

pub use binaries::{BIN_DIR_ENV, BUILD_SCRIPT, Binaries};
pub use controlplane::{ControlPlane, ControlPlaneBuilder, DEFAULT_CONTROLLERS, KEEP_ENV};
pub use eventually::{Timeout, eventually};
pub use kubelet::{KubeletProjector, ProjectorStatus};
pub use node::{Node, NodeOptions};
pub use objects::{
    apply_restricted_namespace, client_token, crd_established, create_namespace,
    wait_token_set_ready,
};
pub use pki::ADMIN_USER;

/// Why a control plane could not be started or used.
///
/// `Debug` prints the message (with a process's log tail), so that a test's `.expect(…)`
/// shows it readably.
#[derive(thiserror::Error)]
pub enum Error {
    #[error("control-plane binaries: {0}")]
    Binaries(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("{component} failed to start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Startup {
        component: String,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },

    #[error(
        "a dev cluster is already running from {} (pid {}); its kubeconfig is {}",
        dir.display(),
        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        dir.join("kubeconfig").display()
    )]
    AlreadyRunning { dir: PathBuf, pid: Option<u32> },

    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        Self::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
