//! `helm install` on the node: every pod Running and Ready, the token set Ready, the seed's
//! five cases through the gateway Service, and Pod Security `restricted` for real.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use reqwest::StatusCode;
use serde_json::json;
use vx11_tests::node_install::{not_ready_reason, wait_pods_ready};

use crate::support::{NS, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_runs_and_the_seeds_five_cases_pass_through_the_gateway_service() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    eprintln!(
        "node Ready after {:?}; pods Ready {:?} after helm install",
        shared.node_ready_after, shared.install.pods_ready_after
    );
    let client = shared.cp.client().unwrap();
    wait_pods_ready(&client, NS, Duration::from_secs(60))
        .await
        .unwrap();
    for component in ["controller", "gateway", "operator-backend"] {
        let pods = shared.pods(component).await;
        assert!(!pods.is_empty(), "no {component} pod");
        for pod in &pods {
            assert_eq!(not_ready_reason(pod), None);
            assert_eq!(
                pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                Some(vx11_tests::node::NODE_NAME)
            );
        }
    }
    let table = shared.kubectl(&["-n", NS, "get", "vts"]).await;
    assert!(table.contains("vx11") && table.contains("True"), "{table}");

    let token = shared.token().await;
    crate::seed::assert_seed_cases(&shared.gateway(), &token).await;
    let http = reqwest::Client::new();
    let g = shared.gateway();
    // A wrong token is refused by the gateway.
    let r = http
        .get(format!("{g}/operator/api/health"))
        .header("x-vx11-token", "vx11_not-a-token-of-this-set-000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // No token value in any pod's log.
    for component in ["controller", "gateway", "operator-backend"] {
        let logs = shared
            .kubectl(&[
                "-n",
                NS,
                "logs",
                "-l",
                &format!("app.kubernetes.io/component={component}"),
                "--tail=-1",
                "--prefix",
            ])
            .await;
        assert!(
            !logs.is_empty(),
            "{component} logged nothing (logs do not work?)"
        );
        assert!(!logs.contains(&token), "a token value in {component}'s log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_non_root_on_a_read_only_root_under_enforced_restricted() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    let client = shared.cp.client().unwrap();
    for component in ["controller", "gateway", "operator-backend"] {
        for pod in shared.pods(component).await {
            for status in pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
            {
                let pid = shared.container_pid(status.container_id.as_deref().unwrap_or(""));
                let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
                let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
                assert!(
                    uids.iter().all(|u| *u != "0"),
                    "{component}: a uid is root: {uid_line}"
                );
                let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
                let root = mounts
                    .lines()
                    .find(|l| l.split_whitespace().nth(4) == Some("/"))
                    .unwrap();
                let options = root.split_whitespace().nth(5).unwrap();
                assert!(
                    options.split(',').any(|o| o == "ro"),
                    "{component}: root filesystem not read-only: {root}"
                );
                let no_new_privs = proc_status
                    .lines()
                    .find(|l| l.starts_with("NoNewPrivs:"))
                    .unwrap();
                assert!(no_new_privs.ends_with('1'), "{component}: {no_new_privs}");
            }
        }
    }
    // The namespace enforces restricted: a privileged pod is refused.
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let privileged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "x", "image": "vx11:0.1.0",
            "securityContext": {"privileged": true}}]}
    }))
    .unwrap();
    let refused = pods
        .create(&PostParams::default(), &privileged)
        .await
        .expect_err("a privileged pod must be refused");
    assert!(refused.to_string().contains("restricted"), "{refused}");
}
