//! `make run`: vx11 on a local cluster with a real node, as it runs in any cluster, until
//! Ctrl-C. With `--simulated`, the services run as local processes with kubelet's projection
//! reproduced (for machines that cannot run a node); with `--kind`, hands over to the kind
//! install (`tests/kind/up.sh`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vx11_tests::devcluster::{self, DEFAULT_PORT, DevCluster};
use vx11_tests::forward::Forwarder;
use vx11_tests::local::{LocalOptions, LocalStack};
use vx11_tests::node::NODE_IP;
use vx11_tests::node_install::{InstallOptions, NodeInstall};
use vx11_tests::{Binaries, NodeOptions};

const USAGE: &str =
    "usage: vx11-local [--simulated | --kind] [--gateway-addr ADDR] [--state-dir DIR]

Runs vx11 on a local Kubernetes cluster until Ctrl-C: a control plane and a real node
(kubelet, containerd, kube-proxy, CoreDNS, a NetworkPolicy firewall; built from Go modules
on first use, then cached) in a network namespace of their own. Builds vx11's image without
Docker, imports it into the node, installs charts/vx11 with helm as users do, waits for
every pod to be Ready, and serves the gateway Service at ADDR. Needs root.
State (the cluster's etcd, so every token) is kept in DIR across runs.

  --gateway-addr ADDR  where the gateway is served (default 127.0.0.1:8000)
  --state-dir DIR      default: $VX11_CACHE_DIR/devcluster, else ~/.cache/vx11/devcluster
  --simulated          no node: the controller, gateway and backend run as local processes
                       and kubelet's Secret projection is reproduced (no root needed)
  --kind               install into a kind cluster instead (needs docker and kind)";

/// kubelet's sync period on the local node: a rotation reaches the pods within about this
/// (a real cluster's default is 60 s).
const SYNC_FREQUENCY: Duration = Duration::from_secs(10);

struct Options {
    gateway_addr: SocketAddr,
    state_dir: PathBuf,
    kind: bool,
    simulated: bool,
}

fn parse() -> Result<Option<Options>, String> {
    let mut options = Options {
        gateway_addr: "127.0.0.1:8000".parse().map_err(|_| "default address")?,
        state_dir: devcluster::default_state_dir(),
        kind: false,
        simulated: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--kind" => options.kind = true,
            "--simulated" => options.simulated = true,
            "--gateway-addr" => {
                let value = args.next().ok_or("--gateway-addr needs a value")?;
                options.gateway_addr = value.parse().map_err(|_| {
                    format!("--gateway-addr: {value:?} is not an address like 127.0.0.1:8000")
                })?;
            }
            "--state-dir" => {
                options.state_dir = PathBuf::from(args.next().ok_or("--state-dir needs a value")?)
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
#[expect(
    clippy::print_stdout,
    reason = "telling the user how to use what is running is the job"
)]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("vx11-local: {error}");
            return ExitCode::from(2);
        }
    };
    if options.kind {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kind/up.sh");
        let status = std::process::Command::new("bash").arg(script).status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        };
    }
    if options.simulated {
        return run_simulated(&options).await;
    }
    if let Some(why) = vx11_tests::node::unavailable() {
        eprintln!(
            "vx11-local: this machine cannot run the local node: {why}.
  Without a node: make run ARGS=--simulated (the services as local processes, no root)"
        );
        return ExitCode::FAILURE;
    }
    run_node(&options).await
}

