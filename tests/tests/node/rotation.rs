//! Rotation by `kubectl annotate` under load, with kubelet's own projection of the Secret:
//! no failed request for a client that keeps the old value, no container restarted, the
//! event stream stays open, and the projection delay measured per pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use vx11_tests::eventually;

use crate::support::{Load, NS, Shared, containers, node};

/// The generation a pod's service serves, from its metrics port (which the NetworkPolicy
/// opens to this machine: the node tests install with it as a monitoring peer).
async fn served_generation(http: &reqwest::Client, url: &str) -> Option<u64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("vx11_tokens_generation "))
        .and_then(|value| value.trim().parse().ok())
}

async fn pod_ready_urls(shared: &Shared) -> Vec<(String, String)> {
    let mut urls = Vec::new();
    for component in ["gateway", "operator-backend"] {
        for pod in shared.pods(component).await {
            let ip = pod.status.and_then(|s| s.pod_ip).unwrap();
            urls.push((
                pod.metadata.name.unwrap_or_default(),
                format!("http://{ip}:9090/metrics"),
            ));
        }
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_request_and_restarts_no_container() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    // Compared after the rotation: the same containers with the same restart counts (another
    // test of this binary kills the backend on purpose, so counts need not be 0 here).
    let before = containers(shared).await;
    let old = shared.token().await;
    let http = reqwest::Client::new();
    let generation: u64 =
        shared.kubectl_json(&["-n", NS, "get", "vts", "vx11"]).await["status"]["generation"]
            .as_u64()
            .unwrap();

    let g = shared.gateway();
    let load = {
        let old = old.clone();
        Load::start(
            format!("{g}/operator/api/health"),
            4,
            60,
            Arc::new(move || old.clone()),
        )
    };
    let stream = http
        .get(format!("{g}/operator/api/events/stream?follow=true"))
        .header("x-vx11-token", &old)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(String::new());
    let reader = tokio::spawn(async move {
        let mut body = stream.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            seen_tx.send_modify(|s| s.push_str(&String::from_utf8_lossy(&chunk)));
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let requested = Instant::now();
    shared
        .request_rotation(&format!("node-e2e-{}", std::process::id()))
        .await;
    let new = eventually("a new published value", Duration::from_secs(30), || async {
        let now = shared.token().await;
        if now != old {
            Ok(now)
        } else {
            Err("unchanged")
        }
    })
    .await
    .unwrap();
    // Every pod watched at once: each one's delay is its own.
    let waits = pod_ready_urls(shared).await.into_iter().map(|(pod, url)| {
        let http = http.clone();
        async move {
            eventually(
                &format!("{pod} serves generation > {generation}"),
                Duration::from_secs(120),
                || async {
                    match served_generation(&http, &url).await {
                        Some(g) if g > generation => Ok(()),
                        other => Err(format!("serves {other:?}")),
                    }
                },
            )
            .await
            .unwrap();
            (pod, requested.elapsed())
        }
    });
    let delays = futures::future::join_all(waits).await;
    eprintln!(
        "kubelet's projection (syncFrequency {:?}): rotation request -> pod serves the new generation: {delays:?}",
        crate::support::SYNC_FREQUENCY
    );
    // The new value works through the Service (every pod has it now).
    for _ in 0..20 {
        let r = http
            .get(format!("{g}/operator/api/health"))
            .header("x-vx11-token", &new)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, failed, rate, failures) = load.stop().await;
    eprintln!("load: {ok} ok, {failed} failed, {rate:.0} requests/s");
    assert_eq!(
        failed, 0,
        "requests with the old value failed: {failures:?}"
    );
    assert!(
        rate >= 200.0,
        "the load was {rate:.0} requests/s, not >= 200"
    );

    assert!(
        !reader.is_finished(),
        "the event stream ended during the rotation"
    );
    let seen = seen_rx.borrow_and_update().clone();
    assert!(
        seen.contains("event: tokens"),
        "no tokens event on the stream: {seen}"
    );
    reader.abort();
    assert!(
        !seen.contains(&old) && !seen.contains(&new),
        "a token value on the stream"
    );

    let after = containers(shared).await;
    assert_eq!(before, after, "a container was restarted or replaced");
}
