//! Event streams through the gateway in-process, against clients that stop reading, take
//! too many streams, or send a head the backend's HTTP/2 would refuse.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::any;
use common::{
    OTHER_TOKEN, TOKEN, error_of, eventually, gateway, gateway_on, raw_exchange, serve,
    small_send_buffer_listener, status_of,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vx11_service::Protocols;

/// Event streams that never end: an event of `event_bytes` every `every`. Counts the
/// requests it got.
fn endless_backend(event_bytes: usize, every: Duration) -> (Router, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let router = Router::new().fallback(any(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let data = format!("data: {}\n\n", "x".repeat(event_bytes));
            let stream = futures_util::stream::unfold(0u64, move |n| {
                let frame = Bytes::from(format!("id: {n}\n{data}"));
                async move {
                    if n > 0 {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok::<_, Infallible>(frame), n + 1))
                }
            });
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }));
    (router, requests)
}

/// A client that asks for a stream and then reads nothing: a small receive buffer, so the
/// kernel takes little of what the gateway sends.
async fn stalled_client(addr: SocketAddr, token: &str, accept: bool) -> TcpStream {
    stream_client(addr, token, accept, Some(4096)).await
}

async fn stream_client(
    addr: SocketAddr,
    token: &str,
    accept: bool,
    receive_buffer: Option<u32>,
) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = socket.connect(addr).await.unwrap();
    let accept = if accept {
        "accept: text/event-stream\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET /operator/api/events/stream HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {token}\r\n{accept}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads what is left on `stream` until it closes; true when it closed within `limit`.
async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    let reading = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, reading).await.is_ok()
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_dropped_after_the_stall_timeout() {
    let (backend, _) = endless_backend(1024, Duration::from_millis(2));
    let backend = serve(backend, Protocols::Http1AndH2c).await;
    let g = gateway_on(
        small_send_buffer_listener(),
        &format!("http://{backend}"),
        &["--stream-stall-timeout", "1s"],
    );
    // One over HTTP/1.1 to the backend, one over h2c.
    let mut h1 = stalled_client(g.addr, TOKEN, false).await;
    let mut h2c = stalled_client(g.addr, TOKEN, true).await;
    assert!(eventually(Duration::from_secs(5), || g.metrics.open_streams.get() == 2).await);
    // Buffers fill within moments at ~500 KB/s; then 1 s of stall, plus margin.
    let dropped = eventually(Duration::from_secs(6), || {
        g.metrics.stalled_streams.get() == 2
    })
    .await;
    assert!(
        dropped,
        "stalled streams still open: {}",
        g.metrics.stalled_streams.get()
    );
    assert!(
        closes_within(&mut h1, Duration::from_secs(3)).await,
        "HTTP/1.1 stream not closed"
    );
    assert!(
        closes_within(&mut h2c, Duration::from_secs(3)).await,
        "h2c stream not closed"
    );
    assert!(eventually(Duration::from_secs(2), || g.metrics.open_streams.get() == 0).await);
    assert_eq!(g.slots.open(), 0, "slots not given back");
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_is_not_dropped() {
    let (backend, _) = endless_backend(1024, Duration::from_millis(2));
    let backend = serve(backend, Protocols::Http1AndH2c).await;
    let g = gateway_on(
        small_send_buffer_listener(),
        &format!("http://{backend}"),
        &["--stream-stall-timeout", "1s"],
    );
    // Slower than the backend sends (~500 KB/s), so the stream waits on it all along.
    let mut slow = stream_client(g.addr, TOKEN, true, None).await;
    let mut buf = vec![0u8; 16 * 1024];
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut read = 0;
    while tokio::time::Instant::now() < until {
        let n = slow.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {read} bytes");
        read += n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(g.metrics.stalled_streams.get(), 0);
    assert_eq!(g.metrics.open_streams.get(), 1);
}

#[tokio::test]
async fn streams_over_the_caps_are_refused_before_the_backend_hears_of_them() {
    let (backend, requests) = endless_backend(10, Duration::from_millis(100));
    let backend = serve(backend, Protocols::Http1AndH2c).await;
    let g = gateway(
        &format!("http://{backend}"),
        &["--max-streams", "3", "--max-streams-per-token", "2"],
    )
    .await;
    let client = reqwest::Client::new();
    let open = |token: &'static str| {
        client
            .get(format!("{}/operator/api/events/stream", g.base()))
            .header("x-vx11-token", token)
            .header("accept", "text/event-stream")
            .send()
    };
    let first = open(TOKEN).await.unwrap();
    let second = open(TOKEN).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = open(TOKEN).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_streams_for_token");
    let third = open(OTHER_TOKEN).await.unwrap();
    assert_eq!(third.status(), 200);
    let full = open(OTHER_TOKEN).await.unwrap();
    assert_eq!(full.status(), 503);
    let body: serde_json::Value = full.json().await.unwrap();
    assert_eq!(body["error"], "too_many_streams");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "a refused stream reached the backend"
    );

    // A stream that did not announce itself is counted once its response says what it is.
    let unannounced = raw_exchange(
        g.addr,
        format!("GET /operator/api/events/stream HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {OTHER_TOKEN}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&unannounced), 503, "{unannounced}");
    assert_eq!(error_of(&unannounced), "too_many_streams");

    // A stream that ends gives its place back.
    drop(first);
    assert!(eventually(Duration::from_secs(2), || g.slots.open() == 2).await);
    let again = open(TOKEN).await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn a_head_the_backends_http2_would_refuse_is_431_and_other_streams_flow_on() {
    const STREAMS: usize = 20;
    let (backend, requests) = endless_backend(10, Duration::from_millis(50));
    let backend = serve(backend, Protocols::Http1AndH2c).await;
    let g = gateway(&format!("http://{backend}"), &[]).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let response = client
            .get(format!("{}/operator/api/events/stream", g.base()))
            .header("x-vx11-token", TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        body.next().await.unwrap().unwrap();
        streams.push(body);
    }
    let before = requests.load(Ordering::SeqCst);
    // 70 KB in one header, on an event-stream request: over h2c to the backend.
    let bad = format!(
        "GET /operator/api/events/stream HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {TOKEN}\r\naccept: text/event-stream\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let answer = raw_exchange(g.addr, bad.as_bytes()).await;
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert_eq!(error_of(&answer), "headers_too_large");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        before,
        "the head reached the backend"
    );
    // Every other stream keeps receiving events.
    for (i, body) in streams.iter_mut().enumerate() {
        for _ in 0..3 {
            let next = tokio::time::timeout(Duration::from_secs(3), body.next()).await;
            assert!(
                matches!(next, Ok(Some(Ok(_)))),
                "stream {i} was cut: {next:?}"
            );
        }
    }
}