#[expect(
    clippy::print_stdout,
    reason = "telling the user how to use what is running is the job"
)]
async fn run_node(options: &Options) -> ExitCode {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[vx11 +{:>3}s] {what}", started.elapsed().as_secs());
    let fail = |error: &dyn std::fmt::Display| {
        eprintln!("vx11-local: {error}");
        ExitCode::FAILURE
    };

    step("binaries: control plane, node, helm (the first build takes ~20 min, then cached)");
    let binaries = match tokio::task::spawn_blocking(Binaries::locate).await {
        Ok(Ok(binaries)) => binaries,
        Ok(Err(error)) => return fail(&error),
        Err(error) => return fail(&error),
    };
    step(
        "vx11's image and the pause image, without Docker (the first release build takes minutes)",
    );
    let images = {
        let binaries = binaries.clone();
        match tokio::task::spawn_blocking(move || vx11_tests::images::build_images(&binaries)).await
        {
            Ok(Ok(images)) => images,
            Ok(Err(error)) => return fail(&error),
            Err(error) => return fail(&error),
        }
    };
    step("control plane and node (kubelet, containerd, kube-proxy, CoreDNS, kube-router)");
    let node = NodeOptions {
        sync_frequency: SYNC_FREQUENCY,
        images,
    };
    let cluster = match DevCluster::start_with(&options.state_dir, DEFAULT_PORT, Some(node)).await {
        Ok(cluster) => cluster,
        Err(error) => return fail(&error),
    };
    let cp = cluster.control_plane();
    if let Some(node) = cp.node() {
        step(&format!(
            "node Ready in {:.1}s",
            node.ready_after().as_secs_f64()
        ));
    }
    let install = match NodeInstall::install(cp, InstallOptions::new("vx11", "vx11"), step).await {
        Ok(install) => install,
        Err(error) => {
            eprintln!("{}", cp.log_tails(20));
            cluster.stop();
            return fail(&error);
        }
    };
    step(&format!(
        "every pod Ready {:.1}s after helm install",
        install.pods_ready_after.as_secs_f64()
    ));
    let target: SocketAddr = match format!("{NODE_IP}:{}", install.options.node_port).parse() {
        Ok(target) => target,
        Err(error) => return fail(&error),
    };
    let forwarder = match Forwarder::start(options.gateway_addr, target).await {
        Ok(forwarder) => forwarder,
        Err(error) => {
            cluster.stop();
            return fail(&error);
        }
    };
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let gateway = format!("http://{}", forwarder.local_addr());
    println!(
        "
vx11 is running on a real node ({}s). The gateway Service is {gateway}
(NodePort {target} inside the node's network namespace, forwarded).

  export KUBECONFIG={kubeconfig}
  kubectl -n vx11 get pods,vts
  TOKEN=$(kubectl -n vx11 get secret vx11-client-tokens -o jsonpath='{{.data.operator}}' | base64 -d)
  curl -s -H \"X-VX11-Token: $TOKEN\" {gateway}/operator/api/health
  curl -sN -H 'Accept: text/event-stream' \"{gateway}/operator/api/events/stream?token=$TOKEN&follow=true\"

Rotate (the old value stays valid for the grace period, 10m by default; pods see the new
one within kubelet's sync period, {}s here):
  kubectl -n vx11 annotate vts/vx11 vx11.dev/rotate=\"$(date +%s)\" --overwrite

Logs: {} (and kubectl -n vx11 logs deploy/vx11-gateway)
Ctrl-C stops vx11, the node and the cluster; the cluster's state (and your tokens) stay in {}.",
        started.elapsed().as_secs(),
        SYNC_FREQUENCY.as_secs(),
        cp.dir().display(),
        options.state_dir.display(),
    );
    let _ = devcluster::shutdown_signal().await;
    eprintln!("stopping vx11 and the node (the node's teardown takes a few seconds)");
    drop(forwarder);
    cluster.stop();
    ExitCode::SUCCESS
}

#[expect(
    clippy::print_stdout,
    reason = "telling the user how to use what is running is the job"
)]
async fn run_simulated(options: &Options) -> ExitCode {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[vx11 +{:>3}s] {what}", started.elapsed().as_secs());

    step(
        "local control plane (etcd, kube-apiserver, kube-controller-manager); the first build takes ~20 min",
    );
    let cluster = match DevCluster::start(&options.state_dir, DEFAULT_PORT).await {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("vx11-local: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cp = cluster.control_plane();
    let mut local = LocalOptions::new(options.state_dir.join("vx11"));
    local.gateway_addr = options.gateway_addr;
    let stack = match LocalStack::start(cp, local, step).await {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("vx11-local: {error}");
            return ExitCode::FAILURE;
        }
    };
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let gateway = stack.gateway_url();
    println!(
        "
vx11 is running ({}s). The gateway is {gateway}.

  export KUBECONFIG={kubeconfig}
  kubectl -n vx11 get vts
  TOKEN=$(kubectl -n vx11 get secret vx11-client-tokens -o jsonpath='{{.data.operator}}' | base64 -d)
  curl -s -H \"X-VX11-Token: $TOKEN\" {gateway}/operator/api/health
  curl -sN \"{gateway}/operator/api/events/stream?token=$TOKEN&follow=true\"

Rotate (the old value stays valid for the grace period, 10m by default):
  kubectl -n vx11 annotate vts/vx11 vx11.dev/rotate=\"$(date +%s)\" --overwrite

Logs: {}
Ctrl-C stops vx11 and the cluster; its state (and your tokens) stay in {}.",
        started.elapsed().as_secs(),
        stack.options.work_dir.display(),
        options.state_dir.display(),
    );
    let _ = devcluster::shutdown_signal().await;
    eprintln!("stopping vx11");
    drop(stack);
    cluster.stop();
    ExitCode::SUCCESS
}
