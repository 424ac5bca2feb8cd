//! vx11 installed on a real node as users install it: `helm upgrade --install` of
//! `charts/vx11` into a namespace that enforces the `restricted` Pod Security Standard, every pod
//! Running and Ready, the default token set Ready, and the gateway Service's NodePort on the
//! node's address. `make run` and the node tests stand on this.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::node::NODE_IP;
use crate::{ControlPlane, Error, Result};

/// How to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub release: String,
    pub namespace: String,
    pub chart: PathBuf,
    /// The gateway Service's NodePort (each release on a node needs its own).
    pub node_port: u16,
    /// Further `--set` values for `helm upgrade --install`.
    pub helm_set: Vec<String>,
    /// How long all pods may take to be Ready.
    pub timeout: Duration,
}

impl InstallOptions {
    pub fn new(release: &str, namespace: &str) -> Self {
        Self {
            release: release.into(),
            namespace: namespace.into(),
            chart: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/vx11")),
            node_port: 30800,
            helm_set: Vec::new(),
            timeout: Duration::from_secs(180),
        }
    }
}

/// An installed release.
#[derive(Debug, Clone)]
pub struct NodeInstall {
    pub options: InstallOptions,
    /// From `helm upgrade --install` to every pod Running and Ready.
    pub pods_ready_after: Duration,
}

