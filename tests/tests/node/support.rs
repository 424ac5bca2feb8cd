//! The shared node and what the tests ask of it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};
use vx11_tests::node_install::{InstallOptions, NodeInstall};
use vx11_tests::{Binaries, ControlPlane, NodeOptions};

pub const NS: &str = "vx11";
/// kubelet's sync period on the test node: the delay of a Secret's projection is about this.
pub const SYNC_FREQUENCY: Duration = Duration::from_secs(3);

pub struct Shared {
    pub cp: ControlPlane,
    pub install: NodeInstall,
    pub node_ready_after: Duration,
}

/// The node with vx11 installed, and the turn to use it (tests that change the installation
/// or load the machine must not overlap).
/// `None` (the test skips, saying why) where this machine cannot run a node, outside CI.
pub async fn node() -> Option<(&'static Shared, MutexGuard<'static, ()>)> {
    static TURN: Mutex<()> = Mutex::const_new(());
    if vx11_tests::node::skip_without_node("this node test") {
        return None;
    }
    let turn = TURN.lock().await;
    Some((shared(), turn))
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        // Started on a runtime of its own: the processes outlive every test's runtime.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(start())
        })
        .join()
        .unwrap_or_else(|_| Err("starting the node panicked".into()))
    });
    match shared {
        Ok(shared) => shared,
        Err(e) => panic!("the shared node did not start: {e}"),
    }
}

async fn start() -> Result<Shared, String> {
    let binaries = tokio::task::spawn_blocking(Binaries::locate)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let images = {
        let binaries = binaries.clone();
        tokio::task::spawn_blocking(move || vx11_tests::images::build_images(&binaries))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let cp = ControlPlane::builder()
        .binaries(binaries)
        .timeout(Duration::from_secs(240))
        .with_node(NodeOptions {
            sync_frequency: SYNC_FREQUENCY,
            images,
        })
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let node_ready_after = cp.node().map(|n| n.ready_after()).unwrap_or_default();
    eprintln!("[node] node Ready {node_ready_after:?} after its programs started");
    let mut options = InstallOptions::new("vx11", NS);
    options.helm_set = vec![
        "tokenSet.rotation.every=1h".into(),
        "tokenSet.rotation.gracePeriod=10m".into(),
        // The tests read /metrics from this machine, outside the cluster: it is a monitoring
        // peer like a Prometheus outside the cluster would be.
        format!(
            "networkPolicy.metrics.extraFrom[0].ipBlock.cidr={}/32",
            vx11_tests::node::HOST_IP
        ),
    ];
    let install = match NodeInstall::install(&cp, options, |s| eprintln!("[node] {s}")).await {
        Ok(install) => install,
        Err(e) => return Err(format!("{e}\n{}", cp.log_tails(30))),
    };
    eprintln!(
        "[node] every pod Running and Ready {:?} after helm install",
        install.pods_ready_after
    );
    Ok(Shared {
        cp,
        install,
        node_ready_after,
    })
}

impl Shared {
    pub fn gateway(&self) -> String {
        self.install.gateway_url()
    }

    pub async fn token(&self) -> String {
        self.install
            .client_token(&self.cp, "operator")
            .await
            .unwrap()
    }

    pub async fn kubectl(&self, args: &[&str]) -> String {
        let out = self.cp.kubectl().args(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Requests a rotation of the release's set: `vx11.dev/rotate=<nonce>`.
    pub async fn request_rotation(&self, nonce: &str) {
        self.kubectl(&[
            "-n",
            NS,
            "annotate",
            "vts/vx11",
            &format!("vx11.dev/rotate={nonce}"),
            "--overwrite",
        ])
        .await;
    }

    pub async fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all).await).unwrap()
    }

    pub async fn pods(&self, component: &str) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.cp.client().unwrap(), NS);
        pods.list(
            &ListParams::default().labels(&format!("app.kubernetes.io/component={component}")),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
    }

    /// The PID on this machine of a container's main process, from containerd.
    pub fn container_pid(&self, container_id: &str) -> u32 {
        let socket = self.cp.node().unwrap().runtime_socket();
        let id = container_id.trim_start_matches("containerd://");
        let out = vx11_tests::node::ctr(socket, &["tasks", "ls"]).unwrap();
        out.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no task for container {id} in:\n{out}"))
    }
}

/// (container ID, restart count) of every container of the release's pods, by pod name.
pub async fn containers(shared: &Shared) -> Vec<(String, String, i32)> {
    let mut all = Vec::new();
    for component in ["controller", "gateway", "operator-backend"] {
        for pod in shared.pods(component).await {
            for status in pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
            {
                all.push((
                    pod.metadata.name.clone().unwrap_or_default(),
                    status.container_id.unwrap_or_default(),
                    status.restart_count,
                ));
            }
        }
    }
    all.sort();
    all
}

/// A client that sends requests through the gateway at a steady rate until stopped, and
/// counts what it got.
pub struct Load {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// `workers` clients, each sending one request after another with `token()` (read again
    /// before every request), at most `rate_per_worker` per second each.
    pub fn start(
        url: String,
        workers: usize,
        rate_per_worker: u32,
        token: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|_| {
                let (ok, failed, failures) = (ok.clone(), failed.clone(), failures.clone());
                let (client, url, token) = (client.clone(), url.clone(), token.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let period = Duration::from_secs(1) / rate_per_worker;
                    let mut tick = tokio::time::interval(period);
                    // Bounded: at most 10 minutes of load, whatever the test does.
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while !*stopped.borrow() && Instant::now() < deadline {
                        tick.tick().await;
                        let result = client
                            .get(&url)
                            .header("x-vx11-token", token())
                            .send()
                            .await;
                        match result {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let what = match other {
                                    Ok(r) => format!("status {}", r.status()),
                                    Err(e) => format!("error {e}"),
                                };
                                if let Ok(mut f) = failures.lock() {
                                    f.push(what);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            failures,
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    /// Stops the clients; returns (ok, failed, requests per second, the first failures).
    pub async fn stop(self) -> (u64, u64, f64, Vec<String>) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let ok = self.ok.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let rate = (ok + failed) as f64 / self.started.elapsed().as_secs_f64();
        let failures = self
            .failures
            .lock()
            .map(|f| f.iter().take(10).cloned().collect())
            .unwrap_or_default();
        (ok, failed, rate, failures)
    }
}
