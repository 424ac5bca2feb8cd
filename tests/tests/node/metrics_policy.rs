//! The chart's metrics-port policy, enforced by kube-router: a pod that the monitoring
//! selector does not pick (in the release's namespace, so nothing but its labels and
//! namespace differ) cannot reach the metrics port of the gateway, the backend or the
//! controller; the same pod in a namespace labelled `vx11.dev/metrics-scraper=true` reaches
//! all three (so the check can fail). Meanwhile the controller, whose egress is limited to the
//! API server and the consumers' metrics ports, keeps every consumer `Synced`.
//!
//! A probe is the vx11 gateway itself, with a token file of its own and the three metrics
//! listeners as its upstreams (`operator` → the backend's, module `gw` → the gateway's,
//! module `ctl` → the controller's): through it, 502/504 means the connection was blocked,
//! any other status that it got through.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vx11_tests::eventually;
use vx11_tests::node_install::not_ready_reason;

use crate::support::{NS, Shared, node};

/// A namespace the monitoring selector picks (the chart's default `namespaceLabels`).
const SCRAPER_NS: &str = "vx11-scraper";
const PROBE_TOKEN: &str = "probe-token-0123456789abcdef";

fn metrics_url(pod: &Pod) -> String {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    format!("http://{ip}:9090")
}

/// The probe's token file: a plain `tokens` file with [`PROBE_TOKEN`].
fn probe_tokens() -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "probe-tokens"},
        "stringData": {"tokens": format!("{PROBE_TOKEN}\n")}
    }))
    .unwrap()
}

fn probe(backend: &str, gateway: &str, controller: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "metrics-probe", "labels": {"app": "metrics-probe"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe",
                "image": "vx11:0.1.0",
                "imagePullPolicy": "Never",
                "command": ["/usr/local/bin/vx11-gateway"],
                "env": [
                    {"name": "VX11_GATEWAY_ADDR", "value": "0.0.0.0:8000"},
                    {"name": "VX11_OPERATOR_BACKEND_URL", "value": backend},
                    {"name": "VX11_MODULES", "value": format!("gw={gateway},ctl={controller}")},
                    {"name": "VX11_POLICY_MODE", "value": "full"},
                    {"name": "VX11_TOKENS_DIR", "value": "/var/run/vx11/tokens"},
                    {"name": "VX11_METRICS_ADDR", "value": "0.0.0.0:9090"},
                    {"name": "VX11_UPSTREAM_TIMEOUT", "value": "3s"}
                ],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "tokens", "mountPath": "/var/run/vx11/tokens", "readOnly": true}],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}}
            }],
            "volumes": [{"name": "tokens", "secret": {"secretName": "probe-tokens"}}]
        }
    }))
    .unwrap()
}

/// Starts the probe in `namespace` (replacing an old one); returns its address.
async fn start_probe(client: &Client, namespace: &str, pod: &Pod) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let _ = secrets
        .delete("probe-tokens", &DeleteParams::default())
        .await;
    secrets
        .create(&PostParams::default(), &probe_tokens())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    remove_probe(&pods).await;
    pods.create(&PostParams::default(), pod).await.unwrap();
    eventually(
        &format!("the probe in {namespace} Ready"),
        Duration::from_secs(90),
        || async {
            let pod = pods.get("metrics-probe").await.map_err(|e| e.to_string())?;
            match not_ready_reason(&pod) {
                None => Ok(pod.status.and_then(|s| s.pod_ip).unwrap_or_default()),
                Some(why) => Err(why),
            }
        },
    )
    .await
    .unwrap()
}

async fn remove_probe(pods: &Api<Pod>) {
    let _ = pods
        .delete("metrics-probe", &DeleteParams::default().grace_period(0))
        .await;
    eventually("no old probe", Duration::from_secs(60), || async {
        match pods.get_opt("metrics-probe").await {
            Ok(None) => Ok(()),
            _ => Err("still there"),
        }
    })
    .await
    .unwrap();
}

/// The status of `path` through the probe at `ip`: the probe's upstream answered it unless
/// it is 502/504.
async fn through(http: &reqwest::Client, ip: &str, path: &str) -> Result<u16, String> {
    http.get(format!("http://{ip}:8000{path}"))
        .header("x-vx11-token", PROBE_TOKEN)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// The three metrics listeners, by the probe's path to each.
const TARGETS: [(&str, &str); 3] = [
    ("the backend's metrics port", "/operator/api/metrics-probe"),
    ("the gateway's metrics port", "/gw/api/metrics-probe"),
    ("the controller's metrics port", "/ctl/api/metrics-probe"),
];

async fn probe_pod(shared: &Shared) -> Pod {
    let backend = shared.pods("operator-backend").await.remove(0);
    let gateway = shared.pods("gateway").await.remove(0);
    let controller = shared.pods("controller").await.remove(0);
    probe(
        &metrics_url(&backend),
        &metrics_url(&gateway),
        &metrics_url(&controller),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ports_are_reachable_only_from_the_monitoring_namespaces() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    let client = shared.cp.client().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let pod = probe_pod(shared).await;

    // From the release's own namespace, without the monitoring labels: blocked, all three.
    let outsider = start_probe(&client, NS, &pod).await;
    // The probe's own routing works (its API port is open and it knows the token).
    assert_eq!(
        through(&http, &outsider, "/health").await,
        Ok(200),
        "the probe does not answer"
    );
    let mut reached = Vec::new();
    for (what, path) in TARGETS {
        let status = through(&http, &outsider, path).await;
        if !matches!(status, Ok(502 | 504)) {
            reached.push(format!("{what}: {status:?}"));
        }
    }
    remove_probe(&Api::namespaced(client.clone(), NS)).await;
    assert!(
        reached.is_empty(),
        "a pod the monitoring selector does not pick reached {reached:?}"
    );

    // From a namespace labelled vx11.dev/metrics-scraper=true: through, all three.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": SCRAPER_NS, "labels": {"vx11.dev/metrics-scraper": "true"}}
    });
    namespaces
        .patch(
            SCRAPER_NS,
            &PatchParams::apply("vx11-node-tests"),
            &Patch::Apply(&labelled),
        )
        .await
        .unwrap();
    let scraper = start_probe(&client, SCRAPER_NS, &pod).await;
    let mut blocked = Vec::new();
    for (what, path) in TARGETS {
        let status = eventually(
            &format!("{what} from {SCRAPER_NS}"),
            Duration::from_secs(60),
            || async {
                match through(&http, &scraper, path).await {
                    Ok(502 | 504) | Err(_) => Err("blocked"),
                    Ok(status) => Ok(status),
                }
            },
        )
        .await;
        if status.is_err() {
            blocked.push(what);
        }
    }
    let _ = namespaces
        .delete(SCRAPER_NS, &DeleteParams::default())
        .await;
    assert!(
        blocked.is_empty(),
        "a pod of a monitoring namespace was blocked from {blocked:?}"
    );

    // The controller still reaches the API server and every consumer's metrics port: the
    // release's set is Ready and every consumer Synced.
    eventually("every consumer Synced", Duration::from_secs(60), || async {
        let ts = shared.kubectl_json(&["-n", NS, "get", "vts", "vx11"]).await;
        let conditions = ts["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is_true = |t: &str| {
            conditions
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        let consumers = ts["status"]["consumers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if is_true("Ready")
            && is_true("Propagated")
            && !consumers.is_empty()
            && consumers.iter().all(|c| c["state"] == "Synced")
        {
            Ok(())
        } else {
            Err(format!("{}", ts["status"]))
        }
    })
    .await
    .unwrap();
}