impl NodeInstall {
    pub async fn install(
        cp: &ControlPlane,
        options: InstallOptions,
        progress: impl Fn(&str),
    ) -> Result<Self> {
        let client = cp.client()?;
        let namespace = options.namespace.clone();
        let ns = namespace.as_str();
        progress(&format!(
            "namespace {ns} (Pod Security Standard: restricted, enforced)"
        ));
        crate::objects::apply_restricted_namespace(&client, ns, "vx11-tests").await?;

        progress(&format!(
            "helm upgrade --install {} charts/vx11",
            options.release
        ));
        let started = Instant::now();
        let mut helm = cp.helm();
        helm.args(["upgrade", "--install", &options.release])
            .arg(&options.chart)
            .args(["--namespace", ns])
            // The image is imported into the node's containerd; it must never be pulled.
            .args(["--set", "image.pullPolicy=Never"])
            .args([
                "--set",
                &format!("gateway.service.nodePort={}", options.node_port),
            ]);
        // The controller's egress policy sees the API server's own port (after kube-proxy's
        // translation of the `kubernetes` Service): the dev cluster's is not 6443.
        if let Some(port) = api_server_port(cp.server_url()) {
            helm.args([
                "--set",
                &format!("networkPolicy.controller.apiServer.ports={{443,{port}}}"),
            ]);
        }
        for set in &options.helm_set {
            helm.args(["--set", set]);
        }
        let output = helm
            .output()
            .await
            .map_err(|e| Error::io("running helm".into(), e))?;
        if !output.status.success() {
            return Err(Error::Kubeconfig(format!(
                "helm upgrade --install failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        progress("waiting for every pod to be Running and Ready");
        wait_pods_ready(&client, ns, options.timeout).await?;
        let pods_ready_after = started.elapsed();
        progress("waiting for the token set to be Ready");
        crate::objects::wait_token_set_ready(&client, ns, &options.release).await?;
        let install = Self {
            options,
            pods_ready_after,
        };
        // Ready pods are not yet a Service that routes: kube-proxy programs the endpoints a
        // moment later. Users reach the gateway through the Service, so wait for that.
        progress("waiting for the gateway Service to answer /ready");
        let addr: std::net::SocketAddr = format!("{NODE_IP}:{}", install.options.node_port)
            .parse()
            .map_err(|e| Error::Kubeconfig(format!("the gateway's NodePort address: {e}")))?;
        crate::eventually(
            "the gateway Service answering /ready with 200",
            Duration::from_secs(60),
            || async move {
                tokio::task::spawn_blocking(move || crate::services::http_status(addr, "/ready"))
                    .await
                    .map_err(|e| e.to_string())?
                    .filter(|s| *s == 200)
                    .ok_or_else(|| "not yet".to_owned())
            },
        )
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        // Nor is a Ready gateway one that reaches the backend: the NetworkPolicy enforcer
        // admits a new gateway pod's address, and kube-proxy programs the backend Service, a
        // moment after both are Ready (on a loaded machine, more than the gateway's 2 s retry
        // on a refused connection). A user's first request is the release's first real one,
        // so the install ends when every gateway pod passes a request through to the backend.
        progress("waiting for every gateway pod to reach the backend");
        let reached = Instant::now();
        wait_backend_through_each_gateway(&client, ns, Duration::from_secs(60)).await?;
        progress(&format!(
            "every gateway pod reaches the backend ({:.1?} after the Service answered)",
            reached.elapsed()
        ));
        Ok(install)
    }

    /// The gateway through its Service's NodePort: `http://10.89.0.2:<nodePort>`.
    pub fn gateway_url(&self) -> String {
        format!("http://{NODE_IP}:{}", self.options.node_port)
    }

    /// The current published value of a generated token, from the client Secret.
    pub async fn client_token(&self, cp: &ControlPlane, name: &str) -> Result<String> {
        crate::objects::client_token(&cp.client()?, &self.options.namespace, name).await
    }
}

/// Waits until each gateway pod of `namespace`, at its own address, answers an authenticated
/// `GET /operator/api/health` (which it proxies to the backend Service) with 200. The token is
/// the first of the release's client Secret.
pub async fn wait_backend_through_each_gateway(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<()> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), namespace);
    let secret = secrets.get("vx11-client-tokens").await?;
    let token = secret
        .data
        .and_then(|d| d.into_values().next())
        .and_then(|v| String::from_utf8(v.0).ok())
        .ok_or_else(|| Error::Kubeconfig("vx11-client-tokens holds no token".into()))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let gateways = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=gateway"))
        .await?;
    for pod in gateways
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| Error::Kubeconfig(format!("gateway pod {name} has no address")))?;
        let addr: std::net::SocketAddr = format!("{ip}:8000")
            .parse()
            .map_err(|e| Error::Kubeconfig(format!("gateway pod {name}'s address {ip}: {e}")))?;
        let header = format!("x-vx11-token: {token}\r\n");
        crate::eventually(
            &format!("gateway pod {name} passing /operator/api/health to the backend"),
            timeout,
            || {
                let header = header.clone();
                async move {
                    let status = tokio::task::spawn_blocking(move || {
                        crate::services::http_status_with(
                            addr,
                            "/operator/api/health",
                            &header,
                            Duration::from_secs(5),
                        )
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    match status {
                        Some(200) => Ok(()),
                        Some(other) => Err(format!("answered {other}")),
                        None => Err("no answer".to_owned()),
                    }
                }
            },
        )
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    }
    Ok(())
}

/// Waits until the namespace has pods and every one is Running with all containers Ready.
/// On timeout the error names each pod that is not, with why (waiting reasons, last state).
pub async fn wait_pods_ready(client: &Client, namespace: &str, timeout: Duration) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let list = pods.list(&ListParams::default()).await?;
        let not_ready: Vec<String> = list
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(not_ready_reason)
            .collect();
        if !list.items.is_empty() && not_ready.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Kubeconfig(format!(
                "pods in {namespace} not Ready after {timeout:?}: {}",
                if list.items.is_empty() {
                    "no pods at all".to_owned()
                } else {
                    not_ready.join("; ")
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `None` if the pod is Running and all its containers are Ready, else why not.
pub fn not_ready_reason(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let containers = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    if phase == "Running" && !containers.is_empty() && containers.iter().all(|c| c.ready) {
        return None;
    }
    let why: Vec<String> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| {
            let state = c.state.as_ref();
            let waiting = state.and_then(|s| s.waiting.as_ref()).map(|w| {
                format!(
                    "waiting: {} {}",
                    w.reason.clone().unwrap_or_default(),
                    w.message.clone().unwrap_or_default()
                )
            });
            let terminated = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        "last exit {} {}",
                        t.exit_code,
                        t.reason.clone().unwrap_or_default()
                    )
                });
            format!(
                "{}: {} (restarts {})",
                c.name,
                waiting.or(terminated).unwrap_or_else(|| "not ready".into()),
                c.restart_count
            )
        })
        .collect();
    let conditions: Vec<String> = status
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.status != "True")
        .map(|c| format!("{} {}", c.type_, c.message.unwrap_or_default()))
        .collect();
    Some(format!(
        "{name} {phase} [{}] [{}]",
        why.join(", "),
        conditions.join(", ")
    ))
}

/// The port of an `https://host:port` URL.
fn api_server_port(url: &str) -> Option<u16> {
    url.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod api_server_port_tests {
    #[test]
    fn the_port_is_read_from_the_server_url() {
        assert_eq!(
            super::api_server_port("https://10.89.0.2:16443"),
            Some(16443)
        );
        assert_eq!(
            super::api_server_port("https://10.89.0.2:6443/"),
            Some(6443)
        );
        assert_eq!(super::api_server_port("https://kubernetes"), None);
    }
}
