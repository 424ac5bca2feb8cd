//! The fidelity matrix: a real upstream nobody here wrote (go-httpbin, built from the Go
//! module proxy by `tests/upstream/build.sh`) behind the real gateway. Each row sends the
//! same request straight to go-httpbin and through the gateway (raw HTTP/1.1 on loopback, so
//! that framing, trailers and the timing of bytes show) and compares what a client sees:
//! status, end-to-end headers, body. What a proxy legitimately changes is listed in
//! [`CHANGED_BY_PROXY`] and in the rows that expect a difference, each with its reason.
//! The matrix is printed (`cargo test -p vx11-tests --test fidelity -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vx11_tests::abuse::project_active_tokens;
use vx11_tests::services::{ServiceKind, ServiceProcess, free_loopback_addr, http_status};
use vx11_tokenset::TokenValue;

/// Response headers a proxy changes, and why.
const CHANGED_BY_PROXY: [(&str, &str); 4] = [
    ("date", "each answer is dated when it is sent"),
    (
        "transfer-encoding",
        "framing is per connection (hop-by-hop): the gateway may frame a body differently",
    ),
    (
        "content-length",
        "framing: compared by the body itself (a chunked answer has none)",
    ),
    ("connection", "hop-by-hop: per connection"),
];

/// Echoed request headers the gateway sets (checked in their own rows) or must not pass
/// on (hop-by-hop: `Connection`, the header it names here, `Proxy-Connection`).
const SET_BY_GATEWAY: [&str; 6] = [
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Connection",
    "Proxy-Connection",
    "X-Hop",
];

/// go-httpbin on a loopback port, serving under `prefix`; killed on drop.
struct HttpBin {
    addr: SocketAddr,
    child: Child,
}

impl HttpBin {
    fn start(prefix: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/upstream/build.sh");
        let out = Command::new("bash")
            .arg(script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "{script} failed");
        let binary = PathBuf::from(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        );
        let addr = free_loopback_addr();
        let child = Command::new(binary)
            .args(["-host", "127.0.0.1", "-port", &addr.port().to_string()])
            .args(["-prefix", prefix, "-log-level", "WARN"])
            // Requests for 20 KiB response heads have 20 KiB request lines.
            .args(["-srv-max-header-bytes", "1048576"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Killed and reaped on drop, a failed start included.
        let started = Self { addr, child };
        for _ in 0..250 {
            if http_status(addr, &format!("{prefix}/get")) == Some(200) {
                return started;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("go-httpbin did not answer on {addr}");
    }
}

impl Drop for HttpBin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client saw of one answer.
#[derive(Debug, Default, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    /// Reads of the connection that brought body bytes (more than one: bytes came before
    /// the end).
    body_reads: usize,
    /// Body bytes in the first read that had any.
    first_read_body: usize,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn compared_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, _)| {
                !CHANGED_BY_PROXY
                    .iter()
                    .any(|(c, _)| n.eq_ignore_ascii_case(c))
            })
            // A list header on two lines is the same as on one, comma-joined (RFC 9110 §5.3).
            .flat_map(|(n, v)| {
                let n = n.to_ascii_lowercase();
                let items: Vec<String> = if n == "trailer" {
                    v.split(',').map(|i| i.trim().to_owned()).collect()
                } else {
                    vec![v.clone()]
                };
                items.into_iter().map(move |i| (n.clone(), i))
            })
            .collect();
        headers.sort();
        headers
    }

