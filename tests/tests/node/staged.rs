//! Staged rotation on the real node, with kubelet's own projection (sync period
//! [`SYNC_FREQUENCY`]): a client that re-reads the client Secret every 100 ms and always uses
//! the newest value gets no error through five rotations in a row; the same client with
//! staging switched off does (so this test can fail); a pod whose projection is blocked holds
//! publication and is named in `Propagated=False` until it is replaced; `kubectl vx11
//! status` shows it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use vx11_tests::eventually;

use crate::support::{Load, NS, SYNC_FREQUENCY, Shared, node};

/// A client that re-reads the published value through the API every 100 ms and always sends
/// the newest one.
struct FollowingClient {
    refresher: tokio::task::JoinHandle<()>,
    load: Load,
}

impl FollowingClient {
    async fn start(shared: &'static Shared) -> Self {
        let value = Arc::new(RwLock::new(shared.token().await));
        let refresher = {
            let value = value.clone();
            tokio::spawn(async move {
                // Bounded like the load: at most 10 minutes.
                let deadline = Instant::now() + Duration::from_secs(600);
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Ok(newest) = shared.install.client_token(&shared.cp, "operator").await
                        && let Ok(mut v) = value.write()
                    {
                        *v = newest;
                    }
                }
            })
        };
        let load = {
            let value = value.clone();
            Load::start(
                format!("{}/operator/api/health", shared.gateway()),
                4,
                60,
                Arc::new(move || value.read().map(|v| v.clone()).unwrap_or_default()),
            )
        };
        Self { refresher, load }
    }

    async fn stop(self) -> (u64, u64, f64, Vec<String>) {
        self.refresher.abort();
        self.load.stop().await
    }
}

async fn status(shared: &Shared) -> Value {
    shared.kubectl_json(&["-n", NS, "get", "vts", "vx11"]).await["status"].clone()
}

