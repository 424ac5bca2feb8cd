//! `make run`: vx11 on a local control plane, as it runs in a cluster, until Ctrl-C.
//! With `--kind`, hands over to the kind install (`tests/kind/up.sh`) instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use vx11_tests::devcluster::{self, DEFAULT_PORT, DevCluster};
use vx11_tests::local::{LocalOptions, LocalStack};

const USAGE: &str = "usage: vx11-local [--kind] [--gateway-addr ADDR] [--state-dir DIR]

Runs vx11 on a local Kubernetes control plane (built from Go modules on first use, ~20 min,
then cached): installs charts/vx11 with helm, runs the controller as the chart's
ServiceAccount, projects the token Secret as kubelet does, and starts the gateway and the
operator backend with the environment the chart gives their pods. Stays up until Ctrl-C.
State (the cluster's etcd, so every token) is kept in DIR across runs.

  --gateway-addr ADDR  where the gateway listens (default 127.0.0.1:8000)
  --state-dir DIR      default: $VX11_CACHE_DIR/devcluster, else ~/.cache/vx11/devcluster
  --kind               install into a kind cluster instead (needs docker and kind)";

struct Options {
    gateway_addr: SocketAddr,
    state_dir: PathBuf,
    kind: bool,
}

fn parse() -> Result<Option<Options>, String> {
    let mut options = Options {
        gateway_addr: "127.0.0.1:8000".parse().map_err(|_| "default address")?,
        state_dir: devcluster::default_state_dir(),
        kind: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--kind" => options.kind = true,
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
