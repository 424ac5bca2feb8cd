//! The Kubernetes client: KUBECONFIG (or `--kubeconfig`), its current context (or
//! `--context`), in-cluster configuration as kubectl's fallback, and the namespace.

use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::cli::Connection;
use crate::error::{Error, Result};

/// A client and the namespace the command works in.
#[derive(Clone)]
pub struct Target {
    pub client: kube::Client,
    pub namespace: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

pub async fn connect(connection: &Connection) -> Result<Target> {
    let options = KubeConfigOptions {
        context: connection.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &connection.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None if connection.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
        // As `kube::Client::try_default()`: KUBECONFIG / ~/.kube/config, else in-cluster.
        None => Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    let namespace = connection
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
    Ok(Target { client, namespace })
}
