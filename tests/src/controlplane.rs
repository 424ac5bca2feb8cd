//! An isolated Kubernetes control plane on loopback: embedded etcd, kube-apiserver and, on
//! request, kube-controller-manager, each a child process of this one.
//!
//! Over 500 lines on purpose: the builder, the start sequence, the clients and the teardown
//! all work on the private state of one running control plane, and read best together.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tempfile::TempDir;

use crate::binaries::Binaries;
use crate::kubeconfig::write_kubeconfig;
use crate::node::{self, Node, NodeNetwork, NodeOptions};
use crate::pki::Pki;
use crate::process::Process;
use crate::{Error, Result};

/// Set to keep a test's control-plane directory (logs, etcd data, kubeconfig) after it ends.
pub const KEEP_ENV: &str = "VX11_KEEP_CONTROLPLANE";

/// The controllers started by [`ControlPlaneBuilder::with_controller_manager`]: garbage
/// collection (ownerReferences), namespace deletion, and ServiceAccounts with their tokens.
pub const DEFAULT_CONTROLLERS: &str =
    "garbagecollector,namespace,serviceaccount,serviceaccount-token";

/// How a [`ControlPlane`] is started. Get one from [`ControlPlane::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ControlPlaneBuilder {
    controllers: Option<String>,
    state_dir: Option<PathBuf>,
    apiserver_port: Option<u16>,
    apiserver_args: Vec<String>,
    binaries: Option<Binaries>,
    node: Option<NodeOptions>,
    timeout: Duration,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        Self {
            controllers: None,
            state_dir: None,
            apiserver_port: None,
            apiserver_args: Vec::new(),
            binaries: None,
            node: None,
            // Generous: parallel tests start several API servers on few cores at once.
            timeout: Duration::from_secs(120),
        }
    }
}

impl ControlPlaneBuilder {
    /// Also runs kube-controller-manager with [`DEFAULT_CONTROLLERS`].
    pub fn with_controller_manager(self) -> Self {
        self.with_controllers(DEFAULT_CONTROLLERS)
    }

    /// Also runs kube-controller-manager with these controllers (its `--controllers` flag).
    pub fn with_controllers(mut self, controllers: &str) -> Self {
        self.controllers = Some(controllers.to_owned());
        self
    }

    /// Keeps all state (PKI, etcd data, kubeconfig, logs) in `dir` instead of a temporary
    /// directory that is removed on drop. Started again on the same directory, the control
    /// plane comes back with its objects and the same CA, so an earlier kubeconfig still works.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Serves the API on this loopback port instead of a free one.
    pub fn apiserver_port(mut self, port: u16) -> Self {
        self.apiserver_port = Some(port);
        self
    }

    /// Passes an extra flag to kube-apiserver, e.g. `--feature-gates=…`.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Also runs a real node (kubelet, containerd, kube-proxy, kube-scheduler, CoreDNS,
    /// kube-router's NetworkPolicy firewall) with the whole cluster inside the node's network
    /// namespace, and every controller of kube-controller-manager. One node at a time per
    /// machine: a second start waits until the first is torn down. Needs root.
    pub fn with_node(mut self, options: NodeOptions) -> Self {
        self.node = Some(options);
        self.controllers = Some("*".to_owned());
        self
    }

    /// Uses these programs instead of [`Binaries::locate`].
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// How long start-up may take before it fails (default 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the control plane and returns once the API server's `/readyz` answers `ok` (and,
    /// with a controller-manager, once its controllers act).
    pub async fn start(self) -> Result<ControlPlane> {
        let binaries = match self.binaries.clone() {
            Some(binaries) => binaries,
            None => tokio::task::spawn_blocking(Binaries::locate)
                .await
                .map_err(|e| Error::Binaries(format!("locating binaries: {e}")))??,
        };
        let started = Instant::now();
        let deadline = started + self.timeout;

        let state = match &self.state_dir {
            Some(dir) => {
                fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                StateDir::Kept(dir.clone())
            }
            None => StateDir::Temp(
                tempfile::Builder::new()
                    .prefix("vx11-controlplane-")
                    .tempdir()
                    .map_err(|e| Error::io("creating a temporary directory".into(), e))?,
            ),
        };
        let dir = state.path().to_path_buf();
        let network = match &self.node {
            Some(_) => {
                let state_dir = node_state_dir();
                let log = dir.join("node-network.log");
                Some(
                    tokio::task::spawn_blocking(move || NodeNetwork::hold(&state_dir, &log))
                        .await
                        .map_err(|e| Error::Binaries(format!("holding the node network: {e}")))??,
                )
            }
            None => None,
        };
        let (pki, etcd, apiserver, server) = match self.launch(&binaries, &dir, deadline).await {
            Ok(launched) => launched,
            Err(e) => {
                if let StateDir::Temp(temp) = state {
                    keep_if_asked(temp);
                }
                return Err(e);
            }
        };
        let kubeconfig_path = dir.join("kubeconfig");
        let config = client_config(&kubeconfig_path).await?;

        let mut control_plane = ControlPlane {
            node: None,
            controller_manager: None,
            apiserver,
            etcd,
            server,
            kubeconfig_path,
            config,
            binaries,
            dir,
            state,
            network,
        };
        if let Some(controllers) = &self.controllers {
            control_plane
                .start_controller_manager(controllers, &pki, deadline)
                .await?;
        }
        if let (Some(options), Some(network)) = (&self.node, &control_plane.network) {
            let node = Node::start(
                node::Cluster {
                    binaries: &control_plane.binaries,
                    pki: &pki,
                    server: &control_plane.server,
                    admin_kubeconfig: &control_plane.kubeconfig_path,
                    client: control_plane.client()?,
                    dir: &control_plane.dir,
                    state: network.state_dir(),
                },
                options,
                deadline,
            )
            .await?;
            control_plane.node = Some(node);
        }
        tracing::info!(
            dir = %control_plane.dir.display(),
            server = %control_plane.server,
            elapsed = ?started.elapsed(),
            "control plane ready"
        );
        Ok(control_plane)
    }