    /// The body, with a JSON echo's gateway-set headers left out (each line of a stream of
    /// JSON lines too), and an event stream's timestamps (when each event was made).
    fn compared_body(&self) -> Vec<u8> {
        if self
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"))
        {
            let text = String::from_utf8_lossy(&self.body);
            return text
                .split("\"timestamp\":")
                .map(|part| part.trim_start_matches(|c: char| c.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join("T")
                .into_bytes();
        }
        if self.body.contains(&b'\n')
            && self.body.first() == Some(&b'{')
            && serde_json::from_slice::<Value>(&self.body).is_err()
        {
            let lines: Vec<Vec<u8>> = self
                .body
                .split(|b| *b == b'\n')
                .map(|line| {
                    Reply {
                        body: line.to_vec(),
                        ..Reply::default()
                    }
                    .compared_body()
                })
                .collect();
            return lines.join(&b'\n');
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(mut json) => {
                if let Some(headers) = json.get_mut("headers").and_then(Value::as_object_mut) {
                    for name in SET_BY_GATEWAY {
                        headers.remove(name);
                    }
                }
                serde_json::to_vec(&json).unwrap()
            }
            Err(_) => self.body.clone(),
        }
    }

    fn echoed(&self, name: &str) -> Option<Value> {
        let json: Value = serde_json::from_slice(&self.body).ok()?;
        json["headers"].get(name).cloned()
    }

    fn summary(&self) -> String {
        let mut s = format!("{} {}B", self.status, self.body.len());
        if !self.trailers.is_empty() {
            s.push_str(&format!(" +{} trailer", self.trailers.len()));
        }
        if self.body_reads > 1 {
            s.push_str(&format!(" in {} reads", self.body_reads));
        }
        s
    }
}

/// One request, as bytes after the request line's path.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

fn req(method: &'static str, path: impl Into<String>) -> Req {
    Req {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        chunked: false,
    }
}

impl Req {
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

/// Sends `req` to `addr` on a new connection (`Connection: close`) and reads the answer to
/// the end.
async fn exchange(addr: SocketAddr, token: &str, req: &Req) -> Reply {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Vx11-Token: {token}\r\n",
        req.method, req.path
    );
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut bytes = Vec::new();
    if req.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        bytes.extend_from_slice(head.as_bytes());
        for piece in req.body.chunks(1000) {
            bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            bytes.extend_from_slice(piece);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        if !req.body.is_empty() || matches!(req.method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        head.push_str("\r\n");
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(&req.body);
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut raw = Vec::new();
    let mut head_len = None;
    let mut reply = Reply::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => panic!("no answer within 20 s to {} {}", req.method, req.path),
        };
        let before = raw.len();
        raw.extend_from_slice(&buf[..n]);
        if head_len.is_none() {
            head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(h) = head_len {
            let body_now = raw.len().saturating_sub(h.max(before));
            if body_now > 0 {
                reply.body_reads += 1;
                if reply.body_reads == 1 {
                    reply.first_read_body = body_now;
                }
            }
        }
    }
    let h = head_len.unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..h]).into_owned();
    let mut lines = head.split("\r\n");
    reply.status = lines.next().unwrap()[9..12].parse().unwrap();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line.split_once(':').unwrap();
        reply
            .headers
            .push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let rest = &raw[h..];
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        let (body, trailers) = dechunk(rest);
        reply.body = body;
        reply.trailers = trailers;
    } else {
        reply.body = rest.to_vec();
    }
    reply
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, Vec<(String, String)>) {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    let trailers = String::from_utf8_lossy(rest)
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (body, trailers)
}

/// The stack: two go-httpbins (one as module `httpbin`, one as the operator backend, which
/// does not speak h2c) and a gateway in front.
struct Stack {
    _dir: tempfile::TempDir,
    httpbin: HttpBin,
    operator: HttpBin,
    gateway: ServiceProcess,
    token: String,
}

impl Stack {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        let value = TokenValue::generate(32).unwrap();
        project_active_tokens(&tokens, 1, &[("fidelity", &value)]).unwrap();
        let httpbin = HttpBin::start("/httpbin/api");
        let operator = HttpBin::start("/operator/api");
        let env = BTreeMap::from([
            ("VX11_TOKENS_DIR".to_string(), tokens.display().to_string()),
            ("VX11_POLICY_MODE".into(), "full".into()),
            (
                "VX11_MODULES".into(),
                format!("httpbin=http://{}", httpbin.addr),
            ),
            (
                "VX11_OPERATOR_BACKEND_URL".into(),
                format!("http://{}", operator.addr),
            ),
            // The test client is the proxy in front: its X-Forwarded-* are kept.
            ("VX11_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
            ("VX11_WORKERS".into(), "2".into()),
            ("VX11_MAX_HEADER_BYTES".into(), "131072".into()),
        ]);
        let gateway = ServiceProcess::start(ServiceKind::Gateway, &env, dir.path()).unwrap();
        Self {
            _dir: dir,
            httpbin,
            operator,
            gateway,
            token: value.expose().to_owned(),
        }
    }

