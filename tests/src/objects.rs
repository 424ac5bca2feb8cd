//! Small object helpers that tests of several crates need.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{Error, Result, eventually};

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

/// Waits until the CRD `name` (e.g. `vx11tokensets.vx11.dev`) is `Established`, so its
/// objects can be created.
pub async fn crd_established(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually(&format!("CRD {name} established"), timeout, || {
        let crds = crds.clone();
        async move {
            let crd = crds.get(name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err("not established yet".to_owned())
            }
        }
    })
    .await
    .map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Creates or updates namespace `name` with the `restricted` Pod Security Standard enforced.
pub async fn apply_restricted_namespace(client: &Client, name: &str, manager: &str) -> Result<()> {
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest"}}
    });
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(manager),
            &Patch::Apply(&namespace),
        )
        .await?;
    Ok(())
}

/// The value of key `name` of the client Secret `vx11-client-tokens` in `namespace`.
pub async fn client_token(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get("vx11-client-tokens").await?;
    let value = secret
        .data
        .and_then(|d| d.get(name).cloned())
        .ok_or_else(|| Error::Kubeconfig(format!("vx11-client-tokens has no key {name}")))?;
    String::from_utf8(value.0).map_err(|_| Error::Kubeconfig("client token is not text".into()))
}

/// Waits until Vx11TokenSet `namespace/name` has condition Ready=True; returns it as JSON.
pub async fn wait_token_set_ready(client: &Client, namespace: &str, name: &str) -> Result<Value> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource {
            group: "vx11.dev".into(),
            version: "v1alpha1".into(),
            api_version: "vx11.dev/v1alpha1".into(),
            kind: "Vx11TokenSet".into(),
            plural: "vx11tokensets".into(),
        },
    );
    eventually(
        &format!("Vx11TokenSet {namespace}/{name} Ready"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let object = serde_json::to_value(api.get(name).await.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                let ready = object["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready {
                    Ok(object)
                } else {
                    Err("not Ready yet".to_string())
                }
            }
        },
    )
    .await
    .map_err(|e| Error::Kubeconfig(e.to_string()))
}