    /// Starts etcd and the API server in `dir` and waits until the API server is ready.
    async fn launch(
        &self,
        binaries: &Binaries,
        dir: &Path,
        deadline: Instant,
    ) -> Result<(Pki, Process, Process, String)> {
        let pki = Pki::load_or_generate(&dir.join("pki"))?;

        let in_node = self.node.is_some();
        let mut etcd = start_etcd(binaries, dir, in_node, deadline).await?;
        let etcd_url = read_trimmed(&dir.join("etcd.url"))?;

        // A free port can be taken by someone else before the API server binds it (parallel
        // tests); then it exits at once and is started again on another port.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = match (self.apiserver_port, &self.node) {
                (Some(port), _) => port,
                // The namespace is the node's alone.
                (None, Some(_)) => node::APISERVER_PORT,
                (None, None) => free_port()?,
            };
            let host = if self.node.is_some() {
                node::NODE_IP
            } else {
                "127.0.0.1"
            };
            let server = format!("https://{host}:{port}");
            let mut apiserver = start_apiserver(binaries, dir, &pki, &etcd_url, port, self)?;
            write_kubeconfig(
                &dir.join("kubeconfig"),
                &server,
                &pki.ca_pem()?,
                &pki.admin()?,
            )?;
            let config = client_config(&dir.join("kubeconfig")).await?;
            match wait_ready(&mut apiserver, &mut etcd, &config, deadline).await {
                Ok(()) => return Ok((pki, etcd, apiserver, server)),
                Err(e)
                    if self.apiserver_port.is_none()
                        && !in_node
                        && attempts < 3
                        && port_taken(&e) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A running control plane. Dropping it kills its processes and (unless it has a
/// [state dir](ControlPlaneBuilder::state_dir)) removes its directory.
#[derive(Debug)]
pub struct ControlPlane {
    // Fields drop in this order: the node and controllers first, etcd last, the directory and
    // the node's network (its teardown) after all.
    node: Option<Node>,
    controller_manager: Option<Process>,
    apiserver: Process,
    etcd: Process,
    server: String,
    kubeconfig_path: PathBuf,
    config: Config,
    binaries: Binaries,
    dir: PathBuf,
    state: StateDir,
    network: Option<NodeNetwork>,
}

#[derive(Debug)]
enum StateDir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            StateDir::Temp(dir) => dir.path(),
            StateDir::Kept(dir) => dir,
        }
    }
}

impl ControlPlane {
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// etcd and kube-apiserver, in a temporary directory.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// The admin kubeconfig (user `vx11-admin`, group `system:masters`), for kubectl and helm.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The node, if started [`with_node`](ControlPlaneBuilder::with_node).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The API server's URL: `https://127.0.0.1:<port>`, or with a node
    /// `https://10.89.0.2:6443` (inside the node's namespace, reached through its veth).
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The directory holding the kubeconfig, PKI, etcd data and the processes' logs
    /// (`etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The kube client configuration of the admin user.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client acting as the admin (`system:masters`).
    pub fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// A client acting as `user` in `groups`, through impersonation by the admin: every request
    /// is authorized by RBAC as that user's.
    pub fn impersonating_client(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Ok(Client::try_from(config)?)
    }

