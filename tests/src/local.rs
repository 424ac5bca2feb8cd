//! vx11 installed on a control plane the way a cluster runs it, with the kubelet's part done
//! locally: `helm install` of the chart, the controller as the chart's ServiceAccount, the
//! service Secret projected into one directory per pod exactly as kubelet does, and the
//! gateway and backend started with the environment the chart gives their pods.
//! `make run` and the end-to-end tests both stand on this.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::services::{ServiceKind, ServiceProcess, free_loopback_addr};
use crate::{ControlPlane, Error, KubeletProjector, Result, eventually};

/// Where the pods' token volume is mounted, as the chart says.
const TOKENS_MOUNT: &str = "/var/run/vx11/tokens";

/// How to install.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub release: String,
    pub namespace: String,
    pub chart: PathBuf,
    /// `--set` values for `helm install`.
    pub helm_set: Vec<String>,
    /// The gateway's address (the chart's port 8000 on loopback for people; any for tests).
    pub gateway_addr: SocketAddr,
    /// Stands for kubelet's sync latency (60–90 s in a real cluster).
    pub kubelet_delay: Duration,
    /// Logs and projected directories.
    pub work_dir: PathBuf,
}

impl LocalOptions {
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            release: "vx11".into(),
            namespace: "vx11".into(),
            chart: Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/vx11"),
            helm_set: Vec::new(),
            gateway_addr: free_loopback_addr(),
            kubelet_delay: Duration::from_millis(200),
            work_dir: work_dir.into(),
        }
    }
}

/// The running installation. Dropping it stops the processes (not the control plane).
#[derive(Debug)]
pub struct LocalStack {
    pub options: LocalOptions,
    pub controller: ServiceProcess,
    pub backend: ServiceProcess,
    pub gateway: ServiceProcess,
    pub gateway_tokens: KubeletProjector,
    pub backend_tokens: KubeletProjector,
}

impl LocalStack {
    /// Installs the chart and starts everything; returns once the default token set is
    /// Ready and both services are ready.
    pub async fn start(
        cp: &ControlPlane,
        options: LocalOptions,
        progress: impl Fn(&str),
    ) -> Result<Self> {
        let client = cp.client()?;
        let ns = options.namespace.as_str();
        std::fs::create_dir_all(&options.work_dir)
            .map_err(|e| Error::io(format!("creating {}", options.work_dir.display()), e))?;

        progress(&format!(
            "namespace {ns} (Pod Security Standard: restricted, enforced)"
        ));
        crate::objects::apply_restricted_namespace(&client, ns, "vx11-local").await?;

        progress("helm upgrade --install of charts/vx11");
        let mut helm = cp.helm();
        helm.args(["upgrade", "--install", &options.release])
            .arg(&options.chart)
            .args(["--namespace", ns]);
        for set in &options.helm_set {
            helm.args(["--set", set]);
        }
        run(helm, "helm upgrade --install").await?;

        progress("controller, as the chart's ServiceAccount");
        let sa = format!("{}-controller", options.release);
        let token = cp
            .service_account_token(ns, &sa, Duration::from_secs(24 * 3600))
            .await?;
        let kubeconfig = options.work_dir.join("controller-kubeconfig.json");
        cp.write_token_kubeconfig(&token, &kubeconfig)?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let mut env = pod_env(&deployments, &sa, ns, "local-controller-0").await?;
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        env.remove("VX11_METRICS_ADDR");
        let controller = ServiceProcess::start_at(
            ServiceKind::Controller,
            free_loopback_addr(),
            &env,
            &options.work_dir,
        )?;

        progress("waiting for the token set to be Ready");
        let token_set = crate::objects::wait_token_set_ready(&client, ns, "vx11").await?;

        progress("projecting the service Secret as kubelet does, one directory per pod");
        let secret_name = token_set["spec"]["secretName"]
            .as_str()
            .unwrap_or("vx11-tokens")
            .to_owned();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let gateway_dir = options.work_dir.join("gateway-pod/tokens");
        let backend_dir = options.work_dir.join("backend-pod/tokens");
        let gateway_tokens = KubeletProjector::start(
            secrets.clone(),
            &secret_name,
            &gateway_dir,
            options.kubelet_delay,
        );
        let backend_tokens =
            KubeletProjector::start(secrets, &secret_name, &backend_dir, options.kubelet_delay);
        for projector in [&gateway_tokens, &backend_tokens] {
            // A directory kept from an earlier run may already hold the Secret: no swap then.
            projector
                .wait_for_projection(Duration::from_secs(30))
                .await
                .map_err(|e| Error::Kubeconfig(format!("projecting {secret_name}: {e}")))?;
        }

        progress("operator backend and gateway, with the chart's pod environment");
        let backend_name = format!("{}-operator-backend", options.release);
        let mut env = pod_env(&deployments, &backend_name, ns, "local-backend-0").await?;
        env.insert("VX11_TOKENS_DIR".into(), backend_dir.display().to_string());
        env.remove("VX11_METRICS_ADDR");
        let backend = ServiceProcess::start(ServiceKind::OperatorBackend, &env, &options.work_dir)?;

        let gateway_name = format!("{}-gateway", options.release);
        let mut env = pod_env(&deployments, &gateway_name, ns, "local-gateway-0").await?;
        env.insert("VX11_TOKENS_DIR".into(), gateway_dir.display().to_string());
        // In a cluster this is the backend Service's DNS name.
        env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
        env.remove("VX11_METRICS_ADDR");
        let gateway = ServiceProcess::start_at(
            ServiceKind::Gateway,
            options.gateway_addr,
            &env,
            &options.work_dir,
        )?;

        for service in [&backend, &gateway] {
            let url = format!("{}/ready", service.base_url());
            eventually(
                &format!("{} ready", service.kind.binary()),
                Duration::from_secs(30),
                || {
                    let url = url.clone();
                    async move { ready(&url).await }
                },
            )
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        }
        Ok(Self {
            options,
            controller,
            backend,
            gateway,
            gateway_tokens,
            backend_tokens,
        })
    }