    async fn both(&self, r: &Req) -> (Reply, Reply) {
        let direct = exchange(self.httpbin.addr, &self.token, r).await;
        let via = exchange(self.gateway.addr, &self.token, r).await;
        (direct, via)
    }
}

/// How a row judges the two answers.
type Expect = fn(&Stack, &Reply, &Reply) -> Result<(), String>;

/// Same status, headers (but [`CHANGED_BY_PROXY`]), body (but the gateway's echoed
/// `X-Forwarded-*`) and trailers.
fn same(_: &Stack, d: &Reply, v: &Reply) -> Result<(), String> {
    if d.status != v.status {
        return Err(format!("status {} vs {}", d.status, v.status));
    }
    let (dh, vh) = (d.compared_headers(), v.compared_headers());
    if dh != vh {
        let only_d: Vec<_> = dh.iter().filter(|h| !vh.contains(h)).collect();
        let only_v: Vec<_> = vh.iter().filter(|h| !dh.contains(h)).collect();
        return Err(format!(
            "headers: direct only {only_d:?}, gateway only {only_v:?}"
        ));
    }
    if d.compared_body() != v.compared_body() {
        return Err(format!(
            "body differs: {:?} vs {:?}",
            String::from_utf8_lossy(&d.body[..d.body.len().min(200)]),
            String::from_utf8_lossy(&v.body[..v.body.len().min(200)])
        ));
    }
    // Server-Timing's value is how long the answer took: names compared, not values.
    let timing = |r: &Reply| -> Vec<(String, String)> {
        r.trailers
            .iter()
            .map(|(n, v)| {
                let v = if n == "server-timing" {
                    String::new()
                } else {
                    v.clone()
                };
                (n.clone(), v)
            })
            .collect()
    };
    if timing(d) != timing(v) {
        return Err(format!("trailers {:?} vs {:?}", d.trailers, v.trailers));
    }
    Ok(())
}

fn streamed(s: &Stack, d: &Reply, v: &Reply) -> Result<(), String> {
    same(s, d, v)?;
    if v.body_reads < 2 || v.first_read_body >= v.body.len() {
        return Err(format!(
            "through the gateway the body came at once ({} reads, {} of {} bytes first)",
            v.body_reads,
            v.first_read_body,
            v.body.len()
        ));
    }
    Ok(())
}

fn forwarded_headers(s: &Stack, d: &Reply, v: &Reply) -> Result<(), String> {
    same(s, d, v)?;
    let xff = v.echoed("X-Forwarded-For");
    if xff != Some(serde_json::json!(["1.1.1.1, 2.2.2.2, 127.0.0.1"])) {
        return Err(format!("X-Forwarded-For through the gateway: {xff:?}"));
    }
    let proto = v.echoed("X-Forwarded-Proto");
    if proto != Some(serde_json::json!(["http"])) {
        return Err(format!("X-Forwarded-Proto: {proto:?}"));
    }
    if v.echoed("Proxy-Connection").is_some() || v.echoed("X-Hop").is_some() {
        return Err("a hop-by-hop header reached the backend".into());
    }
    if d.echoed("Proxy-Connection").is_none() {
        return Err("go-httpbin did not echo Proxy-Connection sent directly".into());
    }
    Ok(())
}

