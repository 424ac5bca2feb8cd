//! Abuse tests: the listeners. Connections that never finish their request head, send it a
//! byte at a time, sit idle, or come in thousands, against the API port and the metrics
//! port of the gateway and the operator backend; and a second gateway on a port in use.
//! Before the listener limits (issue 14) every one of these connections stayed open for as
//! long as the client liked, and 700 unfinished heads took the gateway past 256 MiB.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use vx11_tests::abuse::{
    ValidClient, closed_within, open_sockets, project_active_tokens, rss_bytes, status_of,
};
use vx11_tests::services::{
    ServiceKind, ServiceProcess, assert_no_value_in, binary_path, free_loopback_addr,
};
use vx11_tokenset::TokenValue;

/// The header timeout the attacked processes run with (short, so the tests are).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// What a close may take beyond its timeout on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

/// A backend and a gateway in front of it, with one token and short listener timeouts.
struct Stack {
    _dir: tempfile::TempDir,
    token: TokenValue,
    backend: ServiceProcess,
    gateway: ServiceProcess,
}

impl Stack {
    fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = TokenValue::generate(32).unwrap();
        let tokens_dir = dir.path().join("tokens");
        project_active_tokens(&tokens_dir, 1, &[("operator", &token)]).unwrap();
        let mut env = BTreeMap::from([
            ("VX11_TOKENS_DIR".into(), tokens_dir.display().to_string()),
            (
                "VX11_HEADER_READ_TIMEOUT".into(),
                format!("{}s", HEADER_TIMEOUT.as_secs()),
            ),
            (
                "VX11_IDLE_TIMEOUT".into(),
                format!("{}s", IDLE_TIMEOUT.as_secs()),
            ),
        ]);
        for (name, value) in extra {
            env.insert((*name).into(), (*value).into());
        }
        let backend =
            ServiceProcess::start(ServiceKind::OperatorBackend, &env, dir.path()).unwrap();
        env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
        let gateway = ServiceProcess::start(ServiceKind::Gateway, &env, dir.path()).unwrap();
        Self {
            _dir: dir,
            token,
            backend,
            gateway,
        }
    }

    /// A client asking the gateway for the backend's health with the token, every 100 ms.
    fn valid_client(&self) -> ValidClient {
        ValidClient::start(
            self.gateway.addr,
            "/operator/api/health",
            vec![("x-vx11-token".into(), self.token.expose().to_owned())],
            Duration::from_millis(100),
        )
    }

    /// Every listener an attacker may reach: both API ports and both metrics ports.
    fn listeners(&self) -> [(&'static str, SocketAddr, u32); 4] {
        [
            ("gateway", self.gateway.addr, self.gateway.pid()),
            (
                "gateway metrics",
                self.gateway.metrics_addr,
                self.gateway.pid(),
            ),
            ("backend", self.backend.addr, self.backend.pid()),
            (
                "backend metrics",
                self.backend.metrics_addr,
                self.backend.pid(),
            ),
        ]
    }

    fn assert_no_token_in_logs(&self) {
        let value = self.token.expose();
        assert_no_value_in("gateway log", &self.gateway.logs(), [value]);
        assert_no_value_in("backend log", &self.backend.logs(), [value]);
    }
}

/// Opens `count` connections to `addr` (in parallel batches; a few may be refused by a
/// full backlog on a slow machine and are left out).
async fn connect_many(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(100) {
        let size = (count - batch * 100).min(100);
        let opened = futures::future::join_all((0..size).map(|_| TcpStream::connect(addr))).await;
        streams.extend(opened.into_iter().filter_map(Result::ok));
    }
    streams
}

