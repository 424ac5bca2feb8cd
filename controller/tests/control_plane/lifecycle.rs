//! The controller on a real control plane, running as the chart's ServiceAccount: issue,
//! rotation on request and on schedule, grace and pruning, secretRef, SourceMissing,
//! InvalidSpec, revocation, a person's edits put back, idleness, status, events, and no
//! token value anywhere it should not be.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vx11_controller::Vx11TokenSet;
use vx11_tests::eventually;
use vx11_tests::services::assert_no_value_in;
use vx11_tokenset::{TokenDigest, TokenState};

use crate::support::*;

const NS: &str = "apps";

fn tokenset(name: &str, spec: serde_json::Value) -> Vx11TokenSet {
    serde_json::from_value(json!({
        "apiVersion": "vx11.dev/v1alpha1",
        "kind": "Vx11TokenSet",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid TokenSet")
}

async fn ready_reason(sets: &Api<Vx11TokenSet>, name: &str) -> Option<(String, String)> {
    let ts = sets.get(name).await.ok()?;
    let c = ts
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason))
}

async fn wait_reason(sets: &Api<Vx11TokenSet>, name: &str, status: &str, reason: &str) {
    eventually(
        &format!("{name} Ready={status} ({reason})"),
        SETTLE,
        || async {
            match ready_reason(sets, name).await {
                Some((s, r)) if s == status && r == reason => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .expect("condition");
}

#[tokio::test]
async fn tokenset_lifecycle_as_the_charts_service_account() {
    let cluster = Cluster::start(&[NS]).await;
    let mut controller = cluster.controller("solo", &[]);
    let sets = cluster.sets(NS);
    let secrets = cluster.secrets(NS);
    let mut values: BTreeSet<String> = BTreeSet::new();

    let user_value = "user-token-0123456789ab";
    values.insert(user_value.into());
    put_user_secret(&secrets, "ci-token", "token", user_value).await;
    sets.create(
        &PostParams::default(),
        &tokenset(
            "main",
            json!({
                "secretName": "svc-tokens",
                "clientSecretName": "client-tokens",
                "tokens": [
                    {"name": "operator", "generate": {"bytes": 32}},
                    {"name": "ci", "secretRef": {"name": "ci-token", "key": "token"}},
                ],
                "rotation": {"gracePeriod": "2s"},
            }),
        ),
    )
    .await
    .expect("create TokenSet");

    // kubectl wait works on the Ready condition.
    let out = cluster
        .cp
        .kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "vts/main",
            "-n",
            NS,
            "--timeout=60s",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl wait: {} {}",
        String::from_utf8_lossy(&out.stderr),
        controller.logs()
    );

    // `kubectl get vts` shows the printer columns; `kubectl explain` the field docs.
    let out = cluster
        .cp
        .kubectl()
        .args(["get", "vts", "-n", NS])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for column in ["READY", "TOKENS", "GENERATION", "NEXT ROTATION", "AGE"] {
        assert!(header.contains(column), "kubectl get vts: {table}");
    }
    assert!(table.contains("main") && table.contains("True"), "{table}");
    let out = cluster
        .cp
        .kubectl()
        .args(["explain", "vts.spec.rotation.gracePeriod"])
        .output()
        .await
        .unwrap();
    let explain = String::from_utf8_lossy(&out.stdout);
    assert!(
        explain.contains("How long a replaced value stays valid"),
        "kubectl explain: {explain}"
    );

    // Both Secrets; the client value's digest is the active one; the user's value is served.
    let service = get_secret(&secrets, "svc-tokens").await.unwrap();
    let client = get_secret(&secrets, "client-tokens").await.unwrap();
    let operator = data(&client)["operator"].clone();
    values.insert(operator.clone());
    assert!(
        operator.starts_with("vx11_") && operator.len() >= 48,
        "generated token shape"
    );
    assert!(
        !data(&client).contains_key("ci"),
        "user tokens never go to the client Secret"
    );
    let file = token_file(&service);
    let active = |file: &vx11_tokenset::TokenFile, name: &str| {
        file.tokens
            .iter()
            .find(|e| e.name == name && e.state == TokenState::Active)
            .map(|e| e.sha256)
    };
    assert_eq!(
        active(&file, "operator"),
        Some(TokenDigest::of(operator.as_bytes()))
    );
    assert_eq!(
        active(&file, "ci"),
        Some(TokenDigest::of(user_value.as_bytes()))
    );
    for s in [&service, &client] {
        let owner = &s
            .metadata
            .owner_references
            .as_ref()
            .expect("ownerReferences")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("Vx11TokenSet", "main", Some(true))
        );
    }
    let status = sets.get("main").await.unwrap().status.unwrap();
    assert_eq!(status.generation, Some(file.generation));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.token_count, 2);
    assert!(
        status
            .tokens
            .iter()
            .all(|t| t.fingerprint.starts_with("sha256:") && t.issued_at.is_some())
    );

    // Rotation on request: new active, old retiring until now + grace, then pruned.
    annotate_rotate(&sets, "main", "first").await;
    let rotated = eventually("operator rotated", SETTLE, || async {
        let client = get_secret(&secrets, "client-tokens").await?;
        let value = data(&client)["operator"].clone();
        if value == operator {
            return Err("client value unchanged".to_owned());
        }
        let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
        if active(&file, "operator") != Some(TokenDigest::of(value.as_bytes())) {
            return Err("service Secret not yet updated".into());
        }
        Ok((value, file))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", controller.logs()));
    let (operator2, file) = rotated;
    values.insert(operator2.clone());
    let entries: Vec<_> = file
        .tokens
        .iter()
        .filter(|e| e.name == "operator")
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[1].sha256, TokenDigest::of(operator.as_bytes()));
    assert_eq!(entries[1].state, TokenState::Retiring);
    assert_eq!(
        entries[1].expires_at,
        entries[0]
            .not_before
            .map(|t| t + chrono::Duration::seconds(2)),
        "expiresAt = rotation time + gracePeriod"
    );
    eventually(
        "retiring value pruned after the grace period",
        SETTLE,
        || async {
            let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
            let n = file.tokens.iter().filter(|e| e.name == "operator").count();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} operator entries"))
            }
        },
    )
    .await
    .unwrap();
    let status = sets.get("main").await.unwrap().status.unwrap();
    assert!(status.last_rotation_time.is_some());

    // secretRef is followed without a resync.
    let user_value2 = "user-token-second-value";
    values.insert(user_value2.into());
    let started = Instant::now();
    put_user_secret(&secrets, "ci-token", "token", user_value2).await;
    eventually(
        "user Secret change reaches the service Secret",
        Duration::from_secs(20),
        || async {
            let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
            if active(&file, "ci") == Some(TokenDigest::of(user_value2.as_bytes())) {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await
    .unwrap();
    eprintln!("secretRef change → service Secret: {:?}", started.elapsed());

    // Missing source: SourceMissing, the other tokens still served.
    secrets
        .delete("ci-token", &DeleteParams::default())
        .await
        .unwrap();
    wait_reason(&sets, "main", "False", "SourceMissing").await;
    let file = token_file(&get_secret(&secrets, "svc-tokens").await.unwrap());
    assert_eq!(
        active(&file, "operator"),
        Some(TokenDigest::of(operator2.as_bytes()))
    );

    // Invalid user token: InvalidSpec, not written, never echoed.
    let invalid = "has spaces in this token value";
    values.insert(invalid.into());
    put_user_secret(&secrets, "ci-token", "token", invalid).await;
    wait_reason(&sets, "main", "False", "InvalidSpec").await;
    let file = token_file(&get_secret(&secrets, "svc-tokens").await.unwrap());
    assert!(
        file.tokens
            .iter()
            .all(|e| e.sha256 != TokenDigest::of(invalid.as_bytes()))
    );
    put_user_secret(&secrets, "ci-token", "token", user_value2).await;
    wait_reason(&sets, "main", "True", "Reconciled").await;

    // Revocation: removing the token from the spec removes it at once.
    let patch = json!({"spec": {"tokens": [{"name": "operator", "generate": {"bytes": 32}}]}});
    sets.patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("ci revoked", SETTLE, || async {
        let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
        if file.tokens.iter().any(|e| e.name == "ci") {
            Err("still there".to_owned())
        } else {
            Ok(())
        }
    })
    .await
    .unwrap();

    // A person's edit of the service Secret is put back.
    let before = token_file(&get_secret(&secrets, "svc-tokens").await.unwrap());
    let tamper =
        json!({"data": {"tokens.json": "e30K", "tokens": "dngxMV9pbmplY3RlZF90b2tlbl92YWx1ZQo="}});
    secrets
        .patch(
            "svc-tokens",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&tamper),
        )
        .await
        .unwrap();
    eventually("service Secret put back", SETTLE, || async {
        let s = get_secret(&secrets, "svc-tokens").await?;
        if data(&s).contains_key("tokens") {
            return Err("injected key still there".to_owned());
        }
        let file = vx11_tokenset::TokenFile::parse(&s.data.as_ref().unwrap()["tokens.json"].0)
            .map_err(|e| e.to_string())?;
        if file.tokens == before.tokens {
            Ok(())
        } else {
            Err("entries differ".into())
        }
    })
    .await
    .unwrap();

    // Deleting the service Secret: rebuilt from the record on the client Secret.
    secrets
        .delete("svc-tokens", &DeleteParams::default())
        .await
        .unwrap();
    eventually("service Secret recreated", SETTLE, || async {
        let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
        if file.tokens == before.tokens {
            Ok(())
        } else {
            Err("entries differ".to_owned())
        }
    })
    .await
    .unwrap();

    // Deleting the client Secret loses the plaintext: a new value is issued, the old digest
    // retires with the grace period (clients may still hold it).
    secrets
        .delete("client-tokens", &DeleteParams::default())
        .await
        .unwrap();
    let operator3 = eventually("client Secret recreated", SETTLE, || async {
        let client = get_secret(&secrets, "client-tokens").await?;
        let value = data(&client).get("operator").cloned().ok_or("no key")?;
        let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
        if active(&file, "operator") == Some(TokenDigest::of(value.as_bytes())) {
            Ok(value)
        } else {
            Err("not yet".to_owned())
        }
    })
    .await
    .unwrap();
    values.insert(operator3);

    // Idle: no writes at all (the Secrets' and the set's resourceVersions stay).
    eventually("pruned after client re-issue", SETTLE, || async {
        let file = token_file(&get_secret(&secrets, "svc-tokens").await?);
        if file.tokens.len() == 1 {
            Ok(())
        } else {
            Err(format!("{} entries", file.tokens.len()))
        }
    })
    .await
    .unwrap();
    let versions = || async {
        (
            resource_version(&get_secret(&secrets, "svc-tokens").await.unwrap()),
            resource_version(&get_secret(&secrets, "client-tokens").await.unwrap()),
            sets.get("main").await.unwrap().metadata.resource_version,
        )
    };
    // Let the last writes' watch events come back and be reconciled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = versions().await;
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        assert_eq!(versions().await, idle, "an idle TokenSet caused a write");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Scheduled rotation on a short period; requeued at the exact time.
    sets.create(
        &PostParams::default(),
        &tokenset(
            "scheduled",
            json!({
                "secretName": "sched-svc",
                "clientSecretName": "sched-client",
                "tokens": [{"name": "app", "generate": {}}],
                "rotation": {"every": "3s", "gracePeriod": "1s"},
            }),
        ),
    )
    .await
    .unwrap();
    let seen = std::sync::Mutex::new(BTreeSet::new());
    eventually("two scheduled rotations", SETTLE, || async {
        let client = get_secret(&secrets, "sched-client").await?;
        let mut seen = seen.lock().unwrap();
        if let Some(v) = data(&client).get("app") {
            seen.insert(v.clone());
        }
        if seen.len() >= 3 {
            Ok(())
        } else {
            Err(format!("{} values so far", seen.len()))
        }
    })
    .await
    .unwrap();
    values.extend(seen.into_inner().unwrap());
    let status = sets.get("scheduled").await.unwrap().status.unwrap();
    let issued = status
        .tokens
        .iter()
        .find(|t| t.state == "active")
        .and_then(|t| t.issued_at)
        .unwrap();
    let next = status.next_rotation_time.unwrap();
    assert!(
        next - issued <= chrono::Duration::seconds(3) && next > issued,
        "nextRotationTime = issuedAt + every"
    );
    assert!(status.last_rotation_time.is_some());

    // A token's expiresAt is written for the services and, once passed, its entries go.
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(4))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    sets.create(
        &PostParams::default(),
        &tokenset(
            "expiring",
            json!({
                "secretName": "exp-svc",
                "clientSecretName": "exp-client",
                "tokens": [{"name": "temp", "generate": {}, "expiresAt": expires}, {"name": "keep", "generate": {}}],
            }),
        ),
    )
    .await
    .unwrap();
    let file = eventually("expiring set written", SETTLE, || async {
        Ok::<_, String>(token_file(&get_secret(&secrets, "exp-svc").await?))
    })
    .await
    .unwrap();
    let temp = file
        .tokens
        .iter()
        .find(|e| e.name == "temp")
        .expect("temp written");
    assert_eq!(
        temp.expires_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        Some(expires.clone())
    );
    values.extend(data(&get_secret(&secrets, "exp-client").await.unwrap()).into_values());
    eventually("expired token removed at its expiresAt", SETTLE, || async {
        let file = token_file(&get_secret(&secrets, "exp-svc").await?);
        let names: Vec<_> = file.tokens.iter().map(|e| e.name.clone()).collect();
        if names == ["keep"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await
    .unwrap();

    // A Secret of the same name that is not the set's is never overwritten; once it is gone,
    // the set is reconciled (the Secret watch maps it by name).
    put_user_secret(&secrets, "taken", "mine", "not-a-token-of-the-set").await;
    sets.create(
        &PostParams::default(),
        &tokenset(
            "conflict",
            json!({
                "secretName": "taken",
                "clientSecretName": "conflict-client",
                "tokens": [{"name": "app", "generate": {}}],
            }),
        ),
    )
    .await
    .unwrap();
    wait_reason(&sets, "conflict", "False", "SecretConflict").await;
    let taken = data(&get_secret(&secrets, "taken").await.unwrap());
    assert_eq!(
        taken.keys().collect::<Vec<_>>(),
        ["mine"],
        "the user's Secret was written"
    );
    secrets
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    wait_reason(&sets, "conflict", "True", "Reconciled").await;

    // Events for what happened.
    let reasons = cluster.event_reasons(NS).await;
    for reason in [
        "SecretConflict",
        "Issued",
        "Rotated",
        "Retired",
        "Revoked",
        "Expired",
        "SourceMissing",
        "InvalidSpec",
    ] {
        assert!(reasons.contains(reason), "no {reason} event in {reasons:?}");
    }

    // Bad specs are refused by the API server.
    crate::cel::assert_bad_specs_refused(&cluster.admin, NS).await;

    // No token value in logs, events, statuses or the service Secret.
    let mut client_now = data(&get_secret(&secrets, "client-tokens").await.unwrap())
        .into_values()
        .collect::<BTreeSet<_>>();
    values.append(&mut client_now);
    assert_no_value_in("controller logs", &controller.logs(), &values);
    assert_no_value_in("events", &cluster.events_text(NS).await, &values);
    let statuses =
        serde_json::to_string(&sets.list(&Default::default()).await.unwrap().items).unwrap();
    assert_no_value_in("TokenSets", &statuses, &values);
    let service =
        serde_json::to_string(&get_secret(&secrets, "svc-tokens").await.unwrap()).unwrap();
    assert_no_value_in("service Secret", &service, &values);
    controller.sigkill();
}
