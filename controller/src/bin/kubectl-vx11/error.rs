//! The plugin's errors: each one says what went wrong and what to do about it.

use std::fmt;

/// An error of a subcommand: printed as `error: <message>`, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Vx11TokenSet named {name} in namespace {namespace}; list them with `kubectl vx11 status -n {namespace}`"
    )]
    SetNotFound { namespace: String, name: String },

    #[error("{0}")]
    Refused(String),

    #[error("{0}")]
    Timeout(String),

    #[error(
        "cannot load the Kubernetes configuration: {0}; set KUBECONFIG or pass --kubeconfig/--context"
    )]
    Config(String),

    #[error(
        "the Kubernetes API refused {what}: {message}; your user needs get/list/watch/patch on vx11tokensets.vx11.dev and get on secrets in this namespace"
    )]
    Forbidden { what: String, message: String },

    #[error(
        "the Vx11TokenSet resource type is not installed in this cluster ({0}); install the CRD: `kubectl apply -f manifests/crd.yaml` (or the helm chart)"
    )]
    NoCrd(String),

    #[error("{what}: {detail}; check that the cluster is reachable (`kubectl cluster-info`)")]
    Kube {
        what: String,
        /// The error and its causes, `: `-separated.
        detail: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot write to stdout: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a kube error of the request described by `what` (e.g. "reading Vx11TokenSet vx11/x").
    pub fn kube(what: impl fmt::Display, source: kube::Error) -> Self {
        let what = what.to_string();
        match &source {
            kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
                what,
                message: status.message.clone(),
            },
            _ => Error::Kube {
                what,
                detail: chain(&source),
                source,
            },
        }
    }
}

/// `error: cause: cause`, skipping a cause its parent already quotes.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}
