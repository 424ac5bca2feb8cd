//! Measurements (ignored by default; run with
//! `cargo test -p vx11-controller --release --test control_plane bench -- --ignored --nocapture`):
//! spec change → service Secret updated (p50/p99 over 100 changes), 1 000 TokenSets from a cold
//! start, and the controller's RSS with 1 000 sets.

use std::time::{Duration, Instant};

use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vx11_controller::Vx11TokenSet;
use vx11_tests::eventually;

use crate::support::*;

const NS: &str = "bench";

fn set(name: &str, tokens: &[&str]) -> Vx11TokenSet {
    let tokens: Vec<_> = tokens
        .iter()
        .map(|t| json!({"name": t, "generate": {}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "vx11.dev/v1alpha1",
        "kind": "Vx11TokenSet",
        "metadata": {"name": name},
        "spec": {"secretName": format!("{name}-svc"), "clientSecretName": format!("{name}-client"), "tokens": tokens},
    }))
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "benchmark"]
async fn bench_spec_change_latency_and_cold_start() {
    let cluster = Cluster::start(&[NS]).await;
    let sets = cluster.sets(NS);
    let secrets = cluster.secrets(NS);

    // 1 000 sets created while no controller runs, then a cold start.
    for i in 0..1000 {
        sets.create(&PostParams::default(), &set(&format!("s{i:04}"), &["a"]))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let controller = cluster.controller("bench", &[]);
    eventually("1000 sets Ready", Duration::from_secs(300), || async {
        let list = sets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.conditions.iter().any(|c| c.status == "True"))
            })
            .count();
        if ready == 1000 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    })
    .await
    .unwrap();
    let cold = started.elapsed();
    let rss = rss_kib(controller.child.id());
    eprintln!(
        "BENCH cold start: 1000 TokenSets Ready in {cold:?}; controller RSS {} MiB",
        rss / 1024
    );

    // Spec change → service Secret updated.
    sets.create(&PostParams::default(), &set("latency", &["a"]))
        .await
        .unwrap();
    eventually("latency set", SETTLE, || async {
        get_secret(&secrets, "latency-svc").await.map(|_| ())
    })
    .await
    .unwrap();
    let mut samples = Vec::new();
    for i in 0..100 {
        let tokens: &[&str] = if i % 2 == 0 { &["a", "b"] } else { &["a"] };
        let want = tokens.len();
        let patch = json!({"spec": {"tokens": tokens.iter().map(|t| json!({"name": t, "generate": {}})).collect::<Vec<_>>()}});
        let t0 = Instant::now();
        sets.patch("latency", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        loop {
            let file = token_file(&get_secret(&secrets, "latency-svc").await.unwrap());
            if file.tokens.len() == want {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "change {i} not applied"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t0.elapsed());
    }
    samples.sort();
    eprintln!(
        "BENCH spec change → service Secret: p50 {:?}, p99 {:?}, max {:?} (100 changes)",
        samples[49], samples[98], samples[99]
    );
    eprintln!(
        "BENCH controller RSS after: {} MiB",
        rss_kib(controller.child.id()) / 1024
    );
}

/// Idle over minutes, across the watches' relists (kube's watch timeout is under 5 minutes):
/// no write to the Secrets or the set. `VX11_IDLE_SECS` sets the length (default 360).
#[tokio::test]
#[ignore = "takes minutes"]
async fn idle_for_minutes_causes_no_writes() {
    let cluster = Cluster::start(&[NS]).await;
    let sets = cluster.sets(NS);
    let secrets = cluster.secrets(NS);
    let controller = cluster.controller("idle", &[]);
    put_user_secret(&secrets, "user", "token", "user-token-0123456789ab").await;
    let mut spec = set("idle", &["a"]);
    spec.spec.rotation =
        serde_json::from_value(json!({"every": "24h", "gracePeriod": "10m"})).unwrap();
    spec.spec.tokens.push(
        serde_json::from_value(json!({"name": "u", "secretRef": {"name": "user", "key": "token"}}))
            .unwrap(),
    );
    sets.create(&PostParams::default(), &spec).await.unwrap();
    let versions = || async {
        (
            get_secret(&secrets, "idle-svc")
                .await
                .map(|s| resource_version(&s)),
            get_secret(&secrets, "idle-client")
                .await
                .map(|s| resource_version(&s)),
            sets.get("idle")
                .await
                .map(|s| s.metadata.resource_version)
                .map_err(|e| e.to_string()),
        )
    };
    eventually("Ready", SETTLE, || async {
        let status = sets.get("idle").await.map_err(|e| e.to_string())?.status;
        if status.is_some_and(|s| s.conditions.iter().any(|c| c.status == "True")) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = versions().await;
    let seconds: u64 = std::env::var("VX11_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(360);
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        assert_eq!(
            versions().await,
            idle,
            "a write while idle:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    eprintln!("BENCH idle for {seconds}s: resourceVersions unchanged");
}
