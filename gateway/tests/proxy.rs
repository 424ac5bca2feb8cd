//! The gateway in-process on a loopback port, in front of a small real backend: routing,
//! policy, every error code, streaming without buffering, limits.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TOKEN, serve, serve_gateway};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get};
use clap::Parser;
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use vx11_gateway::Gateway;
use vx11_gateway::config::{Args, Config};
use vx11_gateway::metrics::GatewayMetrics;
use vx11_service::{Protocols, Shutdown, StreamSlots};
use vx11_tokenset::{Origin, SetEntry, TokenDigest, TokenSet, TokenStore};

/// Speaks HTTP/1.1 and h2c, like vx11-operator-backend. Answers with what it received, as
/// JSON (the HTTP version too); `/operator/api/slow` never answers;
/// `/operator/api/events/stream` sends three events 200 ms apart.
fn echo_backend() -> Router {
    async fn echo(request: Request) -> axum::Json<Value> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<bin>"))))
            .collect();
        axum::Json(json!({
            "version": format!("{:?}", parts.version),
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "bodyLength": body.len(),
        }))
    }
    async fn events() -> axum::response::Response {
        let stream = futures_util::stream::unfold(0u32, |n| async move {
            if n == 3 {
                return None;
            }
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some((
                Ok::<_, Infallible>(Bytes::from(format!("id: {n}\ndata: {n}\n\n"))),
                n + 1,
            ))
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap()
    }
    Router::new()
        .route("/operator/api/slow", get(std::future::pending::<String>))
        .route("/operator/api/events/stream", get(events))
        .fallback(any(echo))
}

struct Harness {
    base: String,
    metrics: Arc<GatewayMetrics>,
    store: Arc<TokenStore>,
    client: reqwest::Client,
}

impl Harness {
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("x-vx11-token", token);
        }
        json_of(request.send().await.unwrap()).await
    }
}

async fn gateway_with(backend: &str) -> Harness {
    gateway_with_flags(backend, &[]).await
}

async fn gateway_with_flags(backend: &str, more: &[&str]) -> Harness {
    let mut flags = vec![
        "vx11-gateway",
        "--operator-backend-url",
        backend,
        "--modules",
        "madre=http://127.0.0.1:9,switch=http://127.0.0.1:9",
        "--upstream-timeout",
        "500ms",
        "--max-body-bytes",
        "1024",
    ];
    flags.extend_from_slice(more);
    let config = Config::from_args(Args::try_parse_from(flags).unwrap()).unwrap();
    let store = Arc::new(TokenStore::new());
    store.install(
        TokenSet::new(vec![SetEntry::new(
            "operator",
            TokenDigest::of(TOKEN.as_bytes()),
            Origin::TokenFile,
        )]),
        Some(1),
    );
    let metrics = GatewayMetrics::register(&mut Registry::default(), store.clone());
    let gateway = Arc::new(Gateway::new(
        &config,
        store.clone(),
        metrics.clone(),
        Shutdown::new(),
        StreamSlots::new(&config.service.streams),
    ));
    let addr = serve_gateway(gateway, config.express, Protocols::Http1).await;
    Harness {
        base: format!("http://{addr}"),
        metrics,
        store,
        client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    }
}

async fn gateway() -> Harness {
    let backend = serve(echo_backend(), Protocols::Http1AndH2c).await;
    gateway_with(&format!("http://{backend}")).await
}

