//! A real Kubernetes node for the control plane: containerd + runc, kubelet, kube-proxy,
//! kube-scheduler, CoreDNS and kube-router's NetworkPolicy firewall, all inside the network
//! namespace that [`NodeNetwork`] holds. Pods run from images made on this machine and
//! imported into containerd; nothing is ever pulled and no packet leaves the machine.
//!
//! Get one with [`ControlPlaneBuilder::with_node`](crate::ControlPlaneBuilder::with_node).

pub mod config;
pub mod network;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::{Api, Client};

pub use network::{
    BRIDGE_IP, HOST_IP, NETNS, NODE_IP, NODE_NAME, NodeNetwork, POD_CIDR, leftovers,
};

use crate::binaries::Binaries;
use crate::pki::Pki;
use crate::process::Process;
use crate::{Error, Result};

/// Why this machine cannot run a node, if it cannot: not root, or a program missing.
pub fn unavailable() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut missing = Vec::new();
    if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        missing.push("it is not run as root".to_owned());
    }
    for tool in [
        "containerd",
        "ctr",
        "runc",
        "nsenter",
        "ip",
        "iptables",
        "ipset",
        "flock",
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            missing.push(format!("{tool} is missing"));
        }
    }
    if !Path::new("/usr/lib/cni/bridge").is_file() {
        missing.push("the CNI plugins (/usr/lib/cni) are missing".to_owned());
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "{} (a node needs root and: apt-get install containerd runc containernetworking-plugins iptables ipset conntrack)",
            missing.join(", ")
        ))
    }
}

/// Whether a test that needs a node should skip here: only outside CI (`CI` unset), where a
/// developer's machine may not run one; in CI a missing node is a failure.
pub fn skip_without_node(test: &str) -> bool {
    match unavailable() {
        None => false,
        Some(why) if std::env::var_os("CI").is_none_or(|v| v.is_empty()) => {
            eprintln!("SKIPPED {test}: this machine cannot run a node: {why}");
            true
        }
        Some(why) => panic!("{test}: this machine cannot run a node: {why}"),
    }
}

/// The API server's port inside the node's namespace.
pub const APISERVER_PORT: u16 = 6443;

/// How the node is run.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// kubelet's `syncFrequency`: with the Watch strategy, how late a pod's mounted Secret
    /// follows a change (about one period plus jitter). Kubernetes' default is 60 s.
    pub sync_frequency: Duration,
    /// OCI image archives imported into containerd before kubelet starts. The pause image
    /// ([`config::PAUSE_IMAGE`]) must be among them.
    pub images: Vec<PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            sync_frequency: Duration::from_secs(10),
            images: Vec::new(),
        }
    }
}

/// The node's processes. Dropping it kills them (kubelet and the rest first, containerd last);
/// the [`NodeNetwork`] then removes what they leave.
#[derive(Debug)]
pub struct Node {
    // Killed in this order.
    router: Process,
    dns: Process,
    proxy: Process,
    kubelet: Process,
    scheduler: Process,
    containerd: Process,
    runtime_socket: PathBuf,
    kubelet_root: PathBuf,
    started: Instant,
    ready_after: Duration,
}

/// What the node needs from its control plane.
pub(crate) struct Cluster<'a> {
    pub binaries: &'a Binaries,
    pub pki: &'a Pki,
    pub server: &'a str,
    pub admin_kubeconfig: &'a Path,
    pub client: Client,
    /// The control plane's directory: logs and kubeconfigs go there.
    pub dir: &'a Path,
    /// The node's own state (containerd, kubelet, CNI), removed at teardown.
    pub state: &'a Path,
}

impl Node {
    pub(crate) async fn start(
        cluster: Cluster<'_>,
        options: &NodeOptions,
        deadline: Instant,
    ) -> Result<Self> {
        let started = Instant::now();
        let state = cluster.state;
        let log = |name: &str| cluster.dir.join(format!("{name}.log"));
        let mkdir = |path: &Path| {
            fs::create_dir_all(path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))
        };
        let write = |path: &Path, text: &str| {
            fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
        };
        for dir in ["containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"] {
            mkdir(&state.join(dir))?;
        }

