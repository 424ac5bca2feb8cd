//! Shared helpers: a control plane with the CRD and the chart's RBAC, a kubeconfig for the
//! chart's ServiceAccount, the real `vx11-controller` binary as a child process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use vx11_controller::Vx11TokenSet;
use vx11_controller::state::TOKEN_SOURCE_LABEL;
use vx11_tests::ControlPlane;
use vx11_tests::services::free_loopback_addr;
use vx11_tokenset::{TOKEN_FILE_NAME, TokenFile};

/// How long something the controller or the API server brings about may take.
pub const SETTLE: Duration = Duration::from_secs(60);
/// The chart's release: its namespace holds the ServiceAccount and the Lease.
pub const RELEASE: &str = "vx11";
pub const RELEASE_NS: &str = "vx11-system";
pub const SA: &str = "vx11-controller";

/// The chart's RBAC template rendered by `helm template` (the harness's helm) for `RELEASE`
/// in `RELEASE_NS` with the chart's defaults and `set` (`--set` values), as JSON objects.
pub fn rendered_rbac_with(set: &[&str]) -> Vec<Value> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/vx11");
    let helm = vx11_tests::Binaries::locate().expect("helm").helm();
    let home = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(helm);
    command
        .args(["template", RELEASE, chart, "--namespace", RELEASE_NS])
        .args(["--show-only", "templates/controller-rbac.yaml"]);
    for value in set {
        command.args(["--set", value]);
    }
    let out = command
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .expect("RBAC template is YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart's RBAC with its defaults (all namespaces: one ClusterRole).
pub fn rendered_rbac() -> Vec<Value> {
    rendered_rbac_with(&[])
}

pub struct Cluster {
    pub cp: ControlPlane,
    pub admin: Client,
    /// A kubeconfig that authenticates as the chart's ServiceAccount (a real token).
    pub sa_kubeconfig: PathBuf,
}

impl Cluster {
    /// A control plane with the CRD, the release namespace, the chart's RBAC applied, and the
    /// test namespaces.
    pub async fn start(namespaces: &[&str]) -> Self {
        Self::start_with_rbac(namespaces, &rendered_rbac()).await
    }

    /// The same with `rbac` applied instead of the chart's default RBAC.
    pub async fn start_with_rbac(namespaces: &[&str], rbac: &[Value]) -> Self {
        let cp = ControlPlane::start().await.expect("control plane");
        let admin = cp.client().unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        crds.create(&PostParams::default(), &Vx11TokenSet::crd())
            .await
            .expect("create CRD");
        vx11_tests::crd_established(&admin, "vx11tokensets.vx11.dev", SETTLE)
            .await
            .expect("CRD established");
        for ns in std::iter::once(RELEASE_NS).chain(namespaces.iter().copied()) {
            vx11_tests::create_namespace(&admin, ns)
                .await
                .expect("create namespace");
        }
        let cluster = Self {
            sa_kubeconfig: cp.dir().join("controller-kubeconfig.json"),
            cp,
            admin,
        };
        cluster.apply(rbac).await;
        let token = cluster
            .cp
            .service_account_token(RELEASE_NS, SA, Duration::from_secs(3600))
            .await
            .expect("token for the controller's ServiceAccount");
        cluster
            .cp
            .write_token_kubeconfig(&token, &cluster.sa_kubeconfig)
            .expect("write the controller's kubeconfig");
        cluster
    }

    /// `kubectl apply` of JSON objects, as the admin.
    pub async fn apply(&self, objects: &[Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let mut child = self
            .cp
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(list.to_string().as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the real binary as the chart's ServiceAccount.
    pub fn controller(&self, identity: &str, extra_env: &[(&str, &str)]) -> ControllerProcess {
        ControllerProcess::start(&self.sa_kubeconfig, self.cp.dir(), identity, extra_env)
    }

    pub fn sets(&self, ns: &str) -> Api<Vx11TokenSet> {
        Api::namespaced(self.admin.clone(), ns)
    }

    pub fn secrets(&self, ns: &str) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), ns)
    }

    /// Every event in `ns`, as JSON text (for leak scans and for looking up reasons).
    pub async fn events_text(&self, ns: &str) -> String {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.admin.clone(), ns);
        let list = api.list(&ListParams::default()).await.expect("list events");
        serde_json::to_string(&list.items).unwrap()
    }

    pub async fn event_reasons(&self, ns: &str) -> BTreeSet<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.admin.clone(), ns);
        let list = api.list(&ListParams::default()).await.expect("list events");
        list.items.into_iter().filter_map(|e| e.reason).collect()
    }
}

/// The real `vx11-controller`, its stderr (JSON logs) in a file.
pub struct ControllerProcess {
    pub child: std::process::Child,
    pub log: PathBuf,
    /// Port of `/metrics`, `/health`, `/ready` on 127.0.0.1.
    pub metrics_port: u16,
}

impl ControllerProcess {
    fn start(kubeconfig: &Path, dir: &Path, identity: &str, extra_env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("controller-{identity}-{}.log", unique()));
        let file = std::fs::File::create(&log).unwrap();
        let port = free_loopback_addr().port();
        // `VX11_CONTROLLER_BIN` points the benchmark at a release build.
        let program = std::env::var_os("VX11_CONTROLLER_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_vx11-controller")),
            PathBuf::from,
        );
        let mut command = std::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env("VX11_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("VX11_LEASE_NAME", format!("{RELEASE}-controller"))
            .env("VX11_LEASE_NAMESPACE", RELEASE_NS)
            .env("VX11_LEASE_DURATION", "4s")
            .env("VX11_IDENTITY", identity)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start vx11-controller");
        Self {
            child,
            log,
            metrics_port: port,
        }
    }

    /// `GET path` on the metrics listener: status line and body.
    pub async fn http_get(&self, path: &str) -> Result<String, String> {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A Secret's data as strings.
pub fn data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

pub fn token_file(secret: &Secret) -> TokenFile {
    TokenFile::parse(secret.data.as_ref().unwrap()[TOKEN_FILE_NAME].0.as_slice())
        .expect("tokens.json parses")
}

pub async fn get_secret(api: &Api<Secret>, name: &str) -> Result<Secret, String> {
    api.get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("Secret {name} not found"))
}

/// Creates or replaces a user Secret holding one key, opted in as a token source (label
/// `vx11.dev/token-source=true`).
pub async fn put_user_secret(api: &Api<Secret>, name: &str, key: &str, value: &str) {
    put_secret(api, name, key, value, &[(TOKEN_SOURCE_LABEL, "true")]).await;
}

/// Creates or replaces a Secret holding one key, with exactly `labels` (server-side apply by
/// one field manager: a label left out is removed).
pub async fn put_secret(
    api: &Api<Secret>,
    name: &str,
    key: &str,
    value: &str,
    labels: &[(&str, &str)],
) {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "data": {key: base64::engine::general_purpose::STANDARD.encode(value)},
    });
    api.patch(
        name,
        &PatchParams::apply("test-user").force(),
        &Patch::Apply(&secret),
    )
    .await
    .expect("write user Secret");
}

pub async fn annotate_rotate(api: &Api<Vx11TokenSet>, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"vx11.dev/rotate": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
}

pub fn resource_version(secret: &Secret) -> String {
    secret.resource_version().unwrap_or_default()
}
