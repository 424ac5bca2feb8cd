//! RBAC is enforced: a ServiceAccount is refused until a Role and RoleBinding allow it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vx11_tests::{ControlPlane, eventually};

use crate::support::{SETTLE, api_status};

const NS: &str = "rbac";
const SA: &str = "reader";

async fn list_configmaps(client: &Client) -> Result<usize, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.len())
}

#[tokio::test]
async fn service_account_is_refused_until_bound() {
    let cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client().unwrap();
    vx11_tests::create_namespace(&admin, NS)
        .await
        .expect("create namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": SA}})).unwrap(),
        )
        .await
        .expect("create ServiceAccount");

    // Two ways to be the ServiceAccount: impersonation, and a real token from the TokenRequest
    // API, signed with the control plane's ServiceAccount key.
    let impersonated = cp.service_account_client(NS, SA).unwrap();
    let token = cp
        .service_account_token(NS, SA, Duration::from_secs(600))
        .await
        .expect("token for the ServiceAccount");
    let with_token = cp.token_client(&token).unwrap();

    for client in [&impersonated, &with_token] {
        let result = list_configmaps(client).await;
        assert_eq!(api_status(&result), Ok(403), "{result:?}");
    }

    let roles: Api<Role> = Api::namespaced(admin.clone(), NS);
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "configmap-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
            }))
            .unwrap(),
        )
        .await
        .expect("create Role");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), NS);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "configmap-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]
            }))
            .unwrap(),
        )
        .await
        .expect("create RoleBinding");

    for (how, client) in [("impersonated", &impersonated), ("token", &with_token)] {
        eventually(&format!("{how} ServiceAccount allowed"), SETTLE, || async {
            list_configmaps(client).await.map_err(|e| e.to_string())
        })
        .await
        .unwrap();
    }

    // Only what the Role grants: Secrets stay forbidden.
    let secrets: Api<Secret> = Api::namespaced(impersonated, NS);
    let result = secrets.list(&ListParams::default()).await;
    assert_eq!(api_status(&result), Ok(403), "{result:?}");
}
