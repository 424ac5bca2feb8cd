//! The express lane (`gateway/src/express/`) against the full path: the same requests, to a
//! gateway with the lane and to one without (`--express false`), in front of the same raw
//! backend, get the same bytes back (the `date` value aside), and the backend sees the same
//! request heads. The lane's counter tells which requests it answered, which it handed over
//! to the full path, and whose response it left to the full path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RunningGateway, TOKEN, gateway, raw_exchange};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use vx11_gateway::metrics::ExpressLabel;

type Answer = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// A backend speaking raw HTTP/1.1 with keep-alive: every request head is recorded and
/// answered with `answer(head)`; the connection is closed after an answer that says
/// `Connection: close`, or when the answer ends with [`CLOSE`] (which is not sent).
struct Backend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
}

/// Put at the end of an answer: close the connection after it, without saying so.
const CLOSE: &[u8] = b"<close>";

/// Put at the start of an answer: send it 2.5 s late (the tests' upstream timeout is 2 s).
const LATE: &[u8] = b"<late>";

impl Backend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Arc::new(|_: &str| ok_answer("{}"))));
        let (h, a, f) = (heads.clone(), accepted.clone(), answer.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, h.clone(), f.clone()));
            }
        });
        Self {
            addr,
            heads,
            accepted,
            answer,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn answer_with(&self, answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Arc::new(answer);
    }

    fn take_heads(&self) -> Vec<String> {
        std::mem::take(&mut *self.heads.lock().unwrap())
    }
}

