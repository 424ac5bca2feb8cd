//! A node leaves nothing on the machine: no process, mount, network namespace, link, iptables
//! rule or cgroup of ours, whether it is dropped or the process holding it is killed.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vx11_tests::node::{config::PAUSE_IMAGE, leftovers};
use vx11_tests::node_install::wait_pods_ready;
use vx11_tests::{Binaries, ControlPlane, NodeOptions, eventually};

const CHILD_ENV: &str = "VX11_TEARDOWN_CHILD";

/// A node with one pod running (so there are pod sandboxes, cgroups, mounts and a pod
/// network namespace to clean up).
async fn node_with_a_pod() -> ControlPlane {
    let binaries = tokio::task::spawn_blocking(Binaries::locate)
        .await
        .unwrap()
        .unwrap();
    let images = {
        let binaries = binaries.clone();
        tokio::task::spawn_blocking(move || vx11_tests::images::build_images(&binaries))
            .await
            .unwrap()
            .unwrap()
    };
    let cp = ControlPlane::builder()
        .binaries(binaries)
        .timeout(Duration::from_secs(240))
        .with_node(NodeOptions {
            sync_frequency: Duration::from_secs(5),
            images,
        })
        .start()
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client().unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_pods_ready(&cp.client().unwrap(), "default", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.log_tails(20)));
    cp
}

/// Run by the test below in a child process, which it then kills.
#[tokio::test]
#[ignore = "started by a_node_leaves_nothing_behind_when_dropped_or_killed in a child process"]
async fn child_holds_a_node_until_killed() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let _cp = node_with_a_pod().await;
    println!("NODE-UP");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

async fn machine_is_clean(what: &str) {
    tokio::task::spawn_blocking(|| {
        vx11_tests::node::network::wait_until_no_node(Duration::from_secs(120))
    })
    .await
    .unwrap()
    .unwrap();
    eventually(what, Duration::from_secs(90), || async {
        let left = leftovers().map_err(|e| e.to_string())?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_nothing_behind_when_dropped_or_killed() {
    if vx11_tests::node::skip_without_node("a_node_leaves_nothing_behind_when_dropped_or_killed") {
        return;
    }
    machine_is_clean("a clean machine to start with").await;

    // Dropped: the teardown is done when drop returns.
    let cp = node_with_a_pod().await;
    let seen = leftovers().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("network namespace vx11-node")),
        "the check does not see a running node: {seen:?}"
    );
    drop(cp);
    let left = leftovers().unwrap();
    assert!(left.is_empty(), "left after drop: {left:?}");

    // Killed: the holder of the node dies with SIGKILL; the teardown runs by itself.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_node_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let up = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("NODE-UP"))
    });
    let up = tokio::time::timeout(Duration::from_secs(400), up)
        .await
        .expect("the child's node up in time")
        .unwrap();
    assert!(up, "the child ended without starting its node");
    assert!(!leftovers().unwrap().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    machine_is_clean("nothing left after the holder was killed").await;
}
