//! `vx11_controller_tokens` follows the sets that exist: the series of a deleted set are
//! removed (the controller is not called for a deleted set), by each controller scope for its
//! own namespace, and those of the other sets stay.

use std::collections::BTreeSet;

use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vx11_controller::Vx11TokenSet;
use vx11_tests::eventually;

use crate::support::*;

const ONE: &str = "metrics-one";
const TWO: &str = "metrics-two";

fn tokenset(name: &str) -> Vx11TokenSet {
    serde_json::from_value(json!({
        "apiVersion": "vx11.dev/v1alpha1",
        "kind": "Vx11TokenSet",
        "metadata": {"name": name},
        "spec": {
            "secretName": format!("{name}-svc"),
            "clientSecretName": format!("{name}-client"),
            "tokens": [{"name": "a", "generate": {}}],
        },
    }))
    .expect("valid TokenSet")
}

/// The sets (`namespace/name`) that have a `vx11_controller_tokens` series.
async fn sets_with_series(controller: &ControllerProcess) -> Result<BTreeSet<String>, String> {
    let text = controller.http_get("/metrics").await?;
    if !text.starts_with("HTTP/1.0 200") {
        return Err(text);
    }
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("vx11_controller_tokens{"))
        .filter_map(|labels| {
            let value = |key: &str| {
                let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
                let end = start + labels[start..].find('"')?;
                Some(labels[start..end].to_owned())
            };
            Some(format!("{}/{}", value("namespace")?, value("tokenset")?))
        })
        .collect())
}

/// Waits until the sets with series are exactly `expected`.
async fn wait_series(controller: &ControllerProcess, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    eventually(&format!("series of {expected:?}"), SETTLE, || async {
        let found = sets_with_series(controller).await?;
        if found == expected {
            Ok(())
        } else {
            Err(format!("series of {found:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", controller.logs()));
}

#[tokio::test]
async fn series_of_a_deleted_set_are_removed() {
    let cluster = Cluster::start(&[ONE, TWO]).await;
    for (ns, name) in [(ONE, "kept"), (ONE, "short-lived"), (TWO, "kept")] {
        cluster
            .sets(ns)
            .create(&PostParams::default(), &tokenset(name))
            .await
            .expect("create TokenSet");
    }

    // One controller (and store) per namespace: each scope removes only its own namespace's
    // deleted sets, never the other scope's live ones.
    let mut scoped = cluster.controller(
        "metrics-scoped",
        &[("VX11_WATCH_NAMESPACES", &format!("{ONE},{TWO}"))],
    );
    wait_series(
        &scoped,
        &[
            "metrics-one/kept",
            "metrics-one/short-lived",
            "metrics-two/kept",
        ],
    )
    .await;
    cluster
        .sets(ONE)
        .delete("short-lived", &DeleteParams::default())
        .await
        .expect("delete TokenSet");
    wait_series(&scoped, &["metrics-one/kept", "metrics-two/kept"]).await;
    scoped.sigkill();

    // All namespaces: one scope removes deleted sets wherever they were.
    let all = cluster.controller("metrics-all", &[]);
    wait_series(&all, &["metrics-one/kept", "metrics-two/kept"]).await;
    cluster
        .sets(TWO)
        .delete("kept", &DeleteParams::default())
        .await
        .expect("delete TokenSet");
    wait_series(&all, &["metrics-one/kept"]).await;
}
