//! The real `vx11-gateway` and `vx11-operator-backend` binaries on loopback, with a token
//! directory updated exactly as kubelet updates a Secret volume: the seed's five cases,
//! rotation without restart under load, error answers, 1 000 streams, no token in any log.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vx11_tests::abuse::project_active_tokens;
use vx11_tests::eventually;
use vx11_tests::services::{
    ServiceKind, ServiceProcess, assert_no_value_in, assert_query_tokens_redacted,
};
use vx11_tokenset::TokenValue;

/// A token directory, a backend and a gateway in front of it.
struct Stack {
    tokens_dir: std::path::PathBuf,
    logs: tempfile::TempDir,
    backend: ServiceProcess,
    gateway: ServiceProcess,
    http: reqwest::Client,
    generation: u64,
}

impl Stack {
    fn start(tokens: &[(&str, &TokenValue)]) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let tokens_dir = logs.path().join("tokens");
        project(&tokens_dir, 1, tokens);
        let mut env = BTreeMap::from([
            (
                "VX11_TOKENS_DIR".to_string(),
                tokens_dir.display().to_string(),
            ),
            ("VX11_TOKENS_POLL_INTERVAL".to_string(), "1s".to_string()),
        ]);
        let backend =
            ServiceProcess::start(ServiceKind::OperatorBackend, &env, logs.path()).unwrap();
        env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
        env.insert("VX11_MODULES".into(), "switch=http://127.0.0.1:9".into());
        env.insert("VX11_UPSTREAM_TIMEOUT".into(), "2s".into());
        let gateway = ServiceProcess::start(ServiceKind::Gateway, &env, logs.path()).unwrap();
        Self {
            tokens_dir,
            logs,
            backend,
            gateway,
            http: client(),
            generation: 1,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base_url())
    }

    /// Projects a new token file and waits until both services serve it.
    async fn rotate_to(&mut self, tokens: &[(&str, &TokenValue)]) {
        self.generation += 1;
        project(&self.tokens_dir, self.generation, tokens);
        for service in [&self.gateway, &self.backend] {
            let url = format!("{}/ready", service.base_url());
            let generation = self.generation;
            let http = self.http.clone();
            let served = eventually("the new generation served", Duration::from_secs(5), || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let body: Value = match http.get(&url).send().await {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(error) => return Err(error.to_string()),
                    };
                    held(body["generation"] == generation)
                }
            })
            .await
            .is_ok();
            assert!(
                served,
                "{:?} did not serve generation {generation}",
                service.kind
            );
        }
    }

    fn all_logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        text
    }

    /// No token value, and no `token=` value, in anything either service logged.
    fn assert_logs_clean(&self, values: &[&TokenValue]) {
        let logs = self.all_logs();
        assert!(!logs.is_empty(), "the services logged nothing");
        assert_no_value_in(
            "the services' logs",
            &logs,
            values.iter().map(|v| v.expose()),
        );
        assert_query_tokens_redacted("the services' logs", &logs);
    }
}

/// A condition for [`eventually`]: held, or not yet.
fn held(condition: bool) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err("not yet".to_owned())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

fn project(dir: &std::path::Path, generation: u64, tokens: &[(&str, &TokenValue)]) {
    project_active_tokens(dir, generation, tokens).unwrap();
}

fn token() -> TokenValue {
    TokenValue::generate(32).unwrap()
}

