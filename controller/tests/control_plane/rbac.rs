//! The chart's RBAC is exactly enough: with it the controller starts (the lifecycle test runs
//! with it); without any one verb of any one rule, it refuses to start and says which.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

use crate::support::*;

/// Every (document index, rule index, verb) of the rendered RBAC.
fn all_grants(objects: &[Value]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (d, object) in objects.iter().enumerate() {
        let Some(rules) = object["rules"].as_array() else {
            continue;
        };
        for (r, rule) in rules.iter().enumerate() {
            for verb in rule["verbs"].as_array().unwrap() {
                out.push((d, r, verb.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

/// The rendered RBAC without one verb (and without the rule if it was its only verb).
fn without(objects: &[Value], (d, r, verb): &(usize, usize, String)) -> Vec<Value> {
    let mut objects = objects.to_vec();
    let rules = objects[*d]["rules"].as_array_mut().unwrap();
    let verbs = rules[*r]["verbs"].as_array_mut().unwrap();
    verbs.retain(|v| v.as_str() != Some(verb.as_str()));
    if verbs.is_empty() {
        rules.remove(*r);
    }
    objects
}

/// Waits until the API server's authorizer has seen the reduced rules.
async fn wait_denied(cluster: &Cluster, object: &Value, rule: usize, verb: &str) {
    let rule = &object["rules"][rule];
    let (resource, subresource) = match rule["resources"][0].as_str().unwrap().split_once('/') {
        Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
        None => (rule["resources"][0].as_str().unwrap().to_owned(), None),
    };
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
    let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "group": rule["apiGroups"][0], "resource": resource, "subresource": subresource,
            "verb": verb, "namespace": namespace,
            "name": rule["resourceNames"].get(0),
        }}
    }))
    .unwrap();
    let client = cluster.cp.service_account_client(RELEASE_NS, SA).unwrap();
    let api: Api<SelfSubjectAccessReview> = Api::all(client);
    vx11_tests::eventually("permission withdrawn", SETTLE, || async {
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| e.to_string())?;
        if answer.status.is_some_and(|s| s.allowed) {
            Err("still allowed".to_owned())
        } else {
            Ok(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_any_one_rule_the_controller_names_what_is_missing() {
    let cluster = Cluster::start(&["watched", "ignored"]).await;
    let full = rendered_rbac();
    let grants = all_grants(&full);
    assert_eq!(grants.len(), 13, "{grants:?}");
    for grant in &grants {
        let reduced = without(&full, grant);
        // kubectl apply removes what the reduced object lacks.
        cluster.apply(&reduced).await;
        let resource = full[grant.0]["rules"][grant.1]["resources"][0]
            .as_str()
            .unwrap()
            .to_owned();
        wait_denied(&cluster, &full[grant.0], grant.1, &grant.2).await;
        let mut controller = cluster.controller(&format!("rbac-{}-{}", grant.1, grant.2), &[]);
        let status = controller
            .exited(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "without `{}` on {resource} the controller kept running:\n{}",
                    grant.2,
                    controller.logs()
                )
            });
        assert!(!status.success());
        let logs = controller.logs();
        let expected = format!("cannot `{}` {resource}", grant.2);
        assert!(
            logs.contains("missing RBAC permission") && logs.contains(&expected),
            "without `{}` on {resource}: expected a message with {expected:?}, got:\n{logs}",
            grant.2
        );
    }
    // With the full rules it starts and stays up.
    cluster.apply(&full).await;
    let mut controller = cluster.controller("rbac-full", &[]);
    vx11_tests::eventually("controller leading", SETTLE, || async {
        if controller
            .logs()
            .contains("leading: starting the controllers")
        {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", controller.logs()));
    assert!(controller.exited(Duration::from_secs(2)).await.is_none());
    controller.sigkill();

    // A configured namespace list: sets elsewhere are left alone. Probes and metrics served.
    let mut scoped = cluster.controller("scoped", &[("VX11_WATCH_NAMESPACES", "watched")]);
    for ns in ["watched", "ignored"] {
        let set: vx11_controller::Vx11TokenSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "vx11.dev/v1alpha1", "kind": "Vx11TokenSet",
            "metadata": {"name": "set"},
            "spec": {"secretName": "svc", "clientSecretName": "client", "tokens": [{"name": "a", "generate": {}}]},
        }))
        .unwrap();
        cluster
            .sets(ns)
            .create(&PostParams::default(), &set)
            .await
            .unwrap();
    }
    vx11_tests::eventually("watched namespace reconciled", SETTLE, || async {
        get_secret(&cluster.secrets("watched"), "svc")
            .await
            .map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", scoped.logs()));
    let expected = [
        "vx11_controller_reconciles_total",
        "vx11_controller_reconcile_duration_seconds_bucket",
        "vx11_controller_tokens{",
        "vx11_controller_leader 1",
    ];
    // Leadership and the first reconcile land a moment apart: wait for all of them.
    let metrics = vx11_tests::eventually("metrics", SETTLE, || async {
        let text = scoped.http_get("/metrics").await?;
        if expected.iter().all(|name| text.contains(name)) {
            Ok(text)
        } else {
            Err("not yet".to_owned())
        }
    })
    .await
    .unwrap();
    for name in expected {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(
        scoped
            .http_get("/health")
            .await
            .unwrap()
            .starts_with("HTTP/1.0 200")
    );
    assert!(
        scoped
            .http_get("/ready")
            .await
            .unwrap()
            .starts_with("HTTP/1.0 200")
    );
    assert!(
        get_secret(&cluster.secrets("ignored"), "svc")
            .await
            .is_err(),
        "a namespace outside the list was reconciled"
    );
    scoped.sigkill();
}
