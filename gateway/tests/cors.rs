//! CORS and the outage stream through the whole gateway in-process: preflights answered
//! without a token and never forwarded, an `OPTIONS` without `Access-Control-Request-Method`
//! checked and proxied, `Access-Control-*` on real answers (the backend's own replaced),
//! and the outage stream for an event-stream request to a backend that is down.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;

use common::{TOKEN, error_of, gateway, raw_backend, raw_exchange, status_of};

const PAGE: &str = "http://127.0.0.1:3000";

fn ok_backend() -> impl Fn(&str) -> Vec<u8> + Send + Sync + 'static {
    |_head| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\ncontent-length: 2\r\n\r\n{}"
            .to_vec()
    }
}

fn head_has(answer: &str, line: &str) -> bool {
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    head.lines().any(|l| l == line.to_ascii_lowercase())
}

fn has_allow_headers(answer: &str) -> bool {
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    head.lines().any(|l| l.starts_with("access-control-allow"))
}

#[tokio::test]
async fn preflights_are_the_gateways_and_real_answers_carry_the_origin() {
    let (backend, accepted) = raw_backend(ok_backend()).await;
    let gw = gateway(
        &format!("http://{backend}"),
        &[
            "--cors-allowed-origins",
            PAGE,
            "--cors-expose-headers",
            "X-Request-Id",
        ],
    )
    .await;

    let preflight = |origin: &str, method: &str| {
        format!(
            "OPTIONS /operator/api/chat HTTP/1.1\r\nhost: vx11\r\norigin: {origin}\r\naccess-control-request-method: {method}\r\naccess-control-request-headers: x-vx11-token,content-type\r\nconnection: close\r\n\r\n"
        )
    };
    let ok = raw_exchange(gw.addr, preflight(PAGE, "POST").as_bytes()).await;
    assert_eq!(status_of(&ok), 204, "{ok}");
    assert!(
        head_has(&ok, &format!("access-control-allow-origin: {PAGE}")),
        "{ok}"
    );
    for (origin, method) in [("http://127.0.0.1:3001", "POST"), (PAGE, "TRACE")] {
        let refused = raw_exchange(gw.addr, preflight(origin, method).as_bytes()).await;
        assert_eq!(status_of(&refused), 403, "{refused}");
        assert_eq!(error_of(&refused), "cors_refused");
        assert!(!has_allow_headers(&refused), "{refused}");
    }
    // Preflights to other paths are the gateway's too.
    let health = raw_exchange(
        gw.addr,
        format!("OPTIONS /health HTTP/1.1\r\nhost: vx11\r\norigin: {PAGE}\r\naccess-control-request-method: GET\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&health), 204, "{health}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a preflight reached the backend"
    );

    // An OPTIONS that is not a preflight: the token is checked, then it is proxied.
    let no_token = raw_exchange(
        gw.addr,
        format!("OPTIONS /operator/api/chat HTTP/1.1\r\nhost: vx11\r\norigin: {PAGE}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&no_token), 401, "{no_token}");
    assert!(
        head_has(&no_token, &format!("access-control-allow-origin: {PAGE}")),
        "{no_token}"
    );
    let proxied = raw_exchange(
        gw.addr,
        format!("OPTIONS /operator/api/chat HTTP/1.1\r\nhost: vx11\r\norigin: {PAGE}\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&proxied), 200, "{proxied}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The backend's `*` is replaced by the echoed origin, once.
    let head = proxied
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(
        head.matches("access-control-allow-origin").count(),
        1,
        "{proxied}"
    );
    assert!(
        head_has(&proxied, &format!("access-control-allow-origin: {PAGE}")),
        "{proxied}"
    );
    assert!(
        head_has(&proxied, "access-control-expose-headers: x-request-id"),
        "{proxied}"
    );
    assert!(head_has(&proxied, "vary: Origin"), "{proxied}");

    // Another origin's real request is answered, without CORS headers: the browser hides it.
    let other = raw_exchange(
        gw.addr,
        format!("GET /operator/api/health HTTP/1.1\r\nhost: vx11\r\norigin: http://evil.example\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&other), 200, "{other}");
    assert!(!has_allow_headers(&other), "{other}");
}

#[tokio::test]
async fn without_cors_settings_no_answer_has_a_cors_header() {
    let (backend, accepted) =
        raw_backend(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec()).await;
    let gw = gateway(&format!("http://{backend}"), &[]).await;
    let preflight = raw_exchange(
        gw.addr,
        format!("OPTIONS /operator/api/chat HTTP/1.1\r\nhost: vx11\r\norigin: {PAGE}\r\naccess-control-request-method: POST\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&preflight), 403, "{preflight}");
    assert!(
        preflight.contains("VX11_CORS_ALLOWED_ORIGINS"),
        "{preflight}"
    );
    let real = raw_exchange(
        gw.addr,
        format!("GET /operator/api/health HTTP/1.1\r\nhost: vx11\r\norigin: {PAGE}\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&real), 200, "{real}");
    assert!(
        !real.to_ascii_lowercase().contains("access-control-"),
        "{real}"
    );
    assert!(
        !real.to_ascii_lowercase().contains("vary: origin"),
        "{real}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_event_stream_to_a_down_backend_gets_a_stream_to_retry_and_others_the_502() {
    // A port nothing listens on: connection refused.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(
        &format!("http://{down}"),
        &["--stream-retry", "1500ms", "--cors-allowed-origins", PAGE],
    )
    .await;
    let stream = raw_exchange(
        gw.addr,
        format!("GET /operator/api/events/stream HTTP/1.1\r\nhost: vx11\r\naccept: text/event-stream\r\nlast-event-id: 42\r\norigin: {PAGE}\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&stream), 200, "{stream}");
    assert!(
        head_has(&stream, "content-type: text/event-stream"),
        "{stream}"
    );
    assert!(head_has(&stream, "cache-control: no-cache"), "{stream}");
    assert!(
        head_has(&stream, &format!("access-control-allow-origin: {PAGE}")),
        "{stream}"
    );
    let body = stream.split("\r\n\r\n").nth(1).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("retry: 1500"), "{body}");
    assert_eq!(lines.next(), Some("event: backend_unavailable"), "{body}");
    let data: serde_json::Value =
        serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["module"], "operator");
    assert_eq!(data["error"], "backend_unavailable");
    assert!(!body.contains("id:"), "{body}");

    let json = raw_exchange(
        gw.addr,
        format!("GET /operator/api/health HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&json), 502, "{json}");
    assert_eq!(error_of(&json), "backend_unavailable");
}
