//! Abuse tests: the real gateway's proxy path, against clients that send what a backend
//! must not get (a head over the backend's HTTP/2 limit, a malformed body, two `Host`s, a
//! spoofed `X-Forwarded-For`, paths that climb or split) and a backend that frames its
//! response twice. A fake module backend on loopback records every request it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use vx11_tests::abuse::parse_status;

use crate::streams::Stack;

/// A module backend that records each request head and answers every one with `answer`.
struct FakeModule {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl FakeModule {
    async fn start(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Sends `request` on a new connection to `addr` and reads the answer to its end.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> u16 {
    parse_status(answer.as_bytes()).unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn has_code(answer: &str, code: &str) -> bool {
    answer.contains(&format!("\"error\":\"{code}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_backends_http2_limit_is_431_and_no_other_stream_is_cut() {
    const STREAMS: usize = 30;
    let stack = Stack::start(&[
        // One worker: every event stream on one h2c connection to the backend.
        ("VX11_WORKERS", "1"),
        // A listener that takes the 70 KB head, so that the gateway's own check answers.
        ("VX11_MAX_HEADER_BYTES", "131072"),
    ]);
    let valid = stack.valid_client();
    let token = stack.operator.expose().to_owned();
    let url = format!("{}/operator/api/events/stream", stack.gateway.base_url());
    let http = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let response = http
            .get(&url)
            .header("x-vx11-token", &token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response.bytes_stream());
    }
    let bad = format!(
        "GET /operator/api/events/stream HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {token}\r\naccept: text/event-stream\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let answer = exchange(stack.gateway.addr, bad.as_bytes()).await;

    // Every stream opened before is still there and gets the next event (the old gateway
    // passed the head on and the backend's GOAWAY cut them all).
    stack.publish(1, 32).await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&seen).contains("xxxxxxxx") {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(bytes))) => seen.extend_from_slice(&bytes),
                other => panic!("stream {i} was cut or got nothing: {other:?}"),
            }
        }
    }
    assert_eq!(status(&answer), 431, "{}", &answer[..answer.len().min(300)]);
    assert!(has_code(&answer, "headers_too_large"), "{answer}");
    let report = valid.stop().await;
    assert!(
        report.ok > 0 && report.failed == 0,
        "valid client: {report:?}"
    );
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_is_the_clients_400_and_a_502_tells_nothing_internal() {
    let down = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let modules = format!("madre=http://{down}");
    let stack = Stack::start(&[("VX11_MODULES", &modules), ("VX11_UPSTREAM_TIMEOUT", "3s")]);
    let valid = stack.valid_client();
    let token = stack.operator.expose();
    for body in [
        "5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
        "5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n",
    ] {
        for accept in ["", "accept: text/event-stream\r\n"] {
            let request = format!(
                "POST /operator/api/chat HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {token}\r\n{accept}content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{body}"
            );
            let answer = exchange(stack.gateway.addr, request.as_bytes()).await;
            assert_eq!(status(&answer), 400, "{body:?} {accept:?}: {answer}");
            assert!(has_code(&answer, "invalid_body"), "{answer}");
        }
    }
    let metrics = reqwest::get(stack.gateway.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics
            .lines()
            .any(|line| line.starts_with("vx11_gateway_upstream_errors_total{")),
        "a client's broken body was counted as a backend failure: {metrics}"
    );

    let request = format!(
        "GET /madre/api/x HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {token}\r\nconnection: close\r\n\r\n"
    );
    let answer = exchange(stack.gateway.addr, request.as_bytes()).await;
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(has_code(&answer, "backend_unavailable"), "{answer}");
    for internal in [down.to_string(), "os error".into(), "refused".into()] {
        assert!(
            !answer.contains(&internal),
            "{internal:?} in the answer: {answer}"
        );
    }
    let logs = stack.gateway.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("madre") && l.contains(&down.to_string())),
        "the backend's address is not in the gateway's warning: {logs}"
    );
    let report = valid.stop().await;
    assert!(
        report.ok > 0 && report.failed == 0,
        "valid client: {report:?}"
    );
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_length_and_chunked_framing_reaches_the_client_whole() {
    let fake = FakeModule::start(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nb\r\nhello world\r\n7\r\n, again\r\n0\r\n\r\n",
    )
    .await;
    let modules = format!("fake=http://{}", fake.addr);
    let stack = Stack::start(&[("VX11_MODULES", &modules), ("VX11_POLICY_MODE", "full")]);
    let response = reqwest::Client::new()
        .get(format!("{}/fake/api/x", stack.gateway.base_url()))
        .header("x-vx11-token", stack.operator.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("content-length"));
    assert_eq!(response.text().await.unwrap(), "hello world, again");
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_hosts_unsafe_paths_and_spoofed_forwarded_for_never_reach_a_backend() {
    let fake = FakeModule::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let modules = format!("fake=http://{}", fake.addr);
    let stack = Stack::start(&[("VX11_MODULES", &modules), ("VX11_POLICY_MODE", "full")]);
    let valid = stack.valid_client();
    let token = stack.operator.expose();
    let addr = stack.gateway.addr;

    for hosts in ["host: a\r\nhost: b\r\n", "host: a\r\nhost: a\r\n"] {
        let request = format!(
            "GET /fake/api/x HTTP/1.1\r\n{hosts}x-vx11-token: {token}\r\nconnection: close\r\n\r\n"
        );
        let answer = exchange(addr, request.as_bytes()).await;
        assert_eq!(status(&answer), 400, "{hosts:?}: {answer}");
        assert!(has_code(&answer, "ambiguous_host"), "{answer}");
    }
    for path in [
        "/fake/api/../x",
        "/fake/api/./x",
        "/fake/api/%2e%2e/x",
        "/fake/api/%2E%2E/x",
        "/fake/api/.%2E/x",
        "/fake/api/%2E/x",
        "/fake/api/%252e%252e/x",
        "/fake/api/a%2fb",
        "/fake/api/a%2Fb",
        "/fake/api/a%252Fb",
        "/fake/api/a%5cb",
        "/fake/api/%5C..%5Cx",
        "/fake/api/..;/x",
        "/fake/api/a%00b",
        "/fake/api/%c0%ae%c0%ae/x",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {token}\r\nconnection: close\r\n\r\n"
        );
        let answer = exchange(addr, request.as_bytes()).await;
        assert_eq!(status(&answer), 400, "{path}: {answer}");
        assert!(has_code(&answer, "unsafe_path"), "{path}: {answer}");
    }
    assert!(
        fake.heads().is_empty(),
        "reached the backend: {:?}",
        fake.heads()
    );

    // A fine request goes through, with the gateway's own X-Forwarded-For.
    let request = format!(
        "GET /fake/api/a.json HTTP/1.1\r\nhost: vx11\r\nx-vx11-token: {token}\r\nx-forwarded-for: 6.6.6.6\r\nconnection: close\r\n\r\n"
    );
    let answer = exchange(addr, request.as_bytes()).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let heads = fake.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let forwarded: Vec<&str> = heads[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:"))
        .collect();
    assert_eq!(forwarded, ["x-forwarded-for: 127.0.0.1"], "{}", heads[0]);
    let report = valid.stop().await;
    assert!(
        report.ok > 0 && report.failed == 0,
        "valid client: {report:?}"
    );
    stack.assert_logs_clean();
}