    /// A client acting as ServiceAccount `namespace/name` (impersonated, with the groups the
    /// API server gives a ServiceAccount). The ServiceAccount need not exist.
    pub fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let namespace_group = format!("system:serviceaccounts:{namespace}");
        self.impersonating_client(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &[
                "system:serviceaccounts",
                &namespace_group,
                "system:authenticated",
            ],
        )
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API (it must exist),
    /// signed by the control plane's ServiceAccount key.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client()?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        response
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Kubeconfig("TokenRequest answered without a token".into()))
    }

    /// Writes a kubeconfig for this cluster that authenticates with a bearer `token`, for a
    /// child process that should act as a ServiceAccount (e.g. the controller as the chart's).
    pub fn write_token_kubeconfig(&self, token: &str, out: &Path) -> Result<()> {
        let admin = std::fs::read_to_string(self.kubeconfig_path())
            .map_err(|e| Error::io(format!("reading {}", self.kubeconfig_path().display()), e))?;
        let mut config: serde_json::Value = serde_json::from_str(&admin)
            .map_err(|e| Error::Kubeconfig(format!("the admin kubeconfig is not JSON: {e}")))?;
        config["users"] = serde_json::json!([{"name": "token", "user": {"token": token}}]);
        if let Some(contexts) = config["contexts"].as_array_mut() {
            for context in contexts {
                context["context"]["user"] = serde_json::json!("token");
            }
        }
        std::fs::write(out, config.to_string())
            .map_err(|e| Error::io(format!("writing {}", out.display()), e))
    }

    /// A client that authenticates with a bearer `token` (e.g. from
    /// [`service_account_token`](Self::service_account_token)) instead of the admin certificate.
    pub fn token_client(&self, token: &str) -> Result<Client> {
        let mut config = self.config.clone();
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
            .map_err(|e| Error::Kubeconfig(format!("building token credentials: {e}")))?;
        Ok(Client::try_from(config)?)
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`, with its cache in this control plane's dir.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .kill_on_drop(true);
        command
    }

    /// `helm --kubeconfig <admin kubeconfig>`, the pinned helm, with its cache, config and data
    /// directories in this control plane's dir.
    pub fn helm(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.binaries.helm());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .kill_on_drop(true);
        command
    }

    /// Stops the processes gracefully (SIGTERM, then SIGKILL after a grace period), controllers
    /// first and etcd last. Blocks for up to about 20 s. Dropping instead kills at once.
    pub fn stop(mut self) {
        if let Some(node) = &mut self.node {
            node.stop();
        }
        if let Some(cm) = &mut self.controller_manager {
            cm.stop(Duration::from_secs(5));
        }
        self.apiserver.stop(Duration::from_secs(10));
        self.etcd.stop(Duration::from_secs(5));
    }

    /// The last `lines` lines of each process's log, for a failing test's message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let node = self.node.iter().flat_map(Node::processes);
        let processes = node
            .chain(self.controller_manager.iter())
            .chain([&self.apiserver, &self.etcd]);
        for process in processes {
            out.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                process.name(),
                process.log().display(),
                crate::process::tail(process.log(), lines)
            ));
        }
        out
    }

    async fn start_controller_manager(
        &mut self,
        controllers: &str,
        pki: &Pki,
        deadline: Instant,
    ) -> Result<()> {
        let kubeconfig = self.dir.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.server,
            &pki.ca_pem()?,
            &pki.controller_manager()?,
        )?;
        let mut command = std::process::Command::new(self.binaries.controlplane());
        command.arg("kube-controller-manager");
        if self.network.is_some() {
            // kube-controller-manager's default flex-volume directory is outside ours.
            command.arg(format!(
                "--flex-volume-plugin-dir={}",
                self.dir.join("flex-volume").display()
            ));
        }
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--controllers={controllers}"))
            // As kubeadm runs it: each controller acts as its own ServiceAccount in kube-system,
            // with the bootstrap RBAC roles made for it.
            .arg("--use-service-account-credentials=true")
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.service_account_key().display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_cert().display()))
            .arg("--leader-elect=false")
            // No serving port: parallel controller-managers would fight over the default one.
            .arg("--secure-port=0")
            .arg("--concurrent-gc-syncs=5");
        let mut process = spawn(
            self.network.is_some(),
            "kube-controller-manager",
            command,
            &self.dir.join("kube-controller-manager.log"),
        )?;

        // Ready when a controller has acted: namespace `default` gets its ServiceAccount from
        // the serviceaccount controller, if it runs; otherwise the process staying up will do.
        let client = self.client()?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        let acts = controllers
            .split(',')
            .any(|c| c == "serviceaccount" || c == "*");
        loop {
            process.check_running()?;
            if !acts || accounts.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(process.startup_error(
                    "the serviceaccount controller did not create default/default in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.controller_manager = Some(process);
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if keep_asked() && matches!(self.state, StateDir::Temp(_)) {
            let kept = std::mem::replace(&mut self.state, StateDir::Kept(self.dir.clone()));
            if let StateDir::Temp(dir) = kept {
                keep_if_asked(dir);
            }
        }
        // The processes are killed by their own Drop, in field order.
    }
}

fn keep_asked() -> bool {
    std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty())
}

/// With [`KEEP_ENV`] set, keeps a temporary state directory (logs, etcd data) for a post-mortem;
/// otherwise removes it.
fn keep_if_asked(dir: TempDir) {
    if keep_asked() {
        let path = dir.keep();
        eprintln!("{KEEP_ENV}: kept control plane state in {}", path.display());
    }
}

/// Starts a control-plane process, inside the node's namespace when there is a node.
fn spawn(in_node: bool, name: &str, command: std::process::Command, log: &Path) -> Result<Process> {
    if in_node {
        node::spawn_in_node(name, command, log)
    } else {
        Process::spawn(name, command, log)
    }
}

/// Where the node keeps its state; fixed, as there is one node per machine.
fn node_state_dir() -> PathBuf {
    crate::cache::cache_root().join("node")
}

async fn start_etcd(
    binaries: &Binaries,
    dir: &Path,
    in_node: bool,
    deadline: Instant,
) -> Result<Process> {
    let ready_file = dir.join("etcd.url");
    let _ = fs::remove_file(&ready_file);
    let mut command = std::process::Command::new(binaries.controlplane());
    command
        .arg("etcd")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--ready-file={}", ready_file.display()));
    let mut etcd = spawn(in_node, "etcd", command, &dir.join("etcd.log"))?;
    while !ready_file.exists() {
        etcd.check_running()?;
        if Instant::now() > deadline {
            return Err(etcd.startup_error("not ready in time".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(etcd)
}

fn start_apiserver(
    binaries: &Binaries,
    dir: &Path,
    pki: &Pki,
    etcd_url: &str,
    port: u16,
    options: &ControlPlaneBuilder,
) -> Result<Process> {
    let mut command = std::process::Command::new(binaries.controlplane());
    command
        .arg("kube-apiserver")
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg(format!(
            "--cert-dir={}",
            dir.join("apiserver-certs").display()
        ))
        .arg(format!(
            "--tls-cert-file={}",
            pki.apiserver_cert().display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.apiserver_key().display()
        ))
        .arg(format!("--client-ca-file={}", pki.ca_cert().display()))
        .arg(format!("--secure-port={port}"))
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--allow-privileged=true")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!(
            "--service-account-key-file={}",
            pki.service_account_public_key().display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key().display()
        ))
        .arg("--profiling=false");
    if options.node.is_some() {
        let (kubelet_client_cert, kubelet_client_key) = pki.pair_paths("apiserver-kubelet-client");
        command
            // Inside the node's namespace: every address there is the test's own.
            .arg("--bind-address=0.0.0.0")
            .arg(format!("--advertise-address={}", node::NODE_IP))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg(format!(
                "--kubelet-client-certificate={}",
                kubelet_client_cert.display()
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                kubelet_client_key.display()
            ))
            .arg(format!(
                "--kubelet-certificate-authority={}",
                pki.ca_cert().display()
            ))
            // Else the API server resolves the node's name through the machine's resolver.
            .arg("--kubelet-preferred-address-types=InternalIP");
    } else {
        command
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg("--authorization-mode=RBAC");
    }
    command.args(&options.apiserver_args);
    spawn(
        options.node.is_some(),
        "kube-apiserver",
        command,
        &dir.join("kube-apiserver.log"),
    )
}

/// Polls `/readyz` until it answers `ok`, then waits for namespace `default` to exist.
async fn wait_ready(
    apiserver: &mut Process,
    etcd: &mut Process,
    config: &Config,
    deadline: Instant,
) -> Result<()> {
    let client = Client::try_from(config.clone())?;
    loop {
        etcd.check_running()?;
        apiserver.check_running()?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::Kubeconfig(format!("building /readyz request: {e}")))?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => break,
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(apiserver.startup_error(format!("/readyz not ok in time; last: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let namespaces: Api<Namespace> = Api::all(client);
    while namespaces.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            return Err(apiserver.startup_error("namespace default missing".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn port_taken(error: &Error) -> bool {
    matches!(error, Error::Startup { log_tail, .. } if log_tail.contains("address already in use"))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("finding a free port".into(), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("finding a free port".into(), e))?
        .port();
    Ok(port)
}

async fn client_config(kubeconfig: &Path) -> Result<Config> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Kubeconfig(format!("reading {}: {e}", kubeconfig.display())))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

fn read_trimmed(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))
}