/// An open SSE response, read event by event.
struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl EventStream {
    /// Opens it the way EventSource does, with `Accept: text/event-stream`: through the
    /// gateway, such streams go to the backend over h2c (the e2e tests open theirs without
    /// it, over HTTP/1.1).
    async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "stream refused");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// Whether the stream's body ends (cleanly or not) within `limit`, rather than stalling.
    async fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads until an event whose text contains `needle`; `None` if the stream ends or
    /// `limit` passes first.
    async fn until(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if event.contains(needle) {
                    return Some(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }
}

async fn chat(stack: &Stack, token: &TokenValue, message: &str) -> (StatusCode, Value) {
    let response = stack
        .http
        .post(stack.url("/operator/api/chat"))
        .header("x-vx11-token", token.expose())
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_five_cases_through_the_gateway() {
    let operator = token();
    let stack = Stack::start(&[("operator", &operator)]);

    // 1. /health without a token.
    let response = stack.http.get(stack.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    // 2. /operator/api/health with the header.
    let response = stack
        .http
        .get(stack.url("/operator/api/health"))
        .header("x-vx11-token", operator.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // 3. chat with the header.
    let (status, body) = chat(&stack, &operator, "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("id").is_some(), "{body}");

    // 4. the stream with ?token= opens and delivers a chat posted afterwards.
    let mut by_query = EventStream::open(stack.http.get(stack.url(&format!(
        "/operator/api/events/stream?token={}&follow=true",
        operator.expose()
    ))))
    .await;
    // 5. the same stream with the header token.
    let mut by_header = EventStream::open(
        stack
            .http
            .get(stack.url("/operator/api/events/stream?follow=true"))
            .header("x-vx11-token", operator.expose()),
    )
    .await;
    let (status, _) = chat(&stack, &operator, "after-open-1").await;
    assert_eq!(status, StatusCode::OK);
    for stream in [&mut by_query, &mut by_header] {
        assert!(
            stream
                .until("after-open-1", Duration::from_secs(5))
                .await
                .is_some(),
            "the chat did not arrive on the stream"
        );
    }
    stack.assert_logs_clean(&[&operator]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_without_restart_under_load() {
    let old = token();
    let new = token();
    let watcher = token(); // holds the stream open through the rotation
    let mut stack = Stack::start(&[("operator", &old), ("watcher", &watcher)]);
    let pids = (stack.gateway.pid(), stack.backend.pid());

    let mut stream = EventStream::open(stack.http.get(stack.url(&format!(
        "/operator/api/events/stream?token={}&follow=true",
        watcher.expose()
    ))))
    .await;

    // The client: requests back to back with whichever token it currently holds.
    let current = Arc::new(std::sync::Mutex::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (http, url) = (stack.http.clone(), stack.url("/operator/api/health"));
        let (current, stop, sent, failed) =
            (current.clone(), stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let token = current.lock().unwrap().expose().to_owned();
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
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Overlap: both values valid.
    stack
        .rotate_to(&[
            ("operator", &old),
            ("operator", &new),
            ("watcher", &watcher),
        ])
        .await;
    for value in [&old, &new] {
        let (status, _) = chat(&stack, value, "during-overlap").await;
        assert_eq!(status, StatusCode::OK);
    }
    *current.lock().unwrap() = new.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The old value removed: refused from then on.
    stack
        .rotate_to(&[("operator", &new), ("watcher", &watcher)])
        .await;
    let (status, body) = chat(&stack, &old, "with-the-old-token").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 100, "the load loop sent only {sent} requests");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests with a valid token failed (of {sent})"
    );

    // The stream stayed open through it all and still delivers.
    let (status, _) = chat(&stack, &new, "after-rotation").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        stream
            .until("after-rotation", Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(stack.gateway.is_running() && stack.backend.is_running());
    assert_eq!((stack.gateway.pid(), stack.backend.pid()), pids);
    stack.assert_logs_clean(&[&old, &new, &watcher]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_through_the_real_binaries() {
    let operator = token();
    let mut stack = Stack::start(&[("operator", &operator)]);
    let (http, base) = (stack.http.clone(), stack.gateway.base_url());
    let get = |path: &str| http.get(format!("{base}{path}"));
    let code = |body: &Value| body["error"].as_str().unwrap_or_default().to_owned();

    let r = get("/operator/api/health").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(code(&r.json().await.unwrap()), "missing_token");

    let r = get("/operator/api/health")
        .header("x-vx11-token", "vx11-wrong-token-value-000")
        .send()
        .await
        .unwrap();
    assert_eq!(code(&r.json().await.unwrap()), "invalid_token");

    let r = get("/operator/api/health?token=bad%zzpercent")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = get("/switch/api/anything")
        .header("x-vx11-token", operator.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "OFF_BY_POLICY");

    let r = get("/nowhere/api/x")
        .header("x-vx11-token", operator.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Bad JSON reaches the backend unchanged and comes back as its 400.
    let r = stack
        .http
        .post(stack.url("/operator/api/chat"))
        .header("x-vx11-token", operator.expose())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = stack
        .http
        .post(stack.url("/operator/api/chat"))
        .header("x-vx11-token", operator.expose())
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // 10 KiB of garbage in a header: refused cleanly, and the gateway keeps serving.
    let garbage = "x".repeat(10 * 1024);
    let r = get("/operator/api/health")
        .header("x-garbage", &garbage)
        .header("x-vx11-token", &garbage)
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let r = get("/operator/api/health")
        .header("x-vx11-token", operator.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Backend gone: 502 (connection refused; no wait for the connect timeout).
    stack.backend.kill();
    let r = get("/operator/api/health")
        .header("x-vx11-token", operator.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(code(&r.json().await.unwrap()), "backend_unavailable");
    stack.assert_logs_clean(&[&operator]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_get_one_broadcast_and_leave_nothing_behind() {
    const STREAMS: usize = 1000;
    let operator = token();
    let stack = Stack::start(&[("operator", &operator)]);
    let url = stack.url(&format!(
        "/operator/api/events/stream?token={}&follow=true",
        operator.expose()
    ));
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let mut streams = Vec::with_capacity(STREAMS);
    for chunk in 0..STREAMS / 100 {
        let opened =
            futures::future::join_all((0..100).map(|_| EventStream::open(http.get(&url)))).await;
        streams.extend(opened);
        assert_eq!(streams.len(), (chunk + 1) * 100);
    }
    let open = open_streams(&stack.backend).await;
    assert_eq!(open, STREAMS as u64, "backend open streams");

    let (status, _) = chat(&stack, &operator, "broadcast-to-all").await;
    assert_eq!(status, StatusCode::OK);
    let received = futures::future::join_all(
        streams
            .iter_mut()
            .map(|s| s.until("broadcast-to-all", Duration::from_secs(20))),
    )
    .await;
    assert_eq!(received.iter().filter(|r| r.is_some()).count(), STREAMS);

    drop(streams);
    let released = eventually(
        "open streams back to 0",
        Duration::from_secs(10),
        || async { held(open_streams(&stack.backend).await == 0) },
    )
    .await
    .is_ok();
    assert!(
        released,
        "backend still counts {} open streams",
        open_streams(&stack.backend).await
    );
    stack.assert_logs_clean(&[&operator]);
}

/// The backend's `vx11_backend_open_streams` gauge.
async fn open_streams(backend: &ServiceProcess) -> u64 {
    let text = reqwest::get(backend.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("vx11_backend_open_streams"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(u64::MAX, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly_and_the_gateway_exits() {
    let operator = token();
    let mut stack = Stack::start(&[("operator", &operator)]);
    let mut stream = EventStream::open(stack.http.get(stack.url(&format!(
        "/operator/api/events/stream?token={}&follow=true",
        operator.expose()
    ))))
    .await;
    let (status, _) = chat(&stack, &operator, "before-sigterm").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        stream
            .until("before-sigterm", Duration::from_secs(5))
            .await
            .is_some()
    );

    let code = stack.gateway.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "the gateway did not exit cleanly within 5 s");
    assert!(
        stream.ends_within(Duration::from_secs(5)).await,
        "the stream did not end"
    );
    let logs = stack.gateway.logs();
    assert!(logs.contains("SIGTERM"), "no shutdown in the gateway's log");
    stack.assert_logs_clean(&[&operator]);
}