    /// The current plaintext of a generated token, from the client Secret.
    pub async fn client_token(&self, cp: &ControlPlane, name: &str) -> Result<String> {
        crate::objects::client_token(&cp.client()?, &self.options.namespace, name).await
    }

    pub fn gateway_url(&self) -> String {
        self.gateway.base_url()
    }

    /// Everything the controller, gateway and backend logged.
    pub fn logs(&self) -> String {
        [&self.controller, &self.backend, &self.gateway]
            .iter()
            .map(|p| p.logs())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The environment of a Deployment's first container, `fieldRef`s resolved as kubelet would.
async fn pod_env(
    deployments: &Api<Deployment>,
    name: &str,
    namespace: &str,
    pod_name: &str,
) -> Result<BTreeMap<String, String>> {
    let deployment = deployments.get(name).await?;
    let container = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .ok_or_else(|| Error::Kubeconfig(format!("Deployment {name} has no container")))?;
    let mut env = BTreeMap::new();
    for var in container.env.unwrap_or_default() {
        let value = match (var.value, var.value_from.and_then(|f| f.field_ref)) {
            (Some(value), _) => value,
            (None, Some(field)) => match field.field_path.as_str() {
                "metadata.namespace" => namespace.to_owned(),
                "metadata.name" => pod_name.to_owned(),
                other => {
                    return Err(Error::Kubeconfig(format!(
                        "{name}: fieldRef {other} is not resolved locally"
                    )));
                }
            },
            (None, None) => String::new(),
        };
        env.insert(var.name, value);
    }
    if env
        .get("VX11_TOKENS_DIR")
        .is_some_and(|d| d != TOKENS_MOUNT)
    {
        return Err(Error::Kubeconfig(format!(
            "{name} mounts its tokens somewhere else than {TOKENS_MOUNT}"
        )));
    }
    Ok(env)
}

async fn ready(url: &str) -> std::result::Result<(), String> {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or("bad url")?;
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |(_, p)| p)
    );
    tokio::task::spawn_blocking(move || crate::services::http_status(addr, &path))
        .await
        .map_err(|e| e.to_string())?
        .filter(|s| *s == 200)
        .map(|_| ())
        .ok_or_else(|| "not ready".to_string())
}

async fn run(mut command: tokio::process::Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .await
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Kubeconfig(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
