//! The chart's RBAC is exactly enough: with it the controller starts (the lifecycle test runs
//! with it); without any one verb of any one rule, it refuses to start and says which. With
//! `controller.watchNamespaces` its grants are Roles in those namespaces only.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
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

/// With `controller.watchNamespaces=[a]` the chart grants Roles in `a` (and the Lease's in
/// the release namespace) and nothing cluster-wide: as the controller's ServiceAccount, a
/// Secret in `b` cannot be read or listed, nor Secrets of all namespaces. The controller runs
/// on those grants (its preflight asks for them in `a`), reconciles `a`, and refuses to start
/// when told to watch `b` too, naming the permission and the namespace.
#[tokio::test]
async fn with_watch_namespaces_the_grants_are_roles_in_those_namespaces_only() {
    let rbac = rendered_rbac_with(&["controller.watchNamespaces={a}", "tokenSet.create=false"]);
    let kinds: Vec<(String, Option<String>)> = rbac
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["namespace"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert!(
        kinds
            .iter()
            .all(|(k, ns)| !k.starts_with("Cluster") && (k == "ServiceAccount" || ns.is_some())),
        "{kinds:?}"
    );
    let grants = all_grants(&rbac);
    assert_eq!(grants.len(), 13, "{grants:?}");
    for (kind, ns) in &kinds {
        if kind == "Role" || kind == "RoleBinding" {
            assert!(
                [Some("a"), Some(RELEASE_NS)].contains(&ns.as_deref()),
                "{kind} in {ns:?}"
            );
        }
    }

    let cluster = Cluster::start_with_rbac(&["a", "b"], &rbac).await;
    for ns in ["a", "b"] {
        put_user_secret(
            &cluster.secrets(ns),
            "ci-token",
            "token",
            "user-token-0123456789ab",
        )
        .await;
    }
    let token = cluster
        .cp
        .service_account_token(RELEASE_NS, SA, Duration::from_secs(600))
        .await
        .unwrap();
    let as_controller = cluster.cp.token_client(&token).unwrap();
    let in_a: Api<Secret> = Api::namespaced(as_controller.clone(), "a");
    let in_b: Api<Secret> = Api::namespaced(as_controller.clone(), "b");
    let everywhere: Api<Secret> = Api::all(as_controller);
    // Role bindings reach the authorizer's cache a moment after they are written.
    vx11_tests::eventually("the Role in a in effect", SETTLE, || async {
        in_a.get("ci-token")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    let forbidden = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!(
            "{what}: expected 403 Forbidden, got {:?}",
            other.map(|_| ())
        ),
    };
    forbidden(
        in_b.get("ci-token").await.map(|_| ()),
        "get Secret b/ci-token",
    );
    forbidden(
        in_b.list(&ListParams::default()).await.map(|_| ()),
        "list Secrets in b",
    );
    forbidden(
        everywhere.list(&ListParams::default()).await.map(|_| ()),
        "list Secrets in all namespaces",
    );

    // The controller runs on these grants and reconciles `a` (a secretRef included).
    let mut scoped = cluster.controller("scoped-a", &[("VX11_WATCH_NAMESPACES", "a")]);
    let set: vx11_controller::Vx11TokenSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "vx11.dev/v1alpha1", "kind": "Vx11TokenSet",
        "metadata": {"name": "set"},
        "spec": {"secretName": "svc", "clientSecretName": "client", "tokens": [
            {"name": "op", "generate": {}},
            {"name": "ci", "secretRef": {"name": "ci-token", "key": "token"}},
        ]},
    }))
    .unwrap();
    cluster
        .sets("a")
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    vx11_tests::eventually("set in a Ready", SETTLE, || async {
        let ts = cluster
            .sets("a")
            .get("set")
            .await
            .map_err(|e| e.to_string())?;
        let ready = ts
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", scoped.logs()));
    let file = token_file(&get_secret(&cluster.secrets("a"), "svc").await.unwrap());
    assert_eq!(file.tokens.len(), 2, "{file:?}");
    assert!(scoped.exited(Duration::from_secs(1)).await.is_none());
    scoped.sigkill();

    // Told to watch `b` as well, it refuses to start and names what it lacks there.
    let mut wider = cluster.controller("scoped-ab", &[("VX11_WATCH_NAMESPACES", "a,b")]);
    let status = wider
        .exited(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("kept running without grants in b:\n{}", wider.logs()));
    assert!(!status.success());
    let logs = wider.logs();
    assert!(
        logs.contains("missing RBAC permission")
            && logs.contains("secrets (API group core) in namespace b"),
        "{logs}"
    );
    assert!(!logs.contains("in namespace a,"), "{logs}");
}
