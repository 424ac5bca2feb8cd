//! Rotation without restart, revocation and a user-supplied token, end to end on a real
//! control plane: the rotation is requested with `kubectl annotate`, reaches the services
//! through kubelet's projection, and a client under load never fails with a valid token.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use vx11_tests::local::{LocalOptions, LocalStack};
use vx11_tests::services::assert_no_value_in;
use vx11_tests::{ControlPlane, eventually};

const NS: &str = "vx11";
const GRACE_SECS: u64 = 15;

async fn kubectl_json(cp: &ControlPlane, args: &[&str]) -> Value {
    let out = cp
        .kubectl()
        .args(args)
        .args(["-o", "json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn file_generation(cp: &ControlPlane) -> u64 {
    kubectl_json(cp, &["-n", NS, "get", "vts", "vx11"]).await["status"]["generation"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until both services serve at least `generation`.
async fn served_everywhere(stack: &LocalStack, generation: u64) {
    for base in [stack.gateway.base_url(), stack.backend.base_url()] {
        eventually(
            &format!("{base} serves generation {generation}"),
            Duration::from_secs(30),
            || {
                let url = format!("{base}/ready");
                async move {
                    let body: Value = reqwest::get(&url)
                        .await
                        .map_err(|e| e.to_string())?
                        .json()
                        .await
                        .map_err(|e| e.to_string())?;
                    match body["generation"].as_u64() {
                        Some(g) if g >= generation => Ok(()),
                        other => Err(format!("generation {other:?}")),
                    }
                }
            },
        )
        .await
        .unwrap();
    }
}

async fn status_of(http: &reqwest::Client, url: &str, token: &str) -> (StatusCode, Value) {
    let r = http
        .get(url)
        .header("x-vx11-token", token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

/// Waits until `token` gets `expected` from `url`, and returns its body.
async fn answers_eventually(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    expected: StatusCode,
    what: &str,
    limit: Duration,
) -> Value {
    eventually(what, limit, || async move {
        let (status, body) = status_of(http, url, token).await;
        if status == expected {
            Ok(body)
        } else {
            Err(format!("{status}"))
        }
    })
    .await
    .unwrap()
}

async fn put_user_secret(secrets: &Api<Secret>, value: &str) {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ci-token", "labels": {"vx11.dev/token-source": "true"}},
        "stringData": {"token": value}
    });
    secrets
        .patch(
            "ci-token",
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_revocation_and_a_user_token() {
    let cp = ControlPlane::builder()
        .with_controller_manager()
        .start()
        .await
        .expect("control plane");
    let admin = cp.client().unwrap();
    let out = cp
        .kubectl()
        .args(["create", "namespace", NS])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let ci_v1 = "ci-user-supplied-token-value-0001";
    put_user_secret(&secrets, ci_v1).await;

    let work = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(work.path());
    options.kubelet_delay = Duration::from_millis(300);
    options.helm_set = vec![
        "tokenSet.tokens[0].name=operator".into(),
        "tokenSet.tokens[0].generate.bytes=32".into(),
        "tokenSet.tokens[1].name=ci".into(),
        "tokenSet.tokens[1].secretRef.name=ci-token".into(),
        "tokenSet.tokens[1].secretRef.key=token".into(),
        "tokenSet.rotation.every=1h".into(),
        format!("tokenSet.rotation.gracePeriod={GRACE_SECS}s"),
    ];
    let mut stack = LocalStack::start(&cp, options, |s| eprintln!("[e2e] {s}"))
        .await
        .expect("vx11 running");
    let pids = (
        stack.gateway.pid(),
        stack.backend.pid(),
        stack.controller.pid(),
    );
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let g = stack.gateway_url();
    let health = format!("{g}/operator/api/health");
    let mut seen_values: BTreeSet<String> = BTreeSet::from([ci_v1.to_string()]);

    let old = stack.client_token(&cp, "operator").await.unwrap();
    seen_values.insert(old.clone());
    assert_eq!(
        status_of(&http, &health, ci_v1).await.0,
        StatusCode::OK,
        "the user-supplied token works"
    );

    // An SSE stream held with the user token for the whole rotation.
    let stream = http
        .get(format!(
            "{g}/operator/api/events/stream?token={ci_v1}&follow=true"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut stream = stream.bytes_stream();

    // Load: four workers back to back with the token the client holds.
    let current = Arc::new(Mutex::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, current, stop, sent, failed) = (
                http.clone(),
                health.clone(),
                current.clone(),
                stop.clone(),
                sent.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let token = current.lock().unwrap().clone();
                    let ok = http
                        .get(&url)
                        .header("x-vx11-token", token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == StatusCode::OK);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Rotate with kubectl annotate.
    let generation_before = file_generation(&cp).await;
    let out = cp
        .kubectl()
        .args([
            "-n",
            NS,
            "annotate",
            "vts/vx11",
            "vx11.dev/rotate=e2e-1",
            "--overwrite",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated_at = Instant::now();
    let new = eventually(
        "a new operator value in the client Secret",
        Duration::from_secs(30),
        || {
            let (stack, cp, old) = (&stack, &cp, old.clone());
            async move {
                let value = stack
                    .client_token(cp, "operator")
                    .await
                    .map_err(|e| e.to_string())?;
                if value != old {
                    Ok(value)
                } else {
                    Err("unchanged".to_string())
                }
            }
        },
    )
    .await
    .unwrap();
    seen_values.insert(new.clone());
    let generation = eventually("a new file generation", Duration::from_secs(30), || {
        let cp = &cp;
        async move {
            let g = file_generation(cp).await;
            if g > generation_before {
                Ok(g)
            } else {
                Err(format!("still {g}"))
            }
        }
    })
    .await
    .unwrap();
    // The client takes the new value once it is projected and served.
    served_everywhere(&stack, generation).await;
    *current.lock().unwrap() = new.clone();
    let (status, _) = status_of(&http, &health, &new).await;
    assert_eq!(status, StatusCode::OK, "new value accepted once projected");
    let (status, _) = status_of(&http, &health, &old).await;
    assert!(rotated_at.elapsed() < Duration::from_secs(GRACE_SECS));
    assert_eq!(
        status,
        StatusCode::OK,
        "old value still accepted during the grace period"
    );

    // After the grace period the old value is refused.
    let refused = answers_eventually(
        &http,
        &health,
        &old,
        StatusCode::UNAUTHORIZED,
        "the old value refused",
        Duration::from_secs(GRACE_SECS + 30),
    )
    .await;
    assert!(matches!(
        refused["error"].as_str(),
        Some("expired_token" | "invalid_token")
    ));
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(GRACE_SECS),
        "refused before the grace period ended"
    );

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    eprintln!("[e2e] {sent} requests, {rate:.0}/s, {failed} failed");
    assert_eq!(failed, 0, "requests with a valid token failed");
    assert!(rate >= 200.0, "the load was only {rate:.0} requests/s");

    // The stream stayed open and still delivers; nobody restarted.
    let marker = "after-rotation-e2e";
    let r = http
        .post(format!("{g}/operator/api/chat"))
        .header("x-vx11-token", &new)
        .json(&json!({"message": marker}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains(marker) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream ended or stalled: {other:?}"),
        }
    }
    assert_eq!(
        (
            stack.gateway.pid(),
            stack.backend.pid(),
            stack.controller.pid()
        ),
        pids
    );
    assert!(stack.gateway.is_running() && stack.backend.is_running());

    // The user-supplied token follows its Secret.
    let ci_v2 = "ci-user-supplied-token-value-0002";
    seen_values.insert(ci_v2.to_string());
    put_user_secret(&secrets, ci_v2).await;
    answers_eventually(
        &http,
        &health,
        ci_v2,
        StatusCode::OK,
        "the new user value accepted",
        Duration::from_secs(30),
    )
    .await;

    // Revocation: removing `ci` from the spec refuses its values once projected.
    let patch = json!({"spec": {"tokens": [{"name": "operator", "generate": {"bytes": 32}}]}});
    let out = cp
        .kubectl()
        .args([
            "-n",
            NS,
            "patch",
            "vts/vx11",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for value in [ci_v1, ci_v2] {
        answers_eventually(
            &http,
            &health,
            value,
            StatusCode::UNAUTHORIZED,
            "the revoked value refused",
            Duration::from_secs(30),
        )
        .await;
    }
    assert_eq!(status_of(&http, &health, &new).await.0, StatusCode::OK);

    // No token value in any log line, event or status written during the scenario.
    let events = cp
        .kubectl()
        .args(["get", "events", "-A", "-o", "json"])
        .output()
        .await
        .unwrap();
    let status = kubectl_json(&cp, &["-n", NS, "get", "vts", "vx11"]).await;
    let everything = format!(
        "{}\n{}\n{}",
        stack.logs(),
        String::from_utf8_lossy(&events.stdout),
        status
    );
    assert!(
        everything.contains("Rotated"),
        "no Rotated event was recorded"
    );
    assert_no_value_in("logs, events or status", &everything, &seen_values);
    stack.gateway.terminate(Duration::from_secs(5));
}