async fn json_of(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

fn error_code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn health_and_ready_are_public() {
    let h = gateway().await;
    let (status, _, body) = h.get("/health", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _, body) = h.get("/ready", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["generation"], 1);
    h.store.install(TokenSet::default(), Some(2));
    let (status, _, body) = h.get("/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not_ready");
}

#[tokio::test]
async fn request_is_forwarded_unchanged() {
    let h = gateway().await;
    let url = format!("{}/operator/api/chat?token={TOKEN}&x=1%202", h.base);
    let response = h
        .client
        .post(url)
        .header("x-vx11-token", TOKEN)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .body("{\"message\":\"hello\"}")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/operator/api/chat");
    assert_eq!(body["query"], format!("token={TOKEN}&x=1%202"));
    assert_eq!(body["headers"]["x-vx11-token"], TOKEN);
    assert_eq!(body["headers"]["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(body["headers"].get("x-drop-me").is_none());
    assert_eq!(body["bodyLength"], 19);
}

#[tokio::test]
async fn every_401_code() {
    let h = gateway().await;
    let (status, headers, body) = h.get("/operator/api/health", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"vx11\"");

    let (status, headers, body) = h
        .get("/operator/api/health", Some("vx11-not-a-member-token"))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert!(!body.to_string().contains("vx11-not-a-member-token"));

    let mut expiring = SetEntry::new(
        "old",
        TokenDigest::of(b"vx11-expired-token-value"),
        Origin::TokenFile,
    );
    expiring.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    h.store.install(TokenSet::new(vec![expiring]), Some(2));
    let (status, _, body) = h
        .get("/operator/api/health?token=vx11-expired-token-value", None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "expired_token")
    );

    let (status, _, body) = h
        .get("/operator/api/health?token=bad%zzencoding", None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "malformed_token")
    );
}

#[tokio::test]
async fn policy_and_unknown_routes() {
    let h = gateway().await;
    let (status, _, body) = h.get("/switch/api/status", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "OFF_BY_POLICY", "module": "switch", "mode": "solo_madre", "readonly": true})
    );
    let (status, _, body) = h.get("/hermes/api/status", Some(TOKEN)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_module")
    );
    let (status, _, body) = h.get("/nothing/here", Some(TOKEN)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // A policy answer is still behind the token check.
    let (status, _, _) = h.get("/switch/api/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn backend_down_is_502_and_slow_backend_504() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let h = gateway_with(&format!("http://{closed}")).await;
    let (status, _, body) = h.get("/operator/api/health", Some(TOKEN)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_GATEWAY, "backend_unavailable")
    );
    // The backend's address and the OS error are in the gateway's log, not in the answer.
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("`operator` backend"), "{body}");
    for internal in [
        closed.to_string(),
        closed.port().to_string(),
        "refused".into(),
        "os error".into(),
        "127.0.0.1".into(),
    ] {
        assert!(!detail.contains(&internal), "{internal} in {body}");
    }

    let h = gateway().await;
    let (status, _, body) = h.get("/operator/api/slow", Some(TOKEN)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::GATEWAY_TIMEOUT, "backend_timeout")
    );
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_length() {
    let h = gateway().await;
    let url = format!("{}/operator/api/chat", h.base);
    let post = |body: reqwest::Body| {
        h.client
            .post(&url)
            .header("x-vx11-token", TOKEN)
            .body(body)
            .send()
    };
    let (status, _, body) = json_of(post(vec![b'x'; 2048].into()).await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let chunks = futures_util::stream::iter((0..4).map(|_| Ok::<_, Infallible>(vec![b'x'; 512])));
    let (status, _, body) = json_of(post(reqwest::Body::wrap_stream(chunks)).await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let response = post(vec![b'x'; 1024].into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn streams_are_not_buffered_and_are_counted() {
    let h = gateway().await;
    let response = h
        .client
        .get(format!(
            "{}/operator/api/events/stream?token={TOKEN}",
            h.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(h.metrics.open_streams.get(), 1);
    let mut body = response.bytes_stream();
    // The first event arrives on its own while the backend still holds the other two.
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"id: 0\ndata: 0\n\n");
    let rest: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
    assert_eq!(rest.concat(), b"id: 1\ndata: 1\n\nid: 2\ndata: 2\n\n");
    assert_eq!(h.metrics.open_streams.get(), 0);
}

#[tokio::test]
async fn a_dropped_client_releases_its_stream() {
    let h = gateway().await;
    let response = h
        .client
        .get(format!("{}/operator/api/events/stream", h.base))
        .header("x-vx11-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(h.metrics.open_streams.get(), 1);
    drop(response);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while h.metrics.open_streams.get() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.metrics.open_streams.get(), 0);
}

#[tokio::test]
async fn event_streams_go_to_the_backend_over_h2c_and_the_rest_over_http1() {
    async fn backend_saw(h: &Harness, accept: Option<&str>) -> String {
        let mut request = h
            .client
            .get(format!("{}/operator/api/echo", h.base))
            .header("x-vx11-token", TOKEN);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        let body: Value = response.json().await.unwrap();
        body["version"].as_str().unwrap().to_owned()
    }
    let h = gateway().await;
    assert_eq!(backend_saw(&h, None).await, "HTTP/1.1");
    assert_eq!(backend_saw(&h, Some("application/json")).await, "HTTP/1.1");
    assert_eq!(backend_saw(&h, Some("text/event-stream")).await, "HTTP/2.0");

    let backend = serve(echo_backend(), Protocols::Http1AndH2c).await;
    let h1_only = gateway_with_flags(&format!("http://{backend}"), &["--h2c-streams", ""]).await;
    assert_eq!(
        backend_saw(&h1_only, Some("text/event-stream")).await,
        "HTTP/1.1"
    );
}

/// A backend whose event streams send one event, then wait for `release` to send the last.
fn held_streams_backend(release: tokio::sync::watch::Receiver<bool>) -> Router {
    Router::new().fallback(any(move || {
        let release = release.clone();
        async move {
            let stream = futures_util::stream::unfold(0u32, move |n| {
                let mut release = release.clone();
                async move {
                    match n {
                        0 => Some((Ok::<_, Infallible>(Bytes::from_static(b"id: 0\n\n")), 1)),
                        1 => {
                            let _ = release.wait_for(|released| *released).await;
                            Some((Ok(Bytes::from_static(b"id: 1\n\n")), 2))
                        }
                        _ => None,
                    }
                }
            });
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }))
}

#[tokio::test]
async fn many_streams_share_one_h2c_connection_and_each_is_released() {
    const STREAMS: usize = 300;
    let (release, released) = tokio::sync::watch::channel(false);
    let backend = serve(held_streams_backend(released), Protocols::Http1AndH2c).await;
    let h = gateway_with(&format!("http://{backend}")).await;
    let mut open = Vec::new();
    for _ in 0..STREAMS {
        let response = h
            .client
            .get(format!("{}/operator/api/events/stream", h.base))
            .header("x-vx11-token", TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.bytes_stream();
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"id: 0\n\n");
        open.push(Some(body));
    }
    // More streams than hyper's default of 200 per HTTP/2 connection, all open at once.
    assert_eq!(h.metrics.open_streams.get(), STREAMS as i64);
    // Half the clients leave; the others get the last event and the end.
    let (leaving, staying) = open.split_at_mut(STREAMS / 2);
    for stream in leaving.iter_mut() {
        drop(stream.take());
    }
    release.send(true).unwrap();
    for stream in staying.iter_mut() {
        let rest: Vec<Bytes> = stream.take().unwrap().map(|c| c.unwrap()).collect().await;
        assert_eq!(rest.concat(), b"id: 1\n\n");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.metrics.open_streams.get() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.metrics.open_streams.get(), 0);
}

#[tokio::test]
async fn an_http2_clients_authority_reaches_the_backend_as_x_forwarded_host() {
    use http_body_util::BodyExt as _;
    let backend = serve(echo_backend(), Protocols::Http1AndH2c).await;
    let gw = common::gateway_speaking(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        &format!("http://{backend}"),
        &[],
        Protocols::Http1AndH2,
    );
    // HTTP/2 with prior knowledge: no `Host` line, the host is the `:authority`.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<Bytes>>();
    let authority = gw.addr.to_string();
    let request = axum::http::Request::get(format!("http://{authority}/operator/api/health"))
        .header("x-vx11-token", TOKEN)
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["headers"]["x-forwarded-host"], authority.as_str());
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_ne!(body["headers"]["host"], authority.as_str(), "{body}");
}