        let kubeconfig = |name: &str| -> Result<PathBuf> {
            let path = cluster.dir.join(format!("{name}.kubeconfig"));
            crate::kubeconfig::write_kubeconfig(
                &path,
                cluster.server,
                &cluster.pki.ca_pem()?,
                &cluster.pki.client(name)?,
            )?;
            Ok(path)
        };

        let mut scheduler = Command::new(cluster.binaries.controlplane());
        scheduler
            .arg("kube-scheduler")
            .arg(format!(
                "--kubeconfig={}",
                kubeconfig("kube-scheduler")?.display()
            ))
            .arg("--leader-elect=false");
        let scheduler = spawn_in_node("kube-scheduler", scheduler, &log("kube-scheduler"))?;

        let runtime_socket = state.join("containerd/containerd.sock");
        let containerd_config = state.join("containerd/config.toml");
        write(
            &containerd_config,
            &config::containerd(
                &state.join("containerd"),
                &runtime_socket,
                &state.join("cni/net.d"),
            ),
        )?;
        write(
            &state.join("cni/net.d/10-vx11.conflist"),
            &config::cni(&state.join("cni/ipam")),
        )?;
        let mut containerd = Command::new("containerd");
        containerd.arg("--config").arg(&containerd_config);
        let mut containerd = spawn_in_node("containerd", containerd, &log("containerd"))?;
        wait_until(&mut containerd, deadline, "its socket", || {
            ctr(&runtime_socket, &["version"]).is_ok()
        })
        .await?;
        for image in &options.images {
            ctr(
                &runtime_socket,
                &["images", "import", &image.display().to_string()],
            )?;
        }

        let resolv_conf = state.join("resolv.conf");
        write(&resolv_conf, &format!("nameserver {BRIDGE_IP}\n"))?;
        let (serving_cert, serving_key) = cluster.pki.pair_paths("kubelet-serving");
        let kubelet_config = state.join("kubelet/config.json");
        write(
            &kubelet_config,
            &config::kubelet(
                &config::KubeletPaths {
                    ca: &cluster.pki.ca_cert(),
                    serving_cert: &serving_cert,
                    serving_key: &serving_key,
                    runtime_socket: &runtime_socket,
                    resolv_conf: &resolv_conf,
                    pod_logs: &state.join("pod-logs"),
                },
                options.sync_frequency,
            ),
        )?;
        forget_earlier_node(&cluster.client).await?;
        let mut kubelet = Command::new(cluster.binaries.controlplane());
        kubelet
            .arg("kubelet")
            .arg(format!("--config={}", kubelet_config.display()))
            .arg(format!("--kubeconfig={}", kubeconfig("kubelet")?.display()))
            .arg(format!(
                "--root-dir={}",
                state.join("kubelet/root").display()
            ))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"));
        let mut kubelet = spawn_in_node("kubelet", kubelet, &log("kubelet"))?;

        let mut proxy = Command::new(cluster.binaries.controlplane());
        proxy
            .arg("kube-proxy")
            .arg(format!(
                "--kubeconfig={}",
                kubeconfig("kube-proxy")?.display()
            ))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg("--proxy-mode=iptables")
            .arg(format!("--cluster-cidr={POD_CIDR}"))
            // kube-proxy would otherwise write the machine's conntrack sysctls.
            .arg("--conntrack-max-per-core=0")
            .arg("--conntrack-tcp-timeout-established=0")
            .arg("--conntrack-tcp-timeout-close-wait=0")
            .arg(format!("--nodeport-addresses={NODE_IP}/32"))
            .arg("--iptables-localhost-nodeports=false")
            .arg("--metrics-bind-address=127.0.0.1:10249")
            .arg("--healthz-bind-address=127.0.0.1:10256");
        let proxy = spawn_in_node("kube-proxy", proxy, &log("kube-proxy"))?;

        let corefile = state.join("Corefile");
        write(&corefile, &config::corefile(cluster.admin_kubeconfig))?;
        let mut dns = Command::new(cluster.binaries.program("coredns"));
        dns.arg("-conf").arg(&corefile);
        let dns = spawn_in_node("coredns", dns, &log("coredns"))?;