/// Waits until each stream is closed by the peer; how many were, within `limit` in all.
async fn count_closed(streams: &mut [TcpStream], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let waits = streams.iter_mut().map(|stream| async move {
        closed_within(stream, deadline.saturating_duration_since(Instant::now())).await
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_heads_neither_hold_memory_nor_stay_open() {
    let stack = Stack::start(&[]);
    let client = stack.valid_client();
    let before = rss_bytes(stack.gateway.pid()).unwrap();

    // The attack that took the gateway to 275 MB: 700 connections, each sending ~380 KB of
    // one header that never ends, no token anywhere.
    let mut attackers = connect_many(stack.gateway.addr, 700).await;
    assert!(attackers.len() >= 600, "only {} connected", attackers.len());
    let chunk = vec![b'a'; 16 * 1024];
    let mut peak = before;
    for round in 0..24 {
        let writes = attackers.iter_mut().map(|stream| {
            let chunk = &chunk;
            async move {
                if round == 0 {
                    let _ = stream
                        .write_all(b"GET /operator/api/health HTTP/1.1\r\nhost: x\r\nx-pad: ")
                        .await;
                }
                // A refused head is answered and closed: later writes fail, as they should.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), stream.write_all(chunk)).await;
            }
        });
        futures::future::join_all(writes).await;
        peak = peak.max(rss_bytes(stack.gateway.pid()).unwrap());
    }
    let closed = count_closed(&mut attackers, HEADER_TIMEOUT + MARGIN).await;
    peak = peak.max(rss_bytes(stack.gateway.pid()).unwrap());
    let report = client.stop().await;

    // 700 heads of at most VX11_MAX_HEADER_BYTES (16 KiB) are 11 MiB; allow the rest of a
    // process on top of what it used before.
    let bound = before + 64 * 1024 * 1024;
    assert!(
        peak < bound,
        "gateway RSS went from {} to {} MiB (bound {} MiB)",
        before >> 20,
        peak >> 20,
        bound >> 20
    );
    assert_eq!(
        closed,
        attackers.len(),
        "unfinished heads left open past the header timeout"
    );
    assert!(
        report.failed == 0 && report.ok > 0,
        "valid client during the attack: {report:?}"
    );
    stack.assert_no_token_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_a_byte_at_a_time_is_closed_after_the_header_timeout_on_every_listener() {
    let stack = Stack::start(&[]);
    let client = stack.valid_client();
    for (name, addr, pid) in stack.listeners() {
        let mut slow = connect_many(addr, 100).await;
        let started = Instant::now();
        // A byte every 300 ms: each read resets nothing, the head's first byte started it.
        let head = b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaa";
        let mut sent = 0;
        let mut open = slow.len();
        while open > 0 && started.elapsed() < HEADER_TIMEOUT + MARGIN && sent < head.len() {
            open = 0;
            for stream in &mut slow {
                if stream.write_all(&head[sent..sent + 1]).await.is_ok() {
                    open += 1;
                }
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let closed = count_closed(&mut slow, HEADER_TIMEOUT + MARGIN).await;
        assert_eq!(
            closed,
            slow.len(),
            "{name}: a slow head outlived the header timeout"
        );
        assert!(
            open_sockets(pid) < 50,
            "{name}: {} sockets still open",
            open_sockets(pid)
        );
    }
    let report = client.stop().await;
    assert!(
        report.failed == 0 && report.ok > 0,
        "valid client during the attack: {report:?}"
    );
    stack.assert_no_token_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_and_a_busy_one_is_not() {
    let stack = Stack::start(&[]);
    for (name, addr, _) in stack.listeners() {
        let mut idle = connect_many(addr, 50).await;
        for stream in &mut idle {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
        }
        // Each got its answer and stays open for more (keep-alive) until the idle timeout.
        let early = count_closed(&mut idle, IDLE_TIMEOUT / 2).await;
        assert_eq!(early, 0, "{name}: closed before the idle timeout");
        let closed = count_closed(&mut idle, IDLE_TIMEOUT + MARGIN).await;
        assert_eq!(closed, idle.len(), "{name}: idle connections left open");
    }

    // An event stream is a request in flight, never idle: it outlives the idle timeout.
    let mut stream = TcpStream::connect(stack.gateway.addr).await.unwrap();
    let request = format!(
        "GET /operator/api/events/stream HTTP/1.1\r\nhost: x\r\nx-vx11-token: {}\r\n\r\n",
        stack.token.expose()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert!(
        !closed_within(&mut stream, IDLE_TIMEOUT + MARGIN).await,
        "an open event stream was closed as idle"
    );
    stack.assert_no_token_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_are_closed_counted_and_logged_once() {
    let stack = Stack::start(&[("VX11_MAX_CONNECTIONS", "50")]);
    let mut held = connect_many(stack.gateway.addr, 50).await;
    // Let every worker accept what it holds before the next ones arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = connect_many(stack.gateway.addr, 200).await;
    let closed = count_closed(&mut refused, MARGIN).await;
    assert_eq!(closed, refused.len(), "connections past the cap were kept");

    let metrics = http_get(stack.gateway.metrics_addr, "/metrics").await;
    let count: f64 = metrics
        .lines()
        .find(|line| line.starts_with("vx11_connections_refused_total{listener=\"api\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no refused count in {metrics}"));
    assert!(count >= 200.0, "refused {count}");
    let warnings = stack
        .gateway
        .logs()
        .matches("connection limit reached")
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for 200 refusals"
    );

    // The attacker leaves: valid clients are served again.
    held.clear();
    let request = format!(
        "GET /operator/api/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-vx11-token: {}\r\n\r\n",
        stack.token.expose()
    );
    let mut status = None;
    for _ in 0..50 {
        status = status_of(stack.gateway.addr, &request).await.ok();
        if status == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(200));
    stack.assert_no_token_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_gets_431_and_a_second_gateway_cannot_share_the_port() {
    let stack = Stack::start(&[]);
    let big = format!(
        "GET /operator/api/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(status_of(stack.gateway.addr, &big).await.ok(), Some(431));

    // Started by hand: the harness's start would find the first gateway's /health.
    let dir = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(binary_path("vx11-gateway").unwrap())
        .env_clear()
        .env("VX11_TOKENS_DIR", dir.path())
        .env("VX11_GATEWAY_ADDR", stack.gateway.addr.to_string())
        .env("VX11_METRICS_ADDR", free_loopback_addr().to_string())
        .env("VX11_OPERATOR_BACKEND_URL", stack.backend.base_url())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("second.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(
        status.is_some_and(|status| !status.success()),
        "a second gateway ran on a port in use ({status:?}): {stderr}"
    );
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("VX11_GATEWAY_ADDR"),
        "{stderr}"
    );
}

/// `GET path` on `addr`; the whole answer as text.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}
