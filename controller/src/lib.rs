//! `vx11-controller`: reconciles [`Vx11TokenSet`] resources into two Secrets per set.
//!
//! - the *service* Secret (`spec.secretName`): `tokens.json` with SHA-256 digests only, mounted
//!   by the gateway and the operator backend;
//! - the *client* Secret (`spec.clientSecretName`): the current plaintext of each generated
//!   token, for the clients that present it.
//!
//! Modules: [`crd`] (the resource), [`plan`] (what the Secrets should hold: pure, unit
//! tested, one file per rule), [`state`] (how that state is kept in and read back from the
//! Secrets), [`consumers`] (the pods that must serve a value before it is published),
//! [`status`] (the resource's status from a plan), [`reconcile`] (the I/O of one
//! reconcile: reads, writes, events, status), [`run`] (the process: probes, leader
//! election, the controllers), [`leader`] (Lease election), [`permissions`] (RBAC
//! preflight), [`metrics`], [`telemetry`], [`config`].

pub mod config;
pub mod consumers;
pub mod crd;
pub mod duration;
pub mod leader;
pub mod metrics;
pub mod permissions;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod state;
pub mod status;
pub mod telemetry;

pub use crd::{Vx11TokenSet, Vx11TokenSetSpec, Vx11TokenSetStatus};

/// The field manager of every write, and the `reportingController` of events.
pub const MANAGER: &str = "vx11-controller";

/// The crate's one error type. Messages name objects, tokens and fingerprints, never values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    #[error("missing RBAC permission: {0}")]
    Forbidden(String),

    #[error(
        "Secret {namespace}/{name} exists and is not owned by this Vx11TokenSet; refusing to overwrite it"
    )]
    SecretConflict { namespace: String, name: String },

    #[error("generating a token: {0}")]
    Generate(#[from] vx11_tokenset::GenerateError),

    #[error("Vx11TokenSet has no namespace")]
    MissingNamespace,

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error("lost leadership: {0}")]
    LostLease(String),

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 403 => {
                Error::Forbidden(status.message.clone())
            }
            _ => Error::Kube(error),
        }
    }
}

impl Error {
    /// A short, stable label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Forbidden(_) => "forbidden",
            Error::SecretConflict { .. } => "secret_conflict",
            Error::Generate(_) => "generate",
            Error::MissingNamespace => "missing_namespace",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::LostLease(_) => "lost_lease",
            Error::Io(_) => "io",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
