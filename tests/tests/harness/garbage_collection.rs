//! kube-controller-manager's garbage collector deletes dependents of a deleted owner, and its
//! namespace controller finishes namespace deletion.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vx11_tests::{ControlPlane, eventually};

use crate::support::SETTLE;

const NS: &str = "gc";

#[tokio::test]
async fn dependents_are_collected_after_their_owner_is_deleted() {
    let cp = ControlPlane::builder()
        .with_controller_manager()
        .start()
        .await
        .expect("control plane");
    let client = cp.client().unwrap();
    vx11_tests::create_namespace(&client, NS)
        .await
        .expect("create namespace");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);

    let owner = configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .expect("create owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    for name in ["child", "bystander"] {
        let owners = if name == "child" {
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}])
        } else {
            json!([])
        };
        configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "ownerReferences": owners}
                }))
                .unwrap(),
            )
            .await
            .expect("create configmap");
    }

    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    eventually("child garbage-collected", SETTLE, || async {
        match configmaps.get_opt("child").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("child still exists".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.log_tails(20)));
    assert!(
        configmaps.get_opt("bystander").await.unwrap().is_some(),
        "an object without the ownerReference stays"
    );

    // The namespace controller empties and removes a deleted namespace.
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(NS, &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually("namespace removed", SETTLE, || async {
        match namespaces.get_opt(NS).await {
            Ok(None) => Ok(()),
            Ok(Some(ns)) => Err(format!("still there: {:?}", ns.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.log_tails(20)));
}
