//! The real binary on loopback, driven over HTTP: every endpoint, the event stream (SSE)
//! with its replay, resume, keep-alive, revocation and expiry, the release of streams,
//! SIGTERM, and logs that never show a token.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use support::{Backend, SseItem, SseReader, TestToken, client, project_tokens};
use vx11_tests::eventually;

const WAIT: Duration = Duration::from_secs(5);

async fn post_chat(
    client: &reqwest::Client,
    backend: &Backend,
    token: &TestToken,
    message: &str,
) -> u64 {
    let response = client
        .post(backend.url("/operator/api/chat"))
        .header("X-VX11-Token", &token.value)
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["receivedAt"].is_string(), "{body}");
    body["id"].as_u64().unwrap()
}

async fn open_stream(request: reqwest::RequestBuilder) -> SseReader {
    SseReader::new(request.send().await.unwrap())
}

#[test]
fn help_lists_settings_and_bad_config_is_refused() {
    let help = Command::new(support::BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for var in [
        "VX11_OPERATOR_BACKEND_ADDR",
        "VX11_TOKENS_DIR",
        "VX11_POLICY_MODE",
        "VX11_METRICS_ADDR",
        "RUST_LOG",
        "VX11_EVENT_HISTORY",
        "VX11_SSE_KEEP_ALIVE",
        "VX11_TOKENS_POLL_INTERVAL",
        "VX11_SHUTDOWN_GRACE",
    ] {
        assert!(text.contains(var), "--help names {var}");
    }

    for (var, value) in [
        ("VX11_POLICY_MODE", "everything"),
        ("VX11_OPERATOR_BACKEND_ADDR", "not-an-address"),
        ("VX11_SSE_KEEP_ALIVE", "0s"),
        ("VX11_OPERATOR_TOKEN", "abc"),
    ] {
        let out = Command::new(support::BIN)
            .env_clear()
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} is refused");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("Invalid configuration: "), "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

#[tokio::test]
async fn health_with_a_header_token() {
    let operator = TestToken::new("operator");
    let backend = Backend::start(&[&operator], &[("VX11_POLICY_MODE", "full")]).await;
    let client = client();

    let health: Value = client
        .get(backend.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let ready = client.get(backend.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    for request in [
        client
            .get(backend.url("/operator/api/health"))
            .header("X-VX11-Token", &operator.value),
        client
            .get(backend.url("/operator/api/health"))
            .bearer_auth(&operator.value),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["mode"], "full");
        assert_eq!(body["generation"], 1);
        assert_eq!(body["tokens"], 1);
        assert_eq!(body["caller"]["fingerprint"], operator.fingerprint());
        assert!(
            body["loadedAt"].is_string() && body["lastError"].is_null(),
            "{body}"
        );
        assert!(body["openStreams"].is_number());
    }
    backend.assert_logs_clean();
}

#[tokio::test]
async fn a_chat_reaches_streams_opened_before_it() {
    let operator = TestToken::new("operator");
    let backend = Backend::start(&[&operator], &[]).await;
    let client = client();

    let by_query = client.get(backend.url(&format!(
        "/operator/api/events/stream?token={}&follow=true",
        operator.value
    )));
    let by_header = client
        .get(backend.url("/operator/api/events/stream"))
        .header("X-VX11-Token", &operator.value);
    let mut streams = vec![open_stream(by_query).await, open_stream(by_header).await];

    let id = post_chat(&client, &backend, &operator, "hello").await;
    for stream in &mut streams {
        let event = stream
            .find(WAIT, "chat", |data| data["message"] == "hello")
            .await;
        assert_eq!(
            event.id(),
            Some(id),
            "the event carries the id chat answered"
        );
        let data = event.json();
        assert_eq!(data["from"]["fingerprint"], operator.fingerprint());
    }
    backend.assert_logs_clean();
}

#[tokio::test]
async fn replay_ends_and_resume_starts_after_the_last_event_id() {
    let operator = TestToken::new("operator");
    let backend = Backend::start(&[&operator], &[]).await;
    let client = client();
    let mut ids = Vec::new();
    for message in ["one", "two", "three"] {
        ids.push(post_chat(&client, &backend, &operator, message).await);
    }

    // `/events` replays by default and ends by itself.
    let request =
        client.get(backend.url(&format!("/operator/api/events?token={}", operator.value)));
    let events = open_stream(request).await.collect(WAIT).await;
    let chats: Vec<_> = events.iter().filter(|e| e.kind() == "chat").collect();
    assert_eq!(
        chats.iter().map(|e| e.id().unwrap()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        events[0].kind(),
        "tokens",
        "the token set loaded at start is in the history"
    );
    let ids_in_order: Vec<_> = events.iter().map(|e| e.id().unwrap()).collect();
    assert!(
        ids_in_order.windows(2).all(|w| w[0] < w[1]),
        "{ids_in_order:?}"
    );

    // The stream route with follow=false too.
    let request = client
        .get(backend.url("/operator/api/events/stream?follow=false"))
        .header("X-VX11-Token", &operator.value);
    assert_eq!(
        open_stream(request).await.collect(WAIT).await.len(),
        events.len()
    );

    // Resume by header (what EventSource sends) and by query.
    let by_header = client
        .get(backend.url("/operator/api/events"))
        .header("X-VX11-Token", &operator.value)
        .header("Last-Event-ID", ids[0].to_string());
    let by_query = client.get(backend.url(&format!(
        "/operator/api/events?token={}&lastEventId={}",
        operator.value, ids[0]
    )));
    for request in [by_header, by_query] {
        let resumed = open_stream(request).await.collect(WAIT).await;
        let resumed_ids: Vec<_> = resumed.iter().map(|e| e.id().unwrap()).collect();
        assert_eq!(resumed_ids, &ids[1..]);
    }

    // A following stream resumed after the last event waits for the next one.
    let request = client
        .get(backend.url("/operator/api/events/stream"))
        .header("X-VX11-Token", &operator.value)
        .header("Last-Event-ID", ids[2].to_string());
    let mut stream = open_stream(request).await;
    let next = post_chat(&client, &backend, &operator, "four").await;
    assert_eq!(stream.next_event(WAIT).await.unwrap().id(), Some(next));
    backend.assert_logs_clean();
}

#[tokio::test]
async fn keep_alive_comments_arrive_at_the_configured_interval() {
    let operator = TestToken::new("operator");
    let backend = Backend::start(&[&operator], &[("VX11_SSE_KEEP_ALIVE", "200ms")]).await;
    let client = client();
    let request = client
        .get(backend.url("/operator/api/events/stream"))
        .header("X-VX11-Token", &operator.value);
    let mut stream = open_stream(request).await;
    let mut comments = 0;
    let started = Instant::now();
    while comments < 2 {
        if let SseItem::Comment(text) = stream.next(Duration::from_secs(2)).await.unwrap() {
            assert_eq!(text, "keep-alive");
            comments += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "two keep-alives at 200 ms"
    );
    backend.assert_logs_clean();
}

#[tokio::test]
async fn client_errors_are_json_and_the_service_keeps_serving() {
    let operator = TestToken::new("operator");
    let expired = TestToken::new("old").expiring_at(Utc::now() - chrono::Duration::minutes(1));
    let backend = Backend::start(&[&operator, &expired], &[]).await;
    let client = client();
    let chat = || {
        client
            .post(backend.url("/operator/api/chat"))
            .header("X-VX11-Token", &operator.value)
            .header("Content-Type", "application/json")
    };
    let cases = [
        (chat().body("{\"message\": "), 400, "invalid_json"),
        (chat().body("{}"), 422, "missing_message"),
        (chat().body(r#"{"message": ""}"#), 422, "empty_message"),
        (
            chat().json(&json!({"message": "x".repeat(16 * 1024 + 1)})),
            413,
            "message_too_large",
        ),
        (
            chat().body(vec![b' '; 1024 * 1024]),
            413,
            "message_too_large",
        ),
        (
            client
                .post(backend.url("/operator/api/chat"))
                .header("X-VX11-Token", &operator.value)
                .header("Content-Type", "text/plain")
                .body("hi"),
            415,
            "unsupported_media_type",
        ),
        (
            client.get(backend.url("/operator/api/health")),
            401,
            "missing_token",
        ),
        (
            client
                .get(backend.url("/operator/api/health"))
                .header("X-VX11-Token", "vx11_not_a_member_token"),
            401,
            "invalid_token",
        ),
        (
            client
                .get(backend.url("/operator/api/events/stream"))
                .header("X-VX11-Token", &expired.value),
            401,
            "expired_token",
        ),
        (
            client.get(backend.url("/operator/api/events?token=%zz")),
            400,
            "malformed_token",
        ),
        (
            client
                .get(backend.url("/operator/api/events?lastEventId=x"))
                .header("X-VX11-Token", &operator.value),
            400,
            "invalid_last_event_id",
        ),
        (
            client
                .get(backend.url("/operator/api/nothing"))
                .header("X-VX11-Token", &operator.value),
            404,
            "not_found",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        if status == 401 {
            assert!(
                response.headers().contains_key("www-authenticate"),
                "{code}"
            );
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        let detail = body.to_string();
        assert!(!detail.contains(&operator.value) && !detail.contains(&expired.value));
    }
    // Exactly 16 KiB is fine.
    let response = chat()
        .json(&json!({"message": "x".repeat(16 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let health = client.get(backend.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    backend.assert_logs_clean();
}

#[tokio::test]
async fn a_revoked_token_gets_a_final_auth_event_within_a_second() {
    let operator = TestToken::new("operator");
    let keeper = TestToken::new("keeper");
    let backend = Backend::start(&[&operator, &keeper], &[]).await;
    let client = client();
    let mut revoked = open_stream(client.get(backend.url(&format!(
        "/operator/api/events/stream?token={}",
        operator.value
    ))))
    .await;
    let mut kept = open_stream(
        client
            .get(backend.url("/operator/api/events/stream"))
            .header("X-VX11-Token", &keeper.value),
    )
    .await;
    // Both have read their replay: the token set loaded at start.
    revoked.find(WAIT, "tokens", |_| true).await;
    kept.find(WAIT, "tokens", |_| true).await;

    project_tokens(&backend.tokens_dir, 2, &[&keeper]);
    let reloaded = Instant::now();
    let auth = revoked.find(WAIT, "auth", |_| true).await;
    let data = auth.json();
    assert_eq!(data["error"], "token_revoked");
    assert_eq!(data["fingerprint"], operator.fingerprint());
    assert_eq!(auth.id(), None, "the auth event is not in the history");
    assert_eq!(revoked.next(WAIT).await, None, "then the stream ends");
    let closed_after = reloaded.elapsed();
    eprintln!("revoked stream closed {closed_after:?} after the kubelet-style update");
    assert!(
        closed_after < Duration::from_secs(1),
        "closed {closed_after:?} after the reload"
    );

    // The other stream stays open and hears of the new set: names and fingerprints only.
    let tokens = kept
        .find(WAIT, "tokens", |data| data["generation"] == 2)
        .await;
    let data = tokens.json();
    assert_eq!(data["count"], 1);
    assert_eq!(data["tokens"][0]["name"], "keeper");
    assert_eq!(data["tokens"][0]["fingerprint"], keeper.fingerprint());
    assert!(!data.to_string().contains(&keeper.value));
    let id = post_chat(&client, &backend, &keeper, "after the rotation").await;
    assert_eq!(kept.find(WAIT, "chat", |_| true).await.id(), Some(id));

    // The revoked token is refused for new requests too.
    let refused = client
        .get(backend.url("/operator/api/health"))
        .header("X-VX11-Token", &operator.value)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    backend.assert_logs_clean();
}

#[tokio::test]
async fn an_expiring_token_gets_a_final_auth_event_at_its_expiry() {
    let expires_at = Utc::now() + chrono::Duration::seconds(4);
    let operator = TestToken::new("operator").expiring_at(expires_at);
    let backend = Backend::start(&[&operator], &[]).await;
    let client = client();
    let mut stream = open_stream(client.get(backend.url(&format!(
        "/operator/api/events/stream?token={}",
        operator.value
    ))))
    .await;
    let auth = stream.find(Duration::from_secs(10), "auth", |_| true).await;
    let at = Utc::now();
    assert_eq!(auth.json()["error"], "expired_token");
    assert_eq!(stream.next(WAIT).await, None, "then the stream ends");
    let late = at - expires_at;
    eprintln!("expiring stream closed {late} after expiresAt");
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "closed {late} after the expiry"
    );
    backend.assert_logs_clean();
}

#[tokio::test]
async fn streams_are_released_when_their_clients_disconnect() {
    const STREAMS: usize = 200;
    let operator = TestToken::new("operator");
    let backend = Backend::start(&[&operator], &[]).await;
    let client = client();
    let rss_before = backend.rss_kib();

    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let request = client
            .get(backend.url("/operator/api/events/stream"))
            .header("X-VX11-Token", &operator.value);
        streams.push(open_stream(request).await);
    }
    let open = eventually("200 open streams in the metric", WAIT, || async {
        backend
            .metric(&client, "vx11_backend_open_streams")
            .await
            .filter(|n| *n == STREAMS as f64)
            .ok_or("not yet")
    })
    .await
    .unwrap();
    assert_eq!(open, STREAMS as f64);
    // Everyone gets a broadcast.
    let id = post_chat(&client, &backend, &operator, "to everyone").await;
    for stream in &mut streams {
        assert_eq!(stream.find(WAIT, "chat", |_| true).await.id(), Some(id));
    }
    if let (Some(before), Some(during)) = (rss_before, backend.rss_kib()) {
        eprintln!(
            "rss: {before} KiB idle, {during} KiB with {STREAMS} streams (~{} KiB per stream)",
            during.saturating_sub(before) / STREAMS as u64
        );
    }

    drop(streams);
    eventually(
        "open streams back to 0 after the clients left",
        WAIT,
        || async {
            backend
                .metric(&client, "vx11_backend_open_streams")
                .await
                .filter(|n| *n == 0.0)
                .ok_or("not yet")
        },
    )
    .await
    .unwrap();
    let disconnected = backend
        .metric(
            &client,
            "vx11_backend_streams_ended_total{reason=\"disconnected\"}",
        )
        .await;
    assert_eq!(disconnected, Some(STREAMS as f64));
    let health: Value = client
        .get(backend.url("/operator/api/health"))
        .header("X-VX11-Token", &operator.value)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["openStreams"], 0);
    backend.assert_logs_clean();
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_zero() {
    let operator = TestToken::new("operator");
    let mut backend = Backend::start(&[&operator], &[]).await;
    let client = client();
    let mut stream = open_stream(client.get(backend.url(&format!(
        "/operator/api/events/stream?token={}",
        operator.value
    ))))
    .await;
    stream.find(WAIT, "tokens", |_| true).await;

    let signalled = Instant::now();
    backend.sigterm();
    assert_eq!(
        stream.next_event(WAIT).await,
        None,
        "the stream ends cleanly"
    );
    let status = backend.exited(WAIT).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        signalled.elapsed()
    );
    let lines = backend.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "vx11-operator-backend stopped")
    );
    backend.assert_logs_clean();
}
