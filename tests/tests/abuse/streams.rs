//! Abuse tests: event streams through the real gateway in front of the real operator
//! backend. Clients that open `/operator/api/events/stream` and never read: each must be
//! closed within the stall timeout (plus the time for the kernel buffers to fill), the
//! gateway's memory must stay bounded while they are open, and a valid client keeps
//! getting 200. Clients that open more streams than the caps allow are refused before the
//! backend hears of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vx11_tests::abuse::{
    ValidClient, open_sockets, parse_status, project_active_tokens, rss_bytes,
};
use vx11_tests::services::{ServiceKind, ServiceProcess, assert_no_value_in};
use vx11_tokenset::TokenValue;

/// A token directory with two tokens (names `operator` and `console`), the backend and the
/// gateway in front of it.
pub(crate) struct Stack {
    /// Holds the token directory and the logs for as long as the stack runs.
    _logs: tempfile::TempDir,
    pub backend: ServiceProcess,
    pub gateway: ServiceProcess,
    pub operator: TokenValue,
    pub console: TokenValue,
}

impl Stack {
    /// `gateway_env` on top of what the gateway needs to reach the backend.
    pub(crate) fn start(gateway_env: &[(&str, &str)]) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let tokens_dir = logs.path().join("tokens");
        let operator = TokenValue::generate(32).unwrap();
        let console = TokenValue::generate(32).unwrap();
        project_active_tokens(
            &tokens_dir,
            1,
            &[("operator", &operator), ("console", &console)],
        )
        .unwrap();
        let mut env = BTreeMap::from([(
            "VX11_TOKENS_DIR".to_string(),
            tokens_dir.display().to_string(),
        )]);
        let backend =
            ServiceProcess::start(ServiceKind::OperatorBackend, &env, logs.path()).unwrap();
        env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
        for (name, value) in gateway_env {
            env.insert((*name).into(), (*value).into());
        }
        let gateway = ServiceProcess::start(ServiceKind::Gateway, &env, logs.path()).unwrap();
        Self {
            _logs: logs,
            backend,
            gateway,
            operator,
            console,
        }
    }

    /// A client asking for `/operator/api/health` through the gateway every 100 ms.
    pub(crate) fn valid_client(&self) -> ValidClient {
        ValidClient::start(
            self.gateway.addr,
            "/operator/api/health",
            vec![("x-vx11-token".into(), self.operator.expose().to_owned())],
            Duration::from_millis(100),
        )
    }

    /// Posts `count` chat messages of `bytes` each straight to the backend.
    pub(crate) async fn publish(&self, count: usize, bytes: usize) {
        let http = reqwest::Client::new();
        let message = "x".repeat(bytes);
        for _ in 0..count {
            let response = http
                .post(format!("{}/operator/api/chat", self.backend.base_url()))
                .header("x-vx11-token", self.operator.expose())
                .json(&serde_json::json!({ "message": message }))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    }

    /// Neither service logged a token value.
    pub(crate) fn assert_logs_clean(&self) {
        for service in [&self.gateway, &self.backend] {
            assert_no_value_in(
                &format!("{:?}'s log", service.kind),
                &service.logs(),
                [self.operator.expose(), self.console.expose()],
            );
        }
    }
}

/// Opens `/operator/api/events/stream` with `token` (over h2c to the backend with
/// `accept`), with a small receive buffer, and returns the connection without reading.
async fn open_stream(addr: SocketAddr, token: &str, accept: bool) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
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

/// The status of the answer that starts on `stream` (reads only its first bytes).
async fn status_on(stream: &mut TcpStream) -> Option<u16> {
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    parse_status(&head)
}

