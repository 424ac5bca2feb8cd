//! vx11 end to end on a real control plane: `helm install` of the chart, the controller as
//! the chart's ServiceAccount, the Secret projected as kubelet does, the real gateway and
//! backend with the chart's pod environment.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/seed.rs"]
mod seed;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use vx11_tests::ControlPlane;
use vx11_tests::local::{LocalOptions, LocalStack};
use vx11_tests::services::assert_no_value_in;

async fn install() -> (ControlPlane, LocalStack, tempfile::TempDir) {
    let cp = ControlPlane::builder()
        .with_controller_manager()
        .start()
        .await
        .expect("control plane");
    let work = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(work.path());
    options.helm_set = vec![
        "tokenSet.rotation.every=1h".into(),
        "tokenSet.rotation.gracePeriod=4s".into(),
    ];
    let stack = LocalStack::start(&cp, options, |step| eprintln!("[e2e] {step}"))
        .await
        .expect("vx11 installed and running");
    (cp, stack, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_creates_everything_and_the_seeds_cases_pass() {
    let (cp, stack, _work) = install().await;
    let client = cp.client().unwrap();

    // Every object of the chart exists.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "vx11");
    let names: BTreeSet<String> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "vx11-controller".into(),
            "vx11-gateway".into(),
            "vx11-operator-backend".into()
        ])
    );
    let out = cp
        .kubectl()
        .args([
            "-n",
            "vx11",
            "get",
            "svc,pdb,networkpolicy,sa,vts",
            "-o",
            "name",
        ])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "service/vx11-gateway",
        "service/vx11-operator-backend",
        "poddisruptionbudget.policy/vx11-gateway",
        "networkpolicy.networking.k8s.io/vx11-gateway",
        "networkpolicy.networking.k8s.io/vx11-operator-backend",
        "networkpolicy.networking.k8s.io/vx11-controller",
        "serviceaccount/vx11-controller",
        "vx11tokenset.vx11.dev/vx11",
    ] {
        assert!(
            listed.contains(expected),
            "{expected} missing from:\n{listed}"
        );
    }

    // The namespace enforces `restricted`: every pod the chart would run is accepted.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "vx11");
    for deployment in deployments.list(&ListParams::default()).await.unwrap() {
        let name = deployment.metadata.name.clone().unwrap();
        let template = deployment.spec.unwrap().template;
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{name}-psa-check")),
                ..Default::default()
            },
            spec: template.spec,
            ..Default::default()
        };
        let params = PostParams {
            dry_run: true,
            ..Default::default()
        };
        pods.create(&params, &pod)
            .await
            .unwrap_or_else(|e| panic!("{name}'s pod refused under restricted: {e}"));
    }
    // And a privileged pod is not, so the check above means something.
    let privileged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "x", "image": "x", "securityContext": {"privileged": true}}]}
    }))
    .unwrap();
    assert!(
        pods.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &privileged
        )
        .await
        .is_err()
    );

    // `kubectl get vts` shows the default set Ready.
    let out = cp
        .kubectl()
        .args(["-n", "vx11", "get", "vts"])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("vx11") && table.contains("True"), "{table}");

    // The seed's five cases with the client token.
    let token = stack.client_token(&cp, "operator").await.unwrap();
    seed::assert_seed_cases(&stack.gateway_url(), &token).await;
    assert_no_value_in("the stack's logs", &stack.logs(), [&token]);
}
