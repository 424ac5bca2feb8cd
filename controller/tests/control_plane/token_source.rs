//! A `secretRef` uses only a Secret that opts in with the label `vx11.dev/token-source=true`:
//! one without it is refused (`Ready=False`, reason `SourceNotOptedIn`, naming the label) and
//! changes nothing; labelled, it is served; the label removed, the last value stays and the
//! new one is not read. An invalid value is reported as invalid only: the same text whatever
//! its length or the position of its bad character, in the status and in the events.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use vx11_controller::Vx11TokenSet;
use vx11_tests::eventually;
use vx11_tests::services::assert_no_value_in;
use vx11_tokenset::{TokenDigest, TokenFile, TokenState};

use crate::support::*;

const NS: &str = "sources";

/// The Ready condition's (status, reason, message).
async fn ready(sets: &Api<Vx11TokenSet>) -> Option<(String, String, String)> {
    let ts = sets.get("set").await.ok()?;
    let c = ts
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

async fn wait_ready(sets: &Api<Vx11TokenSet>, status: &str, reason: &str) -> String {
    eventually(&format!("Ready={status} ({reason})"), SETTLE, || async {
        match ready(sets).await {
            Some((s, r, m)) if s == status && r == reason => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("condition")
}

fn ci_digests(file: &TokenFile) -> Vec<(TokenDigest, TokenState)> {
    file.tokens
        .iter()
        .filter(|e| e.name == "ci")
        .map(|e| (e.sha256, e.state))
        .collect()
}

async fn service_file(secrets: &Api<Secret>) -> TokenFile {
    token_file(&get_secret(secrets, "svc").await.unwrap())
}

async fn wait_ci_active(secrets: &Api<Secret>, value: &str) {
    let want = TokenDigest::of(value.as_bytes());
    eventually("ci served", SETTLE, || async {
        let file = token_file(&get_secret(secrets, "svc").await?);
        if ci_digests(&file)
            .iter()
            .any(|(d, s)| *d == want && *s == TokenState::Active)
        {
            Ok(())
        } else {
            Err(format!("{:?}", ci_digests(&file)))
        }
    })
    .await
    .unwrap();
}

/// The notes of the Warning events with `reason`.
async fn notes(cluster: &Cluster, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(cluster.admin.clone(), NS);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn only_secrets_that_opt_in_are_token_sources_and_invalid_values_are_only_invalid() {
    let cluster = Cluster::start(&[NS]).await;
    let mut controller = cluster.controller("sources", &[]);
    let sets = cluster.sets(NS);
    let secrets = cluster.secrets(NS);
    let first = "first-user-token-0123456789";
    let second = "second-user-token-0123456789";
    let third = "third-user-token-0123456789";
    // 6 bytes; then 37 bytes with a space at byte 26.
    let too_short = "short!";
    let bad_character = "abcdefghijklmnopqrstuvwxyz 0123456789";
    let values = [first, second, third, too_short, bad_character].map(str::to_owned);

    // Without the label: refused, naming the label; the Secret is not touched and its value
    // is not served.
    put_secret(&secrets, "ci-token", "token", first, &[]).await;
    let before = get_secret(&secrets, "ci-token").await.unwrap();
    let set: Vx11TokenSet = serde_json::from_value(json!({
        "apiVersion": "vx11.dev/v1alpha1", "kind": "Vx11TokenSet",
        "metadata": {"name": "set"},
        "spec": {"secretName": "svc", "clientSecretName": "client", "tokens": [
            {"name": "op", "generate": {}},
            {"name": "ci", "secretRef": {"name": "ci-token", "key": "token"}},
        ]},
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let message = wait_ready(&sets, "False", "SourceNotOptedIn").await;
    assert!(
        message.contains("Secret ci-token does not carry the label vx11.dev/token-source=true"),
        "{message}"
    );
    let file = service_file(&secrets).await;
    assert!(ci_digests(&file).is_empty(), "{file:?}");
    assert_eq!(file.tokens.len(), 1, "the generated token is served");
    let after = get_secret(&secrets, "ci-token").await.unwrap();
    assert_eq!(resource_version(&after), resource_version(&before));
    let event = notes(&cluster, "SourceNotOptedIn").await;
    assert!(
        event
            .iter()
            .any(|n| n.contains("label vx11.dev/token-source=true")),
        "{event:?}"
    );

    // Labelled: served.
    put_user_secret(&secrets, "ci-token", "token", first).await;
    wait_ready(&sets, "True", "Reconciled").await;
    wait_ci_active(&secrets, first).await;

    // The label removed and a new value written: refused again, the new value not read, the
    // last one still served.
    put_secret(&secrets, "ci-token", "token", second, &[]).await;
    wait_ready(&sets, "False", "SourceNotOptedIn").await;
    let file = service_file(&secrets).await;
    let digests = ci_digests(&file);
    assert!(
        digests
            .iter()
            .all(|(d, _)| *d != TokenDigest::of(second.as_bytes())),
        "{digests:?}"
    );
    assert!(
        digests
            .iter()
            .any(|(d, _)| *d == TokenDigest::of(first.as_bytes())),
        "{digests:?}"
    );

    // Invalid values: reported as invalid, with the same text for a 6-byte value and for a
    // 37-byte one with a space at byte 26.
    put_user_secret(&secrets, "ci-token", "token", too_short).await;
    let short_message = wait_ready(&sets, "False", "InvalidSpec").await;
    put_user_secret(&secrets, "ci-token", "token", third).await;
    wait_ready(&sets, "True", "Reconciled").await;
    put_user_secret(&secrets, "ci-token", "token", bad_character).await;
    let bad_message = wait_ready(&sets, "False", "InvalidSpec").await;
    assert_eq!(short_message, bad_message);
    let invalid_notes = notes(&cluster, "InvalidSpec").await;
    assert!(invalid_notes.len() >= 2, "{invalid_notes:?}");
    for text in invalid_notes.iter().chain([&short_message]) {
        assert!(text.contains("does not hold a valid token"), "{text}");
        for leak in ["position", "bytes", " 6 ", "37", "26"] {
            assert!(!text.contains(leak), "{leak:?} in {text}");
        }
    }
    let file = service_file(&secrets).await;
    for bad in [too_short, bad_character] {
        assert!(
            ci_digests(&file)
                .iter()
                .all(|(d, _)| *d != TokenDigest::of(bad.as_bytes()))
        );
    }

    assert_no_value_in("controller logs", &controller.logs(), &values);
    assert_no_value_in("events", &cluster.events_text(NS).await, &values);
    let status = serde_json::to_string(&sets.get("set").await.unwrap().status).unwrap();
    assert_no_value_in("status", &status, &values);
    assert!(after.labels().is_empty());
    controller.sigkill();
}
