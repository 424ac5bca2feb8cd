//! The chart's NetworkPolicy, enforced by kube-router: a pod without the gateway's labels
//! cannot reach the backend's API port, the gateway can; with the policy removed, the same
//! pod gets through (so the check can fail).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vx11_tests::eventually;
use vx11_tests::node_install::{not_ready_reason, wait_pods_ready};

use crate::support::{NS, node};

/// A pod that is a gateway in all but its labels: the vx11 image's gateway, with the token
/// set mounted and the backend Service as its upstream, labelled `app: intruder`.
fn intruder() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "intruder", "labels": {"app": "intruder"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "gateway",
                "image": "vx11:0.1.0",
                "imagePullPolicy": "Never",
                "command": ["/usr/local/bin/vx11-gateway"],
                "env": [
                    {"name": "VX11_GATEWAY_ADDR", "value": "0.0.0.0:8000"},
                    {"name": "VX11_OPERATOR_BACKEND_URL", "value": "http://vx11-operator-backend:8011"},
                    {"name": "VX11_TOKENS_DIR", "value": "/var/run/vx11/tokens"},
                    {"name": "VX11_METRICS_ADDR", "value": "0.0.0.0:9090"},
                    {"name": "VX11_UPSTREAM_TIMEOUT", "value": "3s"}
                ],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "tokens", "mountPath": "/var/run/vx11/tokens", "readOnly": true}],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [{"name": "tokens", "secret": {"secretName": "vx11-tokens"}}]
        }
    }))
    .unwrap()
}

async fn status_through(http: &reqwest::Client, ip: &str, token: &str) -> Result<u16, String> {
    http.get(format!("http://{ip}:8000/operator/api/health"))
        .header("x-vx11-token", token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gateway_pods_reach_the_backend_and_the_check_fails_without_the_policy() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    let client = shared.cp.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let _ = pods.delete("intruder", &DeleteParams::default()).await;
    eventually("no old intruder", Duration::from_secs(60), || async {
        match pods.get_opt("intruder").await {
            Ok(None) => Ok(()),
            _ => Err("still there"),
        }
    })
    .await
    .unwrap();
    pods.create(&PostParams::default(), &intruder())
        .await
        .unwrap();
    let intruder_ip = eventually("the intruder Ready", Duration::from_secs(60), || async {
        let pod = pods.get("intruder").await.map_err(|e| e.to_string())?;
        match not_ready_reason(&pod) {
            None => Ok(pod.status.and_then(|s| s.pod_ip).unwrap_or_default()),
            Some(why) => Err(why),
        }
    })
    .await
    .unwrap();
    let gateway_ip = shared.pods("gateway").await[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap();
    let token = shared.token().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // The gateway gets through; the intruder, with the same program and tokens, does not.
    assert_eq!(status_through(&http, &gateway_ip, &token).await, Ok(200));
    let blocked = status_through(&http, &intruder_ip, &token).await;
    assert!(
        matches!(blocked, Ok(502 | 504)),
        "the intruder reached the backend: {blocked:?}"
    );

    // Without the policy it does get through: the check above can fail.
    let policy = shared
        .kubectl_json(&["-n", NS, "get", "networkpolicy", "vx11-operator-backend"])
        .await;
    shared
        .kubectl(&["-n", NS, "delete", "networkpolicy", "vx11-operator-backend"])
        .await;
    let through = eventually(
        "the intruder through once the policy is gone",
        Duration::from_secs(60),
        || async {
            match status_through(&http, &intruder_ip, &token).await {
                Ok(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // Put the policy back as it was, and the intruder away, before asserting.
    let mut restored = policy.clone();
    if let Some(metadata) = restored["metadata"].as_object_mut() {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            metadata.remove(key);
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), restored.to_string()).unwrap();
    shared
        .kubectl(&["-n", NS, "create", "-f", &file.path().display().to_string()])
        .await;
    pods.delete("intruder", &DeleteParams::default())
        .await
        .unwrap();
    through.unwrap();
    wait_pods_ready(&client, NS, Duration::from_secs(60))
        .await
        .unwrap();
}
