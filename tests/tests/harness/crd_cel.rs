//! The API server enforces a CRD's schema and its CEL (`x-kubernetes-validations`) rules.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;
use vx11_tests::{ControlPlane, eventually};

use crate::support::{SETTLE, api_status};

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.cel.vx11.dev"},
        "spec": {
            "group": "cel.vx11.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["min", "max"],
                        "properties": {
                            "min": {"type": "integer"},
                            "max": {"type": "integer", "maximum": 100}
                        },
                        "x-kubernetes-validations": [{
                            "rule": "self.min <= self.max",
                            "message": "min must not exceed max"
                        }]
                    }}
                }}
            }]
        }
    }))
    .expect("valid CRD")
}

fn widget(name: &str, min: i64, max: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "cel.vx11.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"min": min, "max": max}
    }))
    .expect("valid object")
}

#[tokio::test]
async fn cel_rule_refuses_invalid_objects_and_admits_valid_ones() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().unwrap();
    vx11_tests::create_namespace(&client, "cel")
        .await
        .expect("create namespace");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd())
        .await
        .expect("create CRD");
    vx11_tests::crd_established(&client, "widgets.cel.vx11.dev", SETTLE)
        .await
        .expect("CRD established");

    let gvk = GroupVersionKind::gvk("cel.vx11.dev", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "cel", &ApiResource::from_gvk(&gvk));

    // The resource may take a moment to be served after Established: retry while 404.
    let refused = eventually("CEL rule to refuse min > max", SETTLE, || async {
        let result = widgets
            .create(&PostParams::default(), &widget("bad", 5, 1))
            .await;
        match api_status(&result) {
            Ok(404) => Err("resource not served yet".to_owned()),
            Ok(_) => Ok(result),
            Err(e) => Err(e),
        }
    })
    .await
    .unwrap();
    let Err(kube::Error::Api(status)) = refused else {
        unreachable!()
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("min must not exceed max"),
        "{}",
        status.message
    );

    // The plain OpenAPI schema is enforced as well.
    let result = widgets
        .create(&PostParams::default(), &widget("big", 1, 1000))
        .await;
    assert_eq!(api_status(&result), Ok(422), "{result:?}");

    let good = widgets
        .create(&PostParams::default(), &widget("good", 1, 5))
        .await
        .expect("a valid widget is admitted");
    assert_eq!(good.data["spec"]["max"], 5);

    // Updates are checked too: breaking the rule on an existing object is refused.
    let mut broken = good.clone();
    broken.data["spec"]["min"] = json!(9);
    let result = widgets
        .replace("good", &PostParams::default(), &broken)
        .await;
    assert_eq!(api_status(&result), Ok(422), "{result:?}");
}