/// Compressed bodies pass untouched: same headers (`Content-Encoding` included), a body
/// still compressed (its first bytes: gzip's magic or zlib's header). The bytes themselves
/// differ, as they compress the echo of the gateway's `X-Forwarded-*`.
fn encoded(s: &Stack, d: &Reply, v: &Reply) -> Result<(), String> {
    let without_body = |r: &Reply| Reply {
        body: Vec::new(),
        ..r.clone()
    };
    same(s, &without_body(d), &without_body(v))?;
    let magic = |r: &Reply| r.body.first().copied();
    if magic(d) != magic(v) || !matches!(magic(v), Some(0x1f | 0x78)) {
        return Err(format!("body starts {:?} vs {:?}", magic(d), magic(v)));
    }
    Ok(())
}

/// The backend's absolute `Location` is the gateway's through it.
fn rewritten_location(s: &Stack, d: &Reply, v: &Reply) -> Result<(), String> {
    let expected = d
        .header("location")
        .map(|l| l.replace(&s.httpbin.addr.to_string(), &s.gateway.addr.to_string()));
    if v.header("location") != expected.as_deref() {
        return Err(format!(
            "Location {:?}, expected {expected:?}",
            v.header("location")
        ));
    }
    if !d.header("location").unwrap_or("").starts_with("http://") {
        return Err("direct Location is not absolute".into());
    }
    if d.status != v.status {
        return Err(format!("status {} vs {}", d.status, v.status));
    }
    Ok(())
}

/// A head over the gateway's limits: 200 direct, `502 upstream_response_too_large` naming
/// the setting through the gateway (a deliberate difference).
fn too_large(_: &Stack, d: &Reply, v: &Reply) -> Result<(), String> {
    let body = String::from_utf8_lossy(&v.body);
    if d.status == 200
        && v.status == 502
        && body.contains("upstream_response_too_large")
        && body.contains("VX11_MAX_RESPONSE_HEADER")
    {
        Ok(())
    } else {
        Err(format!(
            "{} direct, {} {body} through the gateway",
            d.status, v.status
        ))
    }
}

fn big(n: usize) -> String {
    "v".repeat(n)
}

