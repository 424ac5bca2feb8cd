//! Probes and lifecycle for real: kubelet restarts a killed backend while the gateway answers
//! 502/504 and recovers; a rolling update of the gateway under load loses no request.

use std::sync::Arc;
use std::time::Duration;

use vx11_tests::eventually;
use vx11_tests::node_install::wait_pods_ready;

use crate::support::{Load, NS, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_restarted_by_kubelet_and_the_gateway_recovers() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    let token = shared.token().await;
    let backend = shared.pods("operator-backend").await.remove(0);
    let name = backend.metadata.name.clone().unwrap();
    let status = backend
        .status
        .unwrap()
        .container_statuses
        .unwrap()
        .remove(0);
    let restarts = status.restart_count;
    let pid = shared.container_pid(status.container_id.as_deref().unwrap());

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{}/operator/api/health", shared.gateway());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Until it is back, the gateway says the backend is down (502 or 504) or waits for it;
    // never anything else.
    let mut answers = std::collections::BTreeMap::<u16, u32>::new();
    let recovered = eventually(
        "the gateway answers 200 again",
        Duration::from_secs(90),
        || {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let status = http
                    .get(&url)
                    .header("x-vx11-token", &token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())?;
                if status == 200 {
                    Ok(status)
                } else {
                    Err(status.to_string())
                }
            }
        },
    );
    // Sample the answers while waiting (the first sample comes at once).
    let sampling = async {
        for _ in 0..200 {
            if let Ok(r) = http.get(&url).header("x-vx11-token", &token).send().await {
                *answers.entry(r.status().as_u16()).or_default() += 1;
                if r.status() == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (recovered, ()) = tokio::join!(recovered, sampling);
    recovered.unwrap();
    eprintln!("answers while the backend was down: {answers:?}");
    assert!(
        answers.keys().all(|s| matches!(s, 200 | 502 | 504)),
        "unexpected answers: {answers:?}"
    );
    // The gateway retries a refused connection for up to 2 s (connect.rs), so a quick restart
    // may show as slow answers rather than 502s; the restart count below proves the kill.
    let pods = shared.pods("operator-backend").await;
    let now = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        .expect("the same pod (restarted in place, not replaced)");
    let count = now
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .restart_count;
    assert_eq!(count, restarts + 1, "kubelet restarted the container once");
    wait_pods_ready(&shared.cp.client().unwrap(), NS, Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_the_gateway_under_load_loses_no_request() {
    let Some((shared, _turn)) = node().await else {
        return;
    };
    let token = shared.token().await;
    let before: Vec<String> = shared
        .pods("gateway")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let load = Load::start(
        format!("{}/operator/api/health", shared.gateway()),
        4,
        60,
        Arc::new(move || token.clone()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared
        .kubectl(&["-n", NS, "rollout", "restart", "deployment/vx11-gateway"])
        .await;
    shared
        .kubectl(&[
            "-n",
            NS,
            "rollout",
            "status",
            "deployment/vx11-gateway",
            "--timeout=180s",
        ])
        .await;
    // The old pods are gone (their preStop and shutdown are over) before the load stops.
    eventually(
        "the old gateway pods gone",
        Duration::from_secs(120),
        || async {
            let pods = shared.pods("gateway").await;
            let all = shared
                .kubectl(&["-n", NS, "get", "pods", "-o", "name"])
                .await;
            if before.iter().any(|b| all.contains(b.as_str())) {
                Err(format!("still there: {all}"))
            } else {
                Ok(pods.len())
            }
        },
    )
    .await
    .unwrap();
    let (ok, failed, rate, failures) = load.stop().await;
    eprintln!("rolling update under load: {ok} ok, {failed} failed, {rate:.0} requests/s");
    assert_eq!(
        failed, 0,
        "requests lost in the rolling update: {failures:?}"
    );
    assert!(ok > 0);
}