        let nodes: Api<NodeObject> = Api::all(cluster.client.clone());
        loop {
            kubelet.check_running()?;
            containerd.check_running()?;
            if nodes
                .get_opt(NODE_NAME)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| is_ready(&n))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(kubelet.startup_error("node not Ready in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ready_after = started.elapsed();
        tracing::info!(?ready_after, "node Ready");
        // kube-router finds its node by name: only once kubelet has registered it.
        let mut router = Command::new(cluster.binaries.program("kube-router"));
        router
            .arg(format!(
                "--kubeconfig={}",
                cluster.admin_kubeconfig.display()
            ))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg("--run-firewall=true")
            .arg("--run-router=false")
            .arg("--run-service-proxy=false")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--metrics-port=0");
        let router = spawn_in_node("kube-router", router, &log("kube-router"))?;
        Ok(Self {
            router,
            dns,
            proxy,
            kubelet,
            scheduler,
            containerd,
            runtime_socket,
            kubelet_root: state.join("kubelet/root"),
            started,
            ready_after,
        })
    }

    /// From the start of the node's programs to its Node object's `Ready` condition.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// When the node's programs were started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// kubelet's `--root-dir`: the pods' volumes are under `pods/<uid>/volumes/`.
    pub fn kubelet_root(&self) -> &Path {
        &self.kubelet_root
    }

    /// containerd's socket (for `ctr --address` / `crictl --runtime-endpoint`).
    pub fn runtime_socket(&self) -> &Path {
        &self.runtime_socket
    }

    /// The node's processes, for log tails.
    pub fn processes(&self) -> [&Process; 6] {
        [
            &self.kubelet,
            &self.containerd,
            &self.proxy,
            &self.scheduler,
            &self.dns,
            &self.router,
        ]
    }

    /// Fails with its log's tail if one of the node's programs has exited.
    pub fn check_running(&mut self) -> Result<()> {
        for process in [
            &mut self.kubelet,
            &mut self.containerd,
            &mut self.proxy,
            &mut self.scheduler,
            &mut self.dns,
            &mut self.router,
        ] {
            process.check_running()?;
        }
        Ok(())
    }

    /// Stops kubelet and the rest gracefully, containerd last.
    pub fn stop(&mut self) {
        for process in [
            &mut self.router,
            &mut self.dns,
            &mut self.proxy,
            &mut self.kubelet,
            &mut self.scheduler,
        ] {
            process.stop(Duration::from_secs(5));
        }
        self.containerd.stop(Duration::from_secs(5));
    }
}

/// On a kept cluster, the Node and its pods from an earlier run still say Ready although
/// their containers are gone with that run's containerd. Forget them: the kubelet registers
/// the node anew and the controllers make new pods, so every Ready seen later is this run's.
async fn forget_earlier_node(client: &Client) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, ListParams};
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={NODE_NAME}"));
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for pod in pods.list(&on_node).await?.items {
        let (Some(name), Some(namespace)) = (pod.metadata.name, pod.metadata.namespace) else {
            continue;
        };
        let namespaced: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match namespaced.delete(&name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let nodes: Api<NodeObject> = Api::all(client.clone());
    match nodes.delete(NODE_NAME, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn is_ready(node: &NodeObject) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Starts `command` inside the node's network namespace.
pub(crate) fn spawn_in_node(name: &str, command: Command, log: &Path) -> Result<Process> {
    let mut wrapped = NodeNetwork::command(command.get_program());
    wrapped.args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    Process::spawn(name, wrapped, log)
}

/// `ctr --address SOCKET -n k8s.io ARGS…`, failing with its output.
pub fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .map_err(|e| Error::io("running ctr".into(), e))?;
    if !output.status.success() {
        return Err(Error::Startup {
            component: "containerd".into(),
            reason: format!("ctr {} failed", args.join(" ")),
            log: PathBuf::new(),
            log_tail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn wait_until(
    process: &mut Process,
    deadline: Instant,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    loop {
        process.check_running()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(process.startup_error(format!("{what} not ready in time")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