fn matrix() -> Vec<(&'static str, Req, Expect)> {
    let p = "/httpbin/api";
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let large: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let many_headers: String = (0..300)
        .map(|i| format!("H{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    vec![
        ("GET", req("GET", format!("{p}/get")), same),
        ("HEAD", req("HEAD", format!("{p}/get")), same),
        (
            "POST json",
            req("POST", format!("{p}/post"))
                .header("Content-Type", "application/json")
                .body(r#"{"a":[1,2],"b":"é"}"#),
            same,
        ),
        (
            "PUT form",
            req("PUT", format!("{p}/put"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("a=1&a=2&b=x%20y"),
            same,
        ),
        (
            "PATCH binary",
            req("PATCH", format!("{p}/patch"))
                .header("Content-Type", "application/octet-stream")
                .body(binary),
            same,
        ),
        ("DELETE", req("DELETE", format!("{p}/delete")), same),
        (
            // A plain OPTIONS is proxied; a CORS preflight (with
            // Access-Control-Request-Method) is the gateway's own to answer (gateway/tests/cors.rs).
            "OPTIONS",
            req("OPTIONS", format!("{p}/anything")).header("Origin", "http://a.example"),
            same,
        ),
        (
            "query repeated+encoded",
            req("GET", format!("{p}/get?a=1&a=2&b=%20x%2Fy&c=%E2%9C%93&d=")),
            same,
        ),
        (
            "headers multi + X-Forwarded-*",
            req("GET", format!("{p}/headers"))
                .header("X-Multi", "a")
                .header("X-Multi", "b")
                .header("X-Forwarded-For", "1.1.1.1")
                .header("X-Forwarded-For", "2.2.2.2")
                .header("Proxy-Connection", "keep-alive")
                .header("Connection", "X-Hop")
                .header("X-Hop", "1"),
            forwarded_headers,
        ),
        (
            "chunked upload",
            req("POST", format!("{p}/post"))
                .header("Content-Type", "text/plain")
                .body(big(5000))
                .chunked(),
            same,
        ),
        (
            "large body 300 KiB",
            req("POST", format!("{p}/post"))
                .header("Content-Type", "application/octet-stream")
                .body(large),
            same,
        ),
        ("status 200", req("GET", format!("{p}/status/200")), same),
        ("status 201", req("GET", format!("{p}/status/201")), same),
        ("status 204", req("GET", format!("{p}/status/204")), same),
        ("status 304", req("GET", format!("{p}/status/304")), same),
        ("status 404", req("GET", format!("{p}/status/404")), same),
        ("status 418", req("GET", format!("{p}/status/418")), same),
        ("status 500", req("GET", format!("{p}/status/500")), same),
        ("status 503", req("GET", format!("{p}/status/503")), same),
        (
            "redirect relative",
            req("GET", format!("{p}/relative-redirect/2")),
            same,
        ),
        (
            "redirect-to relative",
            req(
                "GET",
                format!("{p}/redirect-to?url=/httpbin/api/get&status_code=307"),
            ),
            same,
        ),
        (
            "redirect absolute",
            req("GET", format!("{p}/absolute-redirect/2")),
            rewritten_location,
        ),
        (
            "Accept-Encoding forwarded",
            req("GET", format!("{p}/headers")).header("Accept-Encoding", "gzip, deflate, br"),
            same,
        ),
        (
            "gzip",
            req("GET", format!("{p}/gzip")).header("Accept-Encoding", "gzip, deflate, br"),
            encoded,
        ),
        (
            "deflate",
            req("GET", format!("{p}/deflate")).header("Accept-Encoding", "gzip, deflate, br"),
            encoded,
        ),
        (
            "brotli",
            req("GET", format!("{p}/brotli")).header("Accept-Encoding", "br"),
            same,
        ),
        ("stream/5", req("GET", format!("{p}/stream/5")), same),
        (
            "drip (delays)",
            req("GET", format!("{p}/drip?duration=1&numbytes=5&delay=0")),
            streamed,
        ),
        // With `TE: trailers`: without it hyper's HTTP/1.1 server drops a response's trailers
        // (as RFC 9112 §7.1.2 lets a recipient that did not ask for them), and go-httpbin
        // sends Server-Timing as one.
        (
            "sse",
            req("GET", format!("{p}/sse?count=3&duration=600ms"))
                .header("Accept", "text/event-stream")
                .header("TE", "trailers"),
            streamed,
        ),
        (
            "response head 12 KiB",
            req(
                "GET",
                format!("{p}/response-headers?X-Big={}", big(12 * 1024)),
            ),
            same,
        ),
        (
            "response head 20 KiB",
            req(
                "GET",
                format!("{p}/response-headers?X-Big={}", big(20 * 1024)),
            ),
            too_large,
        ),
        (
            "300 response headers",
            req("GET", format!("{p}/response-headers?{many_headers}")),
            too_large,
        ),
        (
            "trailers",
            req("GET", format!("{p}/trailers?X-Sum=abc&X-Other=1")).header("TE", "trailers"),
            same,
        ),
        (
            "response-headers multi",
            req(
                "GET",
                format!("{p}/response-headers?A=1&A=2&Cache-Control=no-store"),
            ),
            same,
        ),
        (
            "cookies set",
            req("GET", format!("{p}/cookies/set?k=v&k2=v2")),
            same,
        ),
        (
            "cookies sent",
            req("GET", format!("{p}/cookies")).header("Cookie", "a=1; b=2"),
            same,
        ),
        (
            "range",
            req("GET", format!("{p}/range/100")).header("Range", "bytes=10-19"),
            same,
        ),
        (
            "etag 304",
            req("GET", format!("{p}/etag/abc")).header("If-None-Match", "\"abc\""),
            same,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_proxies_go_httpbin_as_a_client_sees_it_directly() {
    let stack = Stack::start();
    let mut failed = Vec::new();
    println!(
        "\n{:<32} {:<28} {:<28} verdict",
        "row", "direct", "through gateway"
    );
    for (name, r, expect) in matrix() {
        let (d, v) = stack.both(&r).await;
        let verdict = expect(&stack, &d, &v);
        println!(
            "{:<32} {:<28} {:<28} {}",
            name,
            d.summary(),
            v.summary(),
            match &verdict {
                Ok(()) => "ok".to_string(),
                Err(why) => format!("DIFFERS: {why}"),
            }
        );
        if let Err(why) = verdict {
            failed.push(format!("{name}: {why}"));
        }
    }
    // The two heads over the limits are counted as their own kind, not as a backend down.
    let metrics = reqwest::get(stack.gateway.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let too_large = metrics.lines().find(|l| {
        l.starts_with("vx11_gateway_upstream_errors_total") && l.contains("response_too_large")
    });
    assert_eq!(
        too_large.and_then(|l| l.rsplit(' ').next()),
        Some("2"),
        "{metrics}"
    );
    // The warn line names the module and limits, never a header's value. (The access line
    // has the request's URI, whose query asked for the headers.)
    let logs = stack.gateway.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("response head is over the limits"))
        .collect();
    assert_eq!(warned.len(), 2, "{logs}");
    assert!(
        warned
            .iter()
            .all(|l| !l.contains("vvvvvvvv") && !l.contains("H299")),
        "a response header reached the log: {warned:?}"
    );
    assert!(
        failed.is_empty(),
        "{} rows differ:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// `operator` is in `VX11_H2C_STREAMS` by default; its backend here is go-httpbin, which
/// speaks no h2c: the event stream falls back to HTTP/1.1 (the failed request retried), is
/// remembered, and logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_to_a_backend_without_h2c_falls_back_to_http1_once() {
    let stack = Stack::start();
    let r = req("GET", "/operator/api/sse?count=2&duration=200ms")
        .header("Accept", "text/event-stream")
        .header("TE", "trailers");
    for round in 0..4 {
        let direct = exchange(stack.operator.addr, &stack.token, &r).await;
        let via = exchange(stack.gateway.addr, &stack.token, &r).await;
        println!(
            "h2c fallback round {round}: direct {}, gateway {}",
            direct.summary(),
            via.summary()
        );
        same(&stack, &direct, &via).unwrap_or_else(|why| panic!("round {round}: {why}"));
    }
    let logs = stack.gateway.logs();
    let lines = logs.matches("does not speak h2c").count();
    // Once per backend for the process (both workers share what they learnt).
    assert_eq!(lines, 1, "{logs}");
}

/// go-httpbin's `/websocket/echo`, directly and through the gateway, with a real WebSocket
/// client: the upgrade (101) and a text and a binary message echoed. Needs the gateway's
/// WebSocket tunnel (`gateway/src/websocket.rs`); without it the gateway strips `Upgrade`
/// and go-httpbin answers 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_works_through_the_gateway_as_directly() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let stack = Stack::start();
    let mut seen = Vec::new();
    for (label, addr) in [
        ("direct", stack.httpbin.addr),
        ("through gateway", stack.gateway.addr),
    ] {
        let mut request = format!("ws://{addr}/httpbin/api/websocket/echo")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("x-vx11-token", stack.token.parse().unwrap());
        let (mut socket, response) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(error) => {
                println!("websocket {label}: {error}");
                seen.push((label, format!("{error}")));
                continue;
            }
        };
        socket.send(Message::text("hello vx11")).await.unwrap();
        socket
            .send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        let mut echoed = Vec::new();
        for _ in 0..2 {
            let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("an echo within 5 s")
                .expect("the socket stays open")
                .unwrap();
            echoed.push(message);
        }
        let _ = socket.close(None).await;
        let outcome = format!("{} {echoed:?}", response.status().as_u16());
        println!("websocket {label}: {outcome}");
        seen.push((label, outcome));
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "direct vs through the gateway: {seen:?}"
    );
    assert!(seen[0].1.starts_with("101"), "{seen:?}");
}