async fn serve(mut stream: TcpStream, heads: Arc<Mutex<Vec<String>>>, answer: Arc<Mutex<Answer>>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        heads.lock().unwrap().push(head.clone());
        let answer = answer.lock().unwrap().clone();
        let mut reply = answer(&head);
        if reply.starts_with(LATE) {
            reply.drain(..LATE.len());
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let close_quietly = reply.ends_with(CLOSE);
        if close_quietly {
            reply.truncate(reply.len() - CLOSE.len());
        }
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        let says_close = String::from_utf8_lossy(&reply)
            .to_ascii_lowercase()
            .contains("\r\nconnection: close");
        if close_quietly || says_close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn ok_answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\ndate: Sun, 06 Dec 2026 10:00:00 GMT\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A gateway with the lane and one without, in front of `backend`.
async fn both(backend: &Backend, flags: &[&str]) -> (RunningGateway, RunningGateway) {
    let lane = gateway(&backend.url(), flags).await;
    let mut off = flags.to_vec();
    off.extend_from_slice(&["--express", "false"]);
    let full = gateway(&backend.url(), &off).await;
    (lane, full)
}

fn count(gateway: &RunningGateway, outcome: &'static str) -> u64 {
    gateway
        .metrics
        .express
        .get_or_create(&ExpressLabel { outcome })
        .get()
}

/// Messages (answers, or request heads) as they compare: each head's first line, then its
/// fields sorted by name (fields of one name keep their order: the full path's header map
/// keeps that, not the order between names), `date` values replaced (they change by the
/// second); bodies as they are.
fn undated(messages: &str) -> String {
    let mut out = String::new();
    let mut rest = messages;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let mut lines = head.split("\r\n");
        out.push_str(lines.next().unwrap_or(""));
        out.push_str("\r\n");
        let mut fields: Vec<String> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let name = name.to_ascii_lowercase();
                let value = if name == "date" { " <now>" } else { value };
                format!("{name}:{value}")
            })
            .collect();
        fields.sort_by(|a, b| a.split(':').next().cmp(&b.split(':').next()));
        for field in fields {
            out.push_str(&field);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        rest = &rest[end + 4..];
        // A body up to the next message's status line (answers here are on one connection).
        let next = rest.find("HTTP/1.").unwrap_or(rest.len());
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out.push_str(rest);
    out
}

/// `request` to both gateways on new connections: the two answers, undated, and the heads
/// the backend saw for each.
async fn through_both(
    backend: &Backend,
    lane: &RunningGateway,
    full: &RunningGateway,
    request: &str,
) -> ((String, Vec<String>), (String, Vec<String>)) {
    backend.take_heads();
    let via_lane = undated(&raw_exchange(lane.addr, request.as_bytes()).await);
    let lane_heads: Vec<String> = backend.take_heads().iter().map(|h| undated(h)).collect();
    let via_full = undated(&raw_exchange(full.addr, request.as_bytes()).await);
    let full_heads: Vec<String> = backend.take_heads().iter().map(|h| undated(h)).collect();
    ((via_lane, lane_heads), (via_full, full_heads))
}

fn get(extra: &str) -> String {
    format!(
        "GET /operator/api/thing?x=1 HTTP/1.1\r\nHost: gw.example\r\nX-VX11-Token: {TOKEN}\r\nUser-Agent: express-test\r\n{extra}Connection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn the_lane_answers_plain_requests_byte_for_byte_as_the_full_path() {
    let backend = Backend::start().await;
    let (lane, full) = both(&backend, &[]).await;
    let big = "x".repeat(300 * 1024);
    let answers: Vec<(&str, Vec<u8>)> = vec![
        ("json", ok_answer(r#"{"status":"ok"}"#)),
        (
            "capitalised names, hop-by-hop headers, no date",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Backend: A\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        (
            "chunked, with an extension and a trailer",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n".to_vec(),
        ),
        (
            "chunked and a length (the length is dropped)",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
        ),
        ("no content", b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n".to_vec()),
        (
            "an empty body",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-a: 1\r\n\r\n".to_vec(),
        ),
        (
            "an empty chunked body",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "not modified with a length",
            b"HTTP/1.1 304 Not Modified\r\netag: \"1\"\r\ncontent-length: 10\r\n\r\n".to_vec(),
        ),
        (
            "an error with a body",
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom".to_vec(),
        ),
        (
            "a status without a reason of its own",
            b"HTTP/1.1 599 Whatever\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        (
            "the backend closes after it",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ),
        ("a body larger than the buffers", ok_answer(&big)),
        (
            "a body cut short by the backend",
            [&b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"[..], CLOSE].concat(),
        ),
    ];
    for (what, answer) in answers {
        backend.answer_with(move |_| answer.clone());
        let answered = count(&lane, "answered");
        let ((via_lane, lane_heads), (via_full, full_heads)) =
            through_both(&backend, &lane, &full, &get("")).await;
        assert_eq!(via_lane, via_full, "{what}: the answers differ");
        assert_eq!(
            lane_heads, full_heads,
            "{what}: the backend saw other heads"
        );
        assert_eq!(lane_heads.len(), 1, "{what}: {lane_heads:?}");
        if what != "a body cut short by the backend" {
            assert_eq!(
                count(&lane, "answered"),
                answered + 1,
                "{what}: not the lane's"
            );
        }
    }
    assert_eq!(
        count(&full, "answered"),
        0,
        "--express false still took requests"
    );
    assert_eq!(
        count(&lane, "response_handed_over") + count(&lane, "handed_over"),
        0
    );
}

#[tokio::test]
async fn requests_the_lane_does_not_take_get_the_full_paths_answer() {
    let backend = Backend::start().await;
    let (lane, full) = both(&backend, &[]).await;
    let taken = [
        (
            "?token=",
            format!(
                "GET /operator/api/x?token={TOKEN} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "Bearer",
            format!(
                "GET /operator/api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "a client's X-Forwarded-* (replaced)",
            get(
                "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n",
            ),
        ),
        (
            "Connection: keep-alive, close",
            format!(
                "GET /operator/api HTTP/1.1\r\nHost: gw\r\nX-VX11-Token: {TOKEN}\r\nConnection: keep-alive, close\r\n\r\n"
            ),
        ),
    ];
    let not_taken = [
        (
            "no token",
            "GET /operator/api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".to_owned(),
        ),
        (
            "a wrong token",
            get("").replace(TOKEN, "vx11-not-a-token-of-the-set"),
        ),
        ("HEAD", get("").replace("GET ", "HEAD ")),
        (
            "POST with a body",
            format!(
                "POST /operator/api/chat HTTP/1.1\r\nHost: gw\r\nX-VX11-Token: {TOKEN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            ),
        ),
        (
            "a GET with a chunked body",
            get("Transfer-Encoding: chunked\r\n").replace("\r\n\r\n", "\r\n\r\n0\r\n\r\n"),
        ),
        (
            "an event stream asked for",
            get("Accept: text/event-stream\r\n"),
        ),
        (
            "an upgrade",
            get(
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ),
        ),
        ("TE: trailers", get("TE: trailers\r\n")),
        ("Expect", get("Expect: 100-continue\r\n")),
        ("two Hosts", get("Host: other\r\n")),
        (
            "a header named by Connection",
            get("X-Private: 1\r\nConnection: x-private\r\n"),
        ),
        (
            "a dot-segment",
            get("").replace("/operator/api/thing", "/operator/api/../thing"),
        ),
        (
            "an encoded slash",
            get("").replace("/operator/api/thing", "/operator/api/a%2fb"),
        ),
        ("an unknown module", get("").replace("/operator/", "/nope/")),
        (
            "outside /<module>/api",
            get("").replace("/operator/api/thing", "/health"),
        ),
        ("HTTP/1.0", get("").replace("HTTP/1.1\r\n", "HTTP/1.0\r\n")),
        ("not HTTP", "GARBAGE\r\n\r\n".to_owned()),
        (
            "an h2c preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
        ),
    ];
    for (what, request) in taken {
        let answered = count(&lane, "answered");
        let ((via_lane, lane_heads), (via_full, full_heads)) =
            through_both(&backend, &lane, &full, &request).await;
        assert!(
            via_lane.starts_with("HTTP/1.1 200 OK\r\n"),
            "{what}: {via_lane}"
        );
        assert_eq!(via_lane, via_full, "{what}: the answers differ");
        assert_eq!(
            lane_heads, full_heads,
            "{what}: the backend saw other heads"
        );
        assert_eq!(
            count(&lane, "answered"),
            answered + 1,
            "{what}: not the lane's"
        );
    }
    for (what, request) in not_taken {
        let handed = count(&lane, "handed_over");
        let ((via_lane, lane_heads), (via_full, full_heads)) =
            through_both(&backend, &lane, &full, &request).await;
        assert_eq!(via_lane, via_full, "{what}: the answers differ");
        assert_eq!(
            lane_heads, full_heads,
            "{what}: the backend saw other heads"
        );
        assert_eq!(
            count(&lane, "handed_over"),
            handed + 1,
            "{what}: not handed over"
        );
    }
    assert_eq!(count(&lane, "response_handed_over"), 0);
}

#[tokio::test]
async fn responses_the_lane_does_not_take_are_answered_by_the_full_path_sent_once() {
    let backend = Backend::start().await;
    let (lane, full) = both(&backend, &["--max-response-header-bytes", "8192"]).await;
    let big_head = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "b".repeat(9000)
    );
    let answers: Vec<(&str, Vec<u8>)> = vec![
        (
            "an event stream nobody announced",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 12\r\n\r\ndata: hi\r\n\r\n".to_vec(),
        ),
        (
            "a redirect to the backend's own URL",
            b"HTTP/1.1 302 Found\r\nlocation: http://BACKEND/operator/api/y\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        (
            "a body to the end of the connection",
            [&b"HTTP/1.1 200 OK\r\n\r\nuntil the end"[..], CLOSE].concat(),
        ),
        ("HTTP/1.0", [&b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"[..], CLOSE].concat()),
        ("a head over the limit", big_head.into_bytes()),
    ];
    let authority = backend.addr.to_string();
    for (what, answer) in answers {
        let answer = String::from_utf8(answer)
            .unwrap()
            .replace("BACKEND", &authority);
        backend.answer_with(move |_| answer.clone().into_bytes());
        let left = count(&lane, "response_handed_over");
        let ((via_lane, lane_heads), (via_full, full_heads)) =
            through_both(&backend, &lane, &full, &get("")).await;
        assert_eq!(via_lane, via_full, "{what}: the answers differ");
        // Sent once, by the lane; the full path read the response.
        assert_eq!(
            lane_heads, full_heads,
            "{what}: the backend saw other heads"
        );
        assert_eq!(lane_heads.len(), 1, "{what}: {lane_heads:?}");
        assert_eq!(count(&lane, "response_handed_over"), left + 1, "{what}");
    }
}

#[tokio::test]
async fn pipelined_and_kept_alive_requests_are_answered_in_order() {
    let backend = Backend::start().await;
    let (lane, full) = both(&backend, &[]).await;
    backend.answer_with(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        ok_answer(&path)
    });
    let one = |n: usize, last: bool| {
        format!(
            "GET /operator/api/{n} HTTP/1.1\r\nHost: gw\r\nX-VX11-Token: {TOKEN}\r\n{}\r\n",
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    // Three requests in one write, a fourth (handed over: HEAD) and a fifth after it.
    let pipelined = [
        one(1, false),
        one(2, false),
        one(3, false),
        one(4, false).replace("GET ", "HEAD "),
        one(5, true),
    ]
    .concat();
    let ((via_lane, _), (via_full, _)) = through_both(&backend, &lane, &full, &pipelined).await;
    assert_eq!(via_lane, via_full);
    for n in [1, 2, 3, 5] {
        assert!(
            via_lane.contains(&format!("/operator/api/{n}")),
            "{via_lane}"
        );
    }
    assert_eq!(count(&lane, "answered"), 3);
    assert_eq!(count(&lane, "handed_over"), 1);

    // One at a time on a kept connection: one backend connection (at most a new one, the
    // lane's pool may have one from above) serves them all.
    let accepted = backend.accepted.load(Ordering::SeqCst);
    let mut client = TcpStream::connect(lane.addr).await.unwrap();
    for n in 0..20 {
        client.write_all(one(n, false).as_bytes()).await.unwrap();
        let answer = read_answer(&mut client).await;
        assert!(answer.ends_with(&format!("/operator/api/{n}")), "{answer}");
    }
    assert!(backend.accepted.load(Ordering::SeqCst) <= accepted + 1);
}

#[tokio::test]
async fn a_backend_connection_closed_while_idle_is_replaced_without_an_error() {
    let backend = Backend::start().await;
    let lane = gateway(&backend.url(), &[]).await;
    // Closes every connection after its answer, without saying so.
    backend.answer_with(|_| [ok_answer("{}"), CLOSE.to_vec()].concat());
    let mut client = TcpStream::connect(lane.addr).await.unwrap();
    for n in 0..5 {
        client
            .write_all(
                format!(
                    "GET /operator/api/{n} HTTP/1.1\r\nHost: gw\r\nX-VX11-Token: {TOKEN}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_answer(&mut client).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK"),
            "request {n}: {answer}"
        );
        // Let the close reach the gateway's idle connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 5);
    assert_eq!(count(&lane, "answered"), 5);
    assert_eq!(count(&lane, "response_handed_over"), 0);
}

#[tokio::test]
async fn a_silent_backend_gets_the_same_504_from_the_lane() {
    let backend = Backend::start().await;
    let (lane, full) = both(&backend, &[]).await;
    backend.answer_with(|_| [LATE, &ok_answer("late")].concat());
    let ((via_lane, _), (via_full, _)) = through_both(&backend, &lane, &full, &get("")).await;
    assert!(
        via_lane.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
        "{via_lane}"
    );
    assert_eq!(via_lane, via_full);
    assert_eq!(count(&lane, "answered"), 1);
}

/// Reads one answer with a `content-length` from `client`: head and body, as text.
async fn read_answer(client: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("no answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_backend_that_closes_without_answering_gets_the_same_502() {
    let backend = Backend::start().await;
    let (lane, full) = both(&backend, &[]).await;
    backend.answer_with(|_| CLOSE.to_vec());
    let ((via_lane, lane_heads), (via_full, _)) =
        through_both(&backend, &lane, &full, &get("")).await;
    assert!(
        via_lane.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{via_lane}"
    );
    assert_eq!(via_lane, via_full);
    assert_eq!(lane_heads.len(), 1, "{lane_heads:?}");
    assert_eq!(count(&lane, "response_handed_over"), 1);
}