fn condition<'v>(status: &'v Value, type_: &str) -> Option<&'v Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Requests a rotation and waits until the new value is published (the client Secret holds
/// a new value); returns the time that took.
async fn rotate_and_wait(shared: &Shared, nonce: &str, within: Duration) -> Duration {
    let old = shared.token().await;
    let requested = Instant::now();
    shared.request_rotation(nonce).await;
    eventually("the new value published", within, || async {
        if shared.token().await != old {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await
    .unwrap();
    requested.elapsed()
}

/// Sets the set's `spec.propagation` (JSON, `null` for the defaults).
async fn set_propagation(shared: &Shared, propagation: &str) {
    let patch = format!(r#"{{"spec":{{"propagation":{propagation}}}}}"#);
    shared
        .kubectl(&["-n", NS, "patch", "vts/vx11", "--type=merge", "-p", &patch])
        .await;
}

async fn wait_propagated(shared: &Shared) {
    eventually("Propagated=True", Duration::from_secs(90), || async {
        let status = status(shared).await;
        match condition(&status, "Propagated") {
            Some(c) if c["status"] == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_using_the_newest_published_value_gets_no_error_through_five_rotations() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    wait_propagated(shared).await;
    // VX11_STAGED_ROTATIONS=20 for the figure in controller/README.md.
    let rotations: usize = std::env::var("VX11_STAGED_ROTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);

    let client = FollowingClient::start(shared).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut published_after = Vec::new();
    for round in 0..rotations {
        let nonce = format!("staged-{}-{round}", std::process::id());
        published_after.push(rotate_and_wait(shared, &nonce, Duration::from_secs(90)).await);
    }
    // The last value in use for a moment, then the figures.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failed, rate, failures) = client.stop().await;
    published_after.sort();
    eprintln!(
        "staged: {rotations} rotations, request -> published: p50 {:?}, p99 {:?}, max {:?} \
         (kubelet syncFrequency {SYNC_FREQUENCY:?}); load {ok} ok, {failed} failed, {rate:.0} requests/s",
        percentile(&published_after, 0.5),
        percentile(&published_after, 0.99),
        published_after.last().unwrap(),
    );
    assert_eq!(
        failed, 0,
        "a client using the newest published value got errors: {failures:?}"
    );
    assert!(
        rate >= 200.0,
        "the load was {rate:.0} requests/s, not >= 200"
    );
    let status = status(shared).await;
    assert_eq!(
        status["rotateHandled"].as_str(),
        Some(format!("staged-{}-{}", std::process::id(), rotations - 1).as_str())
    );

    // The same client with staging switched off: the new value reaches it before the pods.
    wait_propagated(shared).await;
    set_propagation(shared, r#"{"staged":false}"#).await;
    let client = FollowingClient::start(shared).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 0..3 {
        let nonce = format!("unstaged-{}-{round}", std::process::id());
        rotate_and_wait(shared, &nonce, Duration::from_secs(30)).await;
        // Until every pod has it, as a rotation in a row would be.
        tokio::time::sleep(SYNC_FREQUENCY * 2).await;
    }
    let (ok, failed_unstaged, rate, failures) = client.stop().await;
    set_propagation(shared, r#"null"#).await;
    wait_propagated(shared).await;
    let unauthorized = failures.iter().filter(|f| f.contains("401")).count();
    eprintln!(
        "staging off: 3 rotations, load {ok} ok, {failed_unstaged} failed ({unauthorized} of the first {} failures are 401), {rate:.0} requests/s",
        failures.len()
    );
    assert!(
        failed_unstaged > 0 && unauthorized > 0,
        "with staging off the client should have met 401s (is the projection delay gone?)"
    );
}

/// `kubectl-vx11`, built from this workspace (release, like the image's binaries).
fn kubectl_vx11() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .current_dir(&root)
        // With the image's binaries: the same packages, so the same features and no rebuild
        // of what the image build compiled.
        .args(["build", "--release", "--locked", "-q"])
        .args(["--bin", "vx11-controller", "--bin", "vx11-gateway"])
        .args(["--bin", "vx11-operator-backend", "--bin", "kubectl-vx11"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bin kubectl-vx11 failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("release/kubectl-vx11")
}

async fn vx11(shared: &Shared, binary: &PathBuf, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(binary)
        .env("KUBECONFIG", shared.cp.kubeconfig_path())
        .args(["-n", NS])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The kubelet directory of `pod`'s `tokens` volume (the service Secret).
fn tokens_volume(shared: &Shared, uid: &str) -> PathBuf {
    shared
        .cp
        .node()
        .unwrap()
        .kubelet_root()
        .join(format!("pods/{uid}/volumes/kubernetes.io~secret/tokens"))
}

/// Fills the volume's tmpfs, so that kubelet's next write of it fails (no space left): the
/// pod can no longer be updated. (kubelet 1.36, after such a failure, mounts a fresh tmpfs
/// over the path for its retry; the running container keeps the old one and never sees an
/// update again: the pod must be replaced. Remounting read-only has the same effect.)
fn fill(volume: &std::path::Path) -> PathBuf {
    use std::io::Write as _;
    let path = volume.join(".vx11-test-fill");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 1 << 20];
    // Bounded: the volume is a 256 MiB tmpfs at most here; stop at 1 GiB whatever happens.
    for _ in 0..1024 {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_update_holds_publication_and_is_named_until_it_is_replaced() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    let binary = tokio::task::spawn_blocking(kubectl_vx11).await.unwrap();
    wait_propagated(shared).await;

    // `kubectl vx11 status` on the real cluster: every consumer pod SYNCED.
    let pods: Vec<String> = {
        let mut names = Vec::new();
        for component in ["gateway", "operator-backend"] {
            for pod in shared.pods(component).await {
                names.push(pod.metadata.name.unwrap_or_default());
            }
        }
        names
    };
    let (ok, out, err) = vx11(shared, &binary, &["status", "vx11"]).await;
    assert!(ok, "{err}");
    for pod in &pods {
        let line = out
            .lines()
            .find(|l| l.starts_with(pod.as_str()))
            .unwrap_or_else(|| panic!("{pod} not listed:\n{out}"));
        assert!(line.contains("SYNCED"), "{line}");
    }
    let (ok, list, err) = vx11(shared, &binary, &["status"]).await;
    assert!(ok && list.contains("vx11"), "{list}{err}");
    let token = shared.token().await;
    assert!(!out.contains(&token) && !list.contains(&token));

    // Block one gateway pod's projection: kubelet cannot write its volume.
    let gateway = shared.pods("gateway").await.remove(0);
    let stuck = gateway.metadata.name.clone().unwrap();
    let volume = tokens_volume(shared, gateway.metadata.uid.as_deref().unwrap());
    set_propagation(shared, r#"{"timeout":"5s"}"#).await;
    let filler = fill(&volume);
    let old = shared.token().await;
    let nonce = format!("blocked-{}", std::process::id());
    shared.request_rotation(&nonce).await;
    let stale = eventually(
        "Propagated=False StaleConsumers",
        Duration::from_secs(60),
        || async {
            let status = status(shared).await;
            match condition(&status, "Propagated") {
                Some(c) if c["reason"] == "StaleConsumers" => Ok(c.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let _ = std::fs::remove_file(&filler);
    let stale = stale.unwrap();
    // Held: the client Secret still has the old value, several sync periods on.
    tokio::time::sleep(SYNC_FREQUENCY * 2).await;
    let held = shared.token().await;
    let (_, out, _) = vx11(shared, &binary, &["status", "vx11"]).await;
    let events = shared
        .kubectl(&[
            "-n",
            NS,
            "get",
            "events",
            "--field-selector",
            "reason=StaleConsumers",
            "-o",
            "json",
        ])
        .await;
    let message = stale["message"].as_str().unwrap_or_default();
    assert_eq!(stale["status"], "False");
    assert!(
        message.contains(&stuck),
        "the stuck pod is not named: {message}"
    );
    for pod in pods.iter().filter(|p| **p != stuck) {
        assert!(
            !message.contains(pod.as_str()),
            "{pod} named as stale: {message}"
        );
    }
    assert_eq!(held, old, "published while a consumer could not serve it");
    let line = out
        .lines()
        .find(|l| l.starts_with(stuck.as_str()))
        .unwrap_or_else(|| panic!("{stuck} not listed:\n{out}"));
    assert!(line.contains("STALE"), "{line}");
    assert!(
        events.contains(&stuck),
        "no StaleConsumers event naming {stuck}"
    );

    // Fixed by replacing the pod (see `fill`): its replacement mounts the current Secret, every
    // consumer serves the staged value, and it goes out.
    let started = Instant::now();
    shared
        .kubectl(&["-n", NS, "delete", "pod", &stuck, "--wait=false"])
        .await;
    eventually(
        "the held value published",
        Duration::from_secs(120),
        || async {
            if shared.token().await != old {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "blocked projection: published {:?} after the stuck pod was deleted",
        started.elapsed()
    );
    wait_propagated(shared).await;
    let (ok, _, err) = vx11(
        shared,
        &binary,
        &["wait", "vx11", "--for", "propagated", "--timeout", "30s"],
    )
    .await;
    assert!(ok, "{err}");
    let (_, out, _) = vx11(shared, &binary, &["status", "vx11"]).await;
    assert!(
        !out.contains(&stuck),
        "the deleted pod is still a consumer:\n{out}"
    );
    set_propagation(shared, r#"null"#).await;
}
