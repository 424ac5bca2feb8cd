//! The gateway's workers on CPUs of their own (`VX11_WORKER_CPUS=auto`), the real binary
//! on loopback: each worker kept on its CPU, and a keep-alive connection served by the
//! worker of the CPU its client sends from, following the client when it moves.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use reqwest::StatusCode;
use vx11_tests::abuse::project_active_tokens;
use vx11_tests::services::{ServiceKind, ServiceProcess};
use vx11_tokenset::TokenValue;

/// reqwest's client with the timeouts of these tests.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The CPUs this test process may run on, as `/proc/self/status` lists them.
fn allowed_cpus_of(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    list.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((from, to)) => (from.parse().unwrap()..=to.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_cpus_of_their_own_stay_there_and_serve() {
    let allowed = allowed_cpus_of(&std::fs::read_to_string("/proc/self/status").unwrap());
    if allowed.len() < 2 {
        eprintln!("skipped: two workers need two CPUs, this test may run on {allowed:?}");
        return;
    }
    let workers = 2;
    let operator = TokenValue::generate(32).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let tokens_dir = logs.path().join("tokens");
    project_active_tokens(&tokens_dir, 1, &[("operator", &operator)]).unwrap();
    let mut env = BTreeMap::from([(
        "VX11_TOKENS_DIR".to_string(),
        tokens_dir.display().to_string(),
    )]);
    let backend = ServiceProcess::start(ServiceKind::OperatorBackend, &env, logs.path()).unwrap();
    env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
    env.insert("VX11_WORKER_CPUS".into(), "auto".into());

    // More workers than CPUs: a clear error, nothing served.
    env.insert("VX11_WORKERS".into(), (allowed.len() + 1).to_string());
    let refused = ServiceProcess::start(ServiceKind::Gateway, &env, logs.path()).unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("VX11_WORKER_CPUS=auto")
            && message.contains("set VX11_WORKERS to at most"),
        "{message}"
    );

    env.insert("VX11_WORKERS".into(), workers.to_string());
    let gateway = ServiceProcess::start(ServiceKind::Gateway, &env, logs.path()).unwrap();
    let http = http();
    for _ in 0..20 {
        let response = http
            .get(format!("{}/operator/api/health", gateway.base_url()))
            .header("x-vx11-token", operator.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let expected: BTreeMap<usize, Vec<usize>> =
        (0..workers).map(|i| (i, vec![allowed[i]])).collect();
    assert_eq!(
        worker_cpus(gateway.pid()),
        expected,
        "each worker on the next CPU of its own"
    );
    let listening = gateway
        .logs()
        .lines()
        .find(|line| line.contains("vx11-gateway listening"))
        .unwrap()
        .to_owned();
    let cpus = allowed[..workers]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        listening.contains(&format!("\"worker_cpus\":\"{cpus}\"")),
        "{listening}"
    );
    drop(gateway);

    // One worker has no other to hand connections to: it is not kept on a CPU.
    env.insert("VX11_WORKERS".into(), "1".into());
    let single = ServiceProcess::start(ServiceKind::Gateway, &env, logs.path()).unwrap();
    assert_eq!(
        worker_cpus(single.pid()),
        BTreeMap::from([(0, allowed.clone())]),
        "a single worker runs on any allowed CPU"
    );
}

/// The `/proc` directory of each `vx11-worker-<i>` thread of `pid`, by `i`.
fn worker_tasks(pid: u32) -> BTreeMap<usize, std::path::PathBuf> {
    let mut tasks = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        if let Some(index) = name.trim().strip_prefix("vx11-worker-") {
            tasks.insert(index.parse().unwrap(), task);
        }
    }
    tasks
}

/// The CPUs each `vx11-worker-<i>` thread of `pid` may run on, by `i`.
fn worker_cpus(pid: u32) -> BTreeMap<usize, Vec<usize>> {
    worker_tasks(pid)
        .into_iter()
        .map(|(index, task)| {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            (index, allowed_cpus_of(&status))
        })
        .collect()
}

/// A backend and a gateway with two workers on CPUs of their own; `None` (the test is
/// skipped, and says so) on a machine with fewer than two CPUs for this process.
fn two_pinned_workers(
    operator: &TokenValue,
    logs: &std::path::Path,
) -> Option<(Vec<usize>, ServiceProcess, ServiceProcess)> {
    let allowed = allowed_cpus_of(&std::fs::read_to_string("/proc/self/status").unwrap());
    if allowed.len() < 2 {
        eprintln!("skipped: this process may run on one CPU only ({allowed:?})");
        return None;
    }
    let tokens_dir = logs.join("tokens");
    project_active_tokens(&tokens_dir, 1, &[("operator", operator)]).unwrap();
    let mut env = BTreeMap::from([(
        "VX11_TOKENS_DIR".to_string(),
        tokens_dir.display().to_string(),
    )]);
    let backend = ServiceProcess::start(ServiceKind::OperatorBackend, &env, logs).unwrap();
    env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
    env.insert("VX11_WORKER_CPUS".into(), "auto".into());
    env.insert("VX11_WORKERS".into(), "2".into());
    let gateway = ServiceProcess::start(ServiceKind::Gateway, &env, logs).unwrap();
    Some((allowed, backend, gateway))
}

/// Keeps the calling thread on `cpu`.
fn run_on(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// Sends `count` requests one after another on `stream`, each answered 200 in full.
fn requests(stream: &mut std::net::TcpStream, operator: &TokenValue, count: usize) {
    let request = format!(
        "GET /operator/api/health HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {}\r\n\r\n",
        operator.expose()
    );
    for _ in 0..count {
        stream.write_all(request.as_bytes()).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let answered = loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .unwrap_or_else(|| panic!("no content-length in {head}"))
                .trim()
                .parse()
                .unwrap();
            if seen.len() >= end + 4 + length {
                assert_eq!(seen.len(), end + 4 + length, "more than one answer");
                break head;
            }
        };
        assert!(answered.starts_with("http/1.1 200"), "{answered}");
    }
}

/// Nanoseconds each `vx11-worker-i` thread of `pid` has run so far, by `i`.
fn worker_run_times(pid: u32) -> BTreeMap<usize, u64> {
    worker_tasks(pid)
        .into_iter()
        .map(|(index, task)| {
            let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap();
            let ran = schedstat
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (index, ran)
        })
        .collect()
}

/// The value of the line of `metrics` that starts with `series`.
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.split_whitespace().last())
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_follows_its_client_to_the_worker_of_its_cpu() {
    let operator = TokenValue::generate(32).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let Some((allowed, _backend, gateway)) = two_pinned_workers(&operator, logs.path()) else {
        return;
    };
    let addr = gateway.base_url().trim_start_matches("http://").to_owned();
    let pid = gateway.pid();
    let metrics_url = gateway.metrics_url();
    let scrape = || async {
        http()
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let moved = r#"vx11_connections_moved_total{listener="api"}"#;
    let open = r#"vx11_connections_open{listener="api"}"#;

    // Made from the first CPU: the first worker's connection.
    let (first, second) = (allowed[0], allowed[1]);
    let mut stream = tokio::task::spawn_blocking(move || {
        run_on(first);
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        requests(&mut stream, &operator, 100);
        (stream, operator)
    })
    .await
    .unwrap();
    assert_eq!(metric(&scrape().await, moved), 0.0, "moved while it stayed");

    // The client sends from the other CPU now: within a few answers the connection is the
    // second worker's, which does the work from then on; nothing is lost on the way.
    for (index, cpu) in [(1, second), (0, first)] {
        let before = worker_run_times(pid);
        stream = tokio::task::spawn_blocking(move || {
            let (mut stream, operator) = stream;
            run_on(cpu);
            requests(&mut stream, &operator, 2000);
            (stream, operator)
        })
        .await
        .unwrap();
        let after = worker_run_times(pid);
        let ran = |i: usize| after[&i] - before[&i];
        assert!(
            ran(index) > 2 * ran(1 - index),
            "worker {index} (CPU {cpu}) ran {} ns, worker {} ran {} ns",
            ran(index),
            1 - index,
            ran(1 - index)
        );
        let metrics = scrape().await;
        assert_eq!(metric(&metrics, moved), (2 - index) as f64, "{metrics}");
        assert_eq!(metric(&metrics, open), 1.0, "counted once, wherever it is");
    }
    drop(stream);
    let logs = gateway.logs();
    assert!(
        !logs.contains("ERROR") && !logs.contains("\"level\":\"ERROR\""),
        "{logs}"
    );
}