/// Reads `stream` to its end; true when the end came within `limit`.
async fn ends_within(mut stream: TcpStream, limit: Duration) -> bool {
    let mut sink = vec![0u8; 256 * 1024];
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

/// Stalled streams at once, half over h2c to the backend and half over HTTP/1.1.
const STALLED: usize = 60;
/// `VX11_STREAM_STALL_TIMEOUT` of the gateway under test.
const STALL: Duration = Duration::from_secs(10);
/// What the gateway may hold for one stalled stream, on average over as many HTTP/1.1 as
/// h2c ones: at most `VX11_STREAM_BUFFER_BYTES` (64 KiB) of stream data, and the
/// connections' own buffers and state. Measured (debug build, 60 streams of one kind):
/// before the stall fix 128 KB per HTTP/1.1 stream and 280 KB per h2c one (204 KB on
/// average); after it 45 KB and 97–114 KB. Since HTTP/2 and TLS on the public port (+9 KB
/// per HTTP/1.1 stream) and response heads up to `VX11_MAX_RESPONSE_HEADER_BYTES` (16 KiB:
/// hyper's read buffer of the backend connection may grow to it, +17 KB), 71 KB and
/// 115–121 KB: 96 KB on average, which machines here vary by ±15 % around.
const BOUND_PER_STREAM: u64 = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_clients_are_closed_after_the_stall_timeout_and_memory_stays_bounded() {
    let stall = format!("{}s", STALL.as_secs());
    let stack = Stack::start(&[("VX11_STREAM_STALL_TIMEOUT", &stall), ("VX11_WORKERS", "2")]);
    // A history to replay into each stream (~8 MB): far more than the kernel buffers take.
    stack.publish(500, 16 * 1024).await;
    let valid = stack.valid_client();
    // Warm up: one stream read to its first bytes and closed, so allocator arenas and the
    // h2c connections exist before the baseline.
    for accept in [false, true] {
        let mut warm = open_stream(stack.gateway.addr, stack.operator.expose(), accept).await;
        assert_eq!(status_on(&mut warm).await, Some(200));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = stack.gateway.pid();
    let baseline = rss_bytes(pid).unwrap();

    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        stalled.push(open_stream(stack.gateway.addr, stack.operator.expose(), i % 2 == 0).await);
    }
    // The most the gateway held while every buffer on the way filled (the kernel's take
    // megabytes per stream first), up to just before the stall timeout.
    let mut held = 0;
    while opened.elapsed() < STALL - Duration::from_secs(1) {
        held = held.max(rss_bytes(pid).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = held.saturating_sub(baseline);
    eprintln!(
        "gateway RSS: {baseline} B before, {held} B with {STALLED} stalled streams: {} B per stream",
        growth / STALLED as u64
    );
    assert!(
        growth < BOUND_PER_STREAM * STALLED as u64,
        "{STALLED} stalled streams took {growth} B of gateway memory ({} B each; bound {BOUND_PER_STREAM})",
        growth / STALLED as u64
    );

    // Past the stall timeout (and a margin for the buffers to fill), every stalled stream
    // has been ended: reading it now reaches its end, rather than the replay going on.
    let margin = Duration::from_secs(4);
    tokio::time::sleep((STALL + margin).saturating_sub(opened.elapsed())).await;
    let ended = futures::future::join_all(
        stalled
            .into_iter()
            .map(|stream| ends_within(stream, Duration::from_secs(10))),
    )
    .await;
    let open = ended.iter().filter(|ended| !**ended).count();
    assert_eq!(
        open,
        0,
        "{open} of {STALLED} stalled streams still open after {:?}",
        STALL + margin
    );
    let sockets = open_sockets(pid);
    assert!(sockets < 20, "{sockets} sockets still open in the gateway");

    let report = valid.stop().await;
    assert!(
        report.ok > 0 && report.failed == 0,
        "valid client: {report:?}"
    );
    let metrics = reqwest::get(stack.gateway.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("vx11_gateway_stalled_streams_total {STALLED}")),
        "{metrics}"
    );
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_caps_are_refused_before_the_backend_hears_of_them() {
    let stack = Stack::start(&[
        ("VX11_MAX_STREAMS", "4"),
        ("VX11_MAX_STREAMS_PER_TOKEN", "3"),
        // Two workers: the caps hold for the process, not per worker.
        ("VX11_WORKERS", "2"),
    ]);
    let valid = stack.valid_client();
    let (operator, console) = (stack.operator.expose(), stack.console.expose());
    let addr = stack.gateway.addr;
    let mut open = Vec::new();
    for i in 0..3 {
        let mut stream = open_stream(addr, operator, i % 2 == 0).await;
        assert_eq!(status_on(&mut stream).await, Some(200), "stream {i}");
        open.push(stream);
    }
    let mut over_token = open_stream(addr, operator, true).await;
    assert_eq!(status_on(&mut over_token).await, Some(429));
    let mut other = open_stream(addr, console, true).await;
    assert_eq!(status_on(&mut other).await, Some(200));
    open.push(other);
    for accept in [true, false] {
        let mut over_total = open_stream(addr, console, accept).await;
        assert_eq!(status_on(&mut over_total).await, Some(503));
    }
    // The backend got the four streams and the one that did not announce itself (the
    // gateway learns it is a stream from the response), not the announced refused ones.
    let backend_streams = stack
        .backend
        .logs()
        .lines()
        .filter(|line| line.contains("\"/operator/api/events/stream\""))
        .count();
    assert_eq!(backend_streams, 5, "{}", stack.backend.logs());

    // A stream that ends gives its place back.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reopened = None;
    while Instant::now() < deadline {
        let mut stream = open_stream(addr, console, true).await;
        if status_on(&mut stream).await == Some(200) {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reopened.is_some(),
        "the closed stream's place was not given back"
    );
    let report = valid.stop().await;
    assert!(
        report.ok > 0 && report.failed == 0,
        "valid client: {report:?}"
    );
    stack.assert_logs_clean();
}
