//! Hostile requests and broken backends against the gateway in-process: malformed client
//! bodies, a response with both `Content-Length` and `Transfer-Encoding`, ambiguous
//! `Host`, spoofed `X-Forwarded-For`, paths that climb or split.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use common::{TOKEN, error_of, gateway, raw_backend, raw_exchange, serve, status_of};
use serde_json::{Value, json};
use vx11_service::Protocols;

/// Answers with the headers and body length it received, as JSON.
fn echo_backend() -> Router {
    Router::new().fallback(any(|request: Request| async move {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await;
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<bin>"))))
            .collect();
        axum::Json(json!({
            "path": parts.uri.path(),
            "headers": headers,
            "bodyLength": body.map(|b| b.len()).ok(),
        }))
    }))
}

fn request(head: &str) -> Vec<u8> {
    format!("{head}\r\nhost: vx11\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n")
        .into_bytes()
}

fn upstream_errors(metrics: &vx11_gateway::metrics::GatewayMetrics) -> u64 {
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("e", "", metrics.upstream_errors.clone());
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("e_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_malformed_client_body_is_the_clients_400_not_a_backend_502() {
    let backend = serve(echo_backend(), Protocols::Http1AndH2c).await;
    let g = gateway(&format!("http://{backend}"), &[]).await;
    let chunked = |body: &str, accept: &str| {
        format!(
            "POST /operator/api/chat HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {TOKEN}\r\n{accept}transfer-encoding: chunked\r\nconnection: close\r\n\r\n{body}"
        )
    };
    for (what, body) in [
        ("bad chunk size", "5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n"),
        (
            "bad chunk terminator",
            "5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        // Over HTTP/1.1 to the backend, and over h2c (an event-stream request).
        for accept in ["", "accept: text/event-stream\r\n"] {
            let answer = raw_exchange(g.addr, chunked(body, accept).as_bytes()).await;
            assert_eq!(status_of(&answer), 400, "{what} {accept:?}: {answer}");
            assert_eq!(error_of(&answer), "invalid_body", "{what}: {answer}");
        }
    }
    assert_eq!(
        upstream_errors(&g.metrics),
        0,
        "counted as the backend's failure"
    );
    // A well-formed chunked body still goes through.
    let answer = raw_exchange(g.addr, chunked("5\r\nhello\r\n0\r\n\r\n", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("\"bodyLength\":5"), "{answer}");
}

#[tokio::test]
async fn a_response_with_content_length_and_chunked_is_read_whole_as_chunked() {
    let (backend, _) = raw_backend(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nb\r\nhello world\r\n7\r\n, again\r\n0\r\n\r\n".to_vec()
    })
    .await;
    let g = gateway(&format!("http://{backend}"), &[]).await;
    let response = reqwest::Client::new()
        .get(format!("{}/operator/api/x", g.base()))
        .header("x-vx11-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        !response.headers().contains_key("content-length"),
        "{:?}",
        response.headers()
    );
    assert_eq!(response.text().await.unwrap(), "hello world, again");
}

#[tokio::test]
async fn two_host_headers_are_400_and_never_reach_the_backend() {
    let (backend, accepted) =
        raw_backend(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await;
    let g = gateway(&format!("http://{backend}"), &[]).await;
    for head in [
        format!(
            "GET /operator/api/x HTTP/1.1\r\nhost: a\r\nhost: b\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n"
        ),
        format!(
            "GET /operator/api/x HTTP/1.1\r\nhost: a\r\nhost: a\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n"
        ),
        format!(
            "GET http://a/operator/api/x HTTP/1.1\r\nhost: b\r\nx-vx11-token: {TOKEN}\r\nconnection: close\r\n\r\n"
        ),
    ] {
        let answer = raw_exchange(g.addr, head.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{head:?}: {answer}");
        assert_eq!(error_of(&answer), "ambiguous_host", "{answer}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    let answer = raw_exchange(g.addr, &request("GET /operator/api/x HTTP/1.1")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn a_clients_forwarded_for_is_replaced_unless_its_peer_is_a_trusted_proxy() {
    let backend = serve(echo_backend(), Protocols::Http1AndH2c).await;
    let seen = |flags: &'static [&'static str]| async move {
        let g = gateway(&format!("http://{backend}"), flags).await;
        let body: Value = reqwest::Client::new()
            .get(format!("{}/operator/api/x", g.base()))
            .header("x-vx11-token", TOKEN)
            .header("x-forwarded-for", "6.6.6.6")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["headers"]["x-forwarded-for"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(seen(&[]).await, "127.0.0.1");
    assert_eq!(
        seen(&["--trusted-proxies", "10.0.0.0/8"]).await,
        "127.0.0.1"
    );
    assert_eq!(
        seen(&["--trusted-proxies", "10.0.0.0/8,127.0.0.0/8"]).await,
        "6.6.6.6, 127.0.0.1"
    );
}

#[tokio::test]
async fn paths_that_climb_or_split_are_refused_before_the_backend() {
    let (backend, accepted) = raw_backend(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
            path.len()
        )
        .into_bytes()
    })
    .await;
    let g = gateway(&format!("http://{backend}"), &[]).await;
    for path in [
        "/operator/api/../x",
        "/operator/api/./x",
        "/operator/api/%2e%2e/x",
        "/operator/api/%2E%2E/x",
        "/operator/api/%2E/x",
        "/operator/api/.%2e/x",
        "/operator/api/%252e%252e/x",
        "/operator/api/a%2fb",
        "/operator/api/a%2Fb",
        "/operator/api/a%252fb",
        "/operator/api/a%5cb",
        "/operator/api/a%5Cb",
        "/operator/api/a\\b",
        "/operator/api/..;/x",
        "/operator/api/%2e%2e;x/y",
        "/operator/api/a%00b",
        "/operator/api/%c0%ae%c0%ae/x",
        "/operator/api/..",
    ] {
        let answer = raw_exchange(g.addr, &request(&format!("GET {path} HTTP/1.1"))).await;
        // hyper itself refuses some of these bytes (a backslash) with a bare 400.
        assert_eq!(status_of(&answer), 400, "{path}: {answer}");
        if !path.contains('\\') {
            assert_eq!(error_of(&answer), "unsafe_path", "{path}: {answer}");
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "an unsafe path reached the backend"
    );
    for path in [
        "/operator/api/a.b/c",
        "/operator/api/a%2ejson",
        "/operator/api/x?p=../y",
    ] {
        let answer = raw_exchange(g.addr, &request(&format!("GET {path} HTTP/1.1"))).await;
        assert_eq!(status_of(&answer), 200, "{path}: {answer}");
        assert!(answer.ends_with(path), "forwarded as it came: {answer}");
    }
}
