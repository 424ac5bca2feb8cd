//! The seed's five cases through a gateway, with a client token: health (public), the
//! backend's health, chat, and the event stream with the token in the query (as EventSource
//! sends it, HTTP/1.1) and in the header (with `Accept: text/event-stream`, the gateway's h2c
//! path to the backend), each stream carrying a chat message posted after it opened.

use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::json;

pub async fn assert_seed_cases(g: &str, token: &str) {
    let http = reqwest::Client::new();
    let r = http.get(format!("{g}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{g}/operator/api/health"))
        .header("x-vx11-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .post(format!("{g}/operator/api/chat"))
        .header("x-vx11-token", token)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for (request, case) in [
        (
            http.get(format!(
                "{g}/operator/api/events/stream?token={token}&follow=true"
            )),
            "query",
        ),
        (
            http.get(format!("{g}/operator/api/events/stream?follow=true"))
                .header("x-vx11-token", token)
                .header("accept", "text/event-stream"),
            "header",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let marker = format!("seed-{case}-{}", nanos());
        let post = http
            .post(format!("{g}/operator/api/chat"))
            .header("x-vx11-token", token)
            .json(&json!({"message": marker}))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), StatusCode::OK);
        assert!(
            read_until(response, &marker, Duration::from_secs(10)).await,
            "the chat message did not arrive on the stream (token in the {case})"
        );
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn read_until(response: reqwest::Response, needle: &str, limit: Duration) -> bool {
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains(needle) {
            return true;
        }
    }
    false
}
