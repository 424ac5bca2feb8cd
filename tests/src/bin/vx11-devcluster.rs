//! Runs a local Kubernetes control plane until Ctrl-C or SIGTERM:
//! `cargo run -p vx11-tests --bin vx11-devcluster -- [--state-dir DIR] [--port PORT]`.

use std::path::PathBuf;
use std::process::ExitCode;

use vx11_tests::devcluster::{self, DEFAULT_PORT, DevCluster};

const USAGE: &str = "usage: vx11-devcluster [--state-dir DIR] [--port PORT]

Runs etcd, kube-apiserver and kube-controller-manager (garbage collector, namespaces,
ServiceAccounts) on 127.0.0.1 until Ctrl-C or SIGTERM. State (etcd data, certificates,
kubeconfig, logs) stays in DIR, so the next start has the same objects and credentials.

  --state-dir DIR  default: $VX11_CACHE_DIR/devcluster, else ~/.cache/vx11/devcluster
  --port PORT      the API server's port (default 16443)

The binaries come from $VX11_CONTROLPLANE_BIN or are built by tests/controlplane/build.sh.";

struct Options {
    state_dir: PathBuf,
    port: u16,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        state_dir: devcluster::default_state_dir(),
        port: DEFAULT_PORT,
    };
    let mut args = args;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--state-dir" => options.state_dir = PathBuf::from(value()?),
            "--port" => {
                let port = value()?;
                options.port = port
                    .parse()
                    .map_err(|_| format!("--port: {port:?} is not a port number"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
#[expect(
    clippy::print_stdout,
    reason = "telling the user where the cluster is, is the job"
)]
async fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vx11-devcluster: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    eprintln!(
        "vx11-devcluster: starting in {} on port {}",
        options.state_dir.display(),
        options.port
    );
    let started = std::time::Instant::now();
    let cluster = match DevCluster::start(&options.state_dir, options.port).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("vx11-devcluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cp = cluster.control_plane();
    let kubeconfig = cp.kubeconfig_path().display();
    println!(
        "vx11-devcluster: ready in {:.1}s at {}\n\
         \n  export KUBECONFIG={kubeconfig}\n  kubectl get namespaces\n\n\
         logs: {dir}/{{etcd,kube-apiserver,kube-controller-manager}}.log\n\
         stop: Ctrl-C, or kill -TERM {pid}",
        started.elapsed().as_secs_f64(),
        cp.server_url(),
        dir = cp.dir().display(),
        pid = std::process::id(),
    );

    if let Err(e) = devcluster::shutdown_signal().await {
        eprintln!("vx11-devcluster: cannot wait for signals ({e}); stopping");
    }
    eprintln!("vx11-devcluster: stopping");
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS)
}
