//! A real browser: headless Chromium (Debian's `chromium`, driven by `playwright-core`,
//! `tests/browser/`) on a page served from another origin than the gateway's, against the
//! real `vx11-gateway` and `vx11-operator-backend` binaries on loopback. The page opens an
//! EventSource on the gateway's event stream and posts chat messages with preflighted
//! `fetch`es (CORS); the backend is killed for 10 s and restarted on the same port, and the
//! same page, never reloaded, gets every event once. A page from an origin CORS does not
//! allow can neither read the stream nor post. A screenshot is kept in
//! `$VX11_ARTIFACTS_DIR` (default `<repo>/target-artifacts`).
//!
//! `tests/browser/setup.sh` installs what is missing (apt-get chromium, npm ci).

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vx11_tests::abuse::project_active_tokens;
use vx11_tests::services::{ServiceKind, ServiceProcess, free_loopback_addr};
use vx11_tokenset::TokenValue;

/// How long the backend stays down: longer than EventSource's own retry and the
/// gateway's connect timeout, the outage that used to end every page's stream.
const OUTAGE: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Chromium's path, once `tests/browser/setup.sh` installed what was missing.
fn set_up_browser() -> String {
    let output = Command::new("bash")
        .arg(repo().join("tests/browser/setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/browser/setup.sh");
    assert!(
        output.status.success(),
        "tests/browser/setup.sh failed ({})",
        output.status
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("setup.sh prints Chromium's path")
        .to_string()
}

/// One HTTP/1.1 exchange on a fresh connection: the status, the head's lines, the body.
fn exchange(addr: SocketAddr, request: &str) -> (u16, Vec<String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{request}Host: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines().map(str::to_string);
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    (status, lines.collect(), body.to_string())
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn has_allow_headers(head: &[String]) -> bool {
    head.iter()
        .any(|l| l.to_ascii_lowercase().starts_with("access-control-allow"))
}

/// Kills `pid` (the node script) if the test is still running after `limit`.
fn watchdog(pid: u32, limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
}

#[test]
fn a_cross_origin_page_keeps_its_event_stream_through_a_backend_outage() {
    let chromium = set_up_browser();
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = dir.path().join("tokens");
    let token = TokenValue::generate(32).unwrap();
    project_active_tokens(&tokens_dir, 1, &[("operator", &token)]).unwrap();
    let env = BTreeMap::from([(
        "VX11_TOKENS_DIR".to_string(),
        tokens_dir.display().to_string(),
    )]);

    let backend_addr = free_loopback_addr();
    let mut backend =
        ServiceProcess::start_at(ServiceKind::OperatorBackend, backend_addr, &env, dir.path())
            .unwrap();
    let (page_port, other_port) = (free_loopback_addr().port(), free_loopback_addr().port());
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let mut gateway_env = env.clone();
    gateway_env.extend([
        ("VX11_OPERATOR_BACKEND_URL".to_string(), backend.base_url()),
        ("VX11_CORS_ALLOWED_ORIGINS".to_string(), page_origin.clone()),
        ("VX11_STREAM_RETRY".to_string(), "1s".to_string()),
    ]);
    let gateway = ServiceProcess::start(ServiceKind::Gateway, &gateway_env, dir.path()).unwrap();

    let artifacts = std::env::var_os("VX11_ARTIFACTS_DIR")
        .map_or_else(|| repo().join("target-artifacts"), PathBuf::from);
    let script_log = dir.path().join("run.mjs.log");
    let mut script = Command::new("node")
        .arg(repo().join("tests/browser/run.mjs"))
        .env("VX11_GATEWAY_URL", gateway.base_url())
        .env("VX11_TEST_TOKEN", token.expose())
        .env("VX11_PAGE_PORT", page_port.to_string())
        .env("VX11_OTHER_PAGE_PORT", other_port.to_string())
        .env("VX11_CHROMIUM", &chromium)
        .env("VX11_ARTIFACTS_DIR", &artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&script_log).unwrap())
        .spawn()
        .expect("starting node tests/browser/run.mjs");
    watchdog(script.id(), Duration::from_secs(180));
    let mut to_script = script.stdin.take().unwrap();
    let from_script = BufReader::new(script.stdout.take().unwrap());

    let mut killed_at = None;
    let mut steps = Vec::new();
    for line in from_script.lines() {
        let line = line.unwrap();
        let step: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("run.mjs printed {line:?}"));
        let name = step["step"].as_str().unwrap().to_string();
        eprintln!("browser step: {name}");
        match name.as_str() {
            "live" => assert_eq!(step["chats"], serde_json::json!(["before-1", "before-2"])),
            "outage" => {
                backend.kill();
                killed_at = Some(Instant::now());
                assert!(
                    TcpStream::connect(backend_addr).is_err(),
                    "the backend's port is still open"
                );
                while_the_backend_is_down(gateway.addr, &page_origin, &token);
                writeln!(to_script, "down").unwrap();
            }
            "outage-seen" => {
                // The page could read the 502 of its post: it carries the CORS headers.
                assert_eq!(step["post"]["status"], 502, "{step}");
                assert!(
                    step["post"]["body"]
                        .as_str()
                        .unwrap()
                        .contains("backend_unavailable"),
                    "{step}"
                );
                assert_ne!(step["readyState"], 2, "EventSource gave up: {step}");
                std::thread::sleep(OUTAGE.saturating_sub(killed_at.unwrap().elapsed()));
                let restarted = dir.path().join("restarted");
                std::fs::create_dir_all(&restarted).unwrap();
                backend = ServiceProcess::start_at(
                    ServiceKind::OperatorBackend,
                    backend_addr,
                    &env,
                    &restarted,
                )
                .unwrap();
                writeln!(to_script, "up").unwrap();
            }
            "resumed" => every_event_once_without_a_reload(&step),
            "other-origin" => an_origin_not_allowed_reads_nothing(&step),
            "done" => {}
            other => panic!("unknown step {other}: {step}"),
        }
        steps.push(name);
    }
    let status = script.wait().unwrap();
    let log = std::fs::read_to_string(&script_log).unwrap_or_default();
    assert!(status.success(), "run.mjs failed ({status}):\n{log}");
    assert_eq!(
        steps,
        [
            "live",
            "outage",
            "outage-seen",
            "resumed",
            "other-origin",
            "done"
        ],
        "{log}"
    );
    let metrics = exchange(gateway.metrics_addr, "GET /metrics HTTP/1.1\r\n").2;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vx11_gateway_upstream_errors_total{")
                && l.contains("kind=\"unavailable\"")),
        "the outage is not counted in vx11_gateway_upstream_errors_total:\n{metrics}"
    );
    let screenshot = artifacts.join("browser-console.png");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 0);
    eprintln!("screenshot: {}", screenshot.display());
}

/// With the backend down: preflights are still answered (they never reach it), an event
/// stream request gets the outage stream with CORS headers, other requests the 502 JSON.
fn while_the_backend_is_down(gateway: SocketAddr, page_origin: &str, token: &TokenValue) {
    let (status, head, _) = exchange(
        gateway,
        &format!(
            "OPTIONS /operator/api/chat HTTP/1.1\r\nOrigin: {page_origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-vx11-token\r\n"
        ),
    );
    assert_eq!(status, 204, "{head:?}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some(page_origin)
    );
    let (status, head, body) = exchange(
        gateway,
        "OPTIONS /operator/api/chat HTTP/1.1\r\nOrigin: http://127.0.0.1:1\r\nAccess-Control-Request-Method: POST\r\n",
    );
    assert_eq!(status, 403, "{head:?}");
    assert!(!has_allow_headers(&head), "{head:?}");
    assert!(
        body.contains("cors_refused") && body.contains("VX11_CORS_ALLOWED_ORIGINS"),
        "{body}"
    );
    // Without Access-Control-Request-Method it is an ordinary request: the token is checked.
    let (status, head, body) = exchange(
        gateway,
        &format!("OPTIONS /operator/api/chat HTTP/1.1\r\nOrigin: {page_origin}\r\n"),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing_token"), "{body}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some(page_origin)
    );

    let (status, head, body) = exchange(
        gateway,
        &format!(
            "GET /operator/api/events/stream?follow=true HTTP/1.1\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\nOrigin: {page_origin}\r\nX-VX11-Token: {}\r\n",
            token.expose()
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some(page_origin)
    );
    assert!(
        body.starts_with("retry: 1000\nevent: backend_unavailable\ndata: {"),
        "{body}"
    );
    assert!(!body.contains("\nid:"), "{body}");
    let (status, _, body) = exchange(
        gateway,
        &format!(
            "GET /operator/api/health HTTP/1.1\r\nX-VX11-Token: {}\r\n",
            token.expose()
        ),
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("backend_unavailable"), "{body}");
}

/// The page's events after the outage: every chat message once and in order, ids only
/// growing, the outage events without an id of their own, the stream open again, and the
/// same page load throughout.
fn every_event_once_without_a_reload(step: &Value) {
    assert_eq!(step["sameLoad"], true, "the page was reloaded: {step}");
    assert_eq!(step["readyState"], 1, "the stream is not open: {step}");
    let collected = step["collected"].as_array().unwrap();
    let chats: Vec<&str> = collected
        .iter()
        .filter(|e| e["type"] == "chat")
        .map(|e| e["data"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        chats,
        ["before-1", "before-2", "after-1", "after-2"],
        "{step}"
    );
    let mut last_real: Option<u64> = None;
    let mut outage_events = 0;
    for event in collected {
        let id: u64 = event["id"].as_str().unwrap().parse().unwrap_or(0);
        if event["type"] == "backend_unavailable" {
            outage_events += 1;
            assert_eq!(
                Some(id),
                last_real,
                "an outage event moved Last-Event-ID: {event}"
            );
            assert_eq!(event["data"]["module"], "operator");
        } else {
            assert!(
                last_real.is_none_or(|last| id > last),
                "event {id} after {last_real:?}: repeated or out of order; {step}"
            );
            last_real = Some(id);
        }
    }
    assert!(outage_events >= 1, "{step}");
    assert!(step["opens"].as_u64().unwrap() >= 2, "{step}");
}

/// A page from an origin that is not allowed: EventSource fails for good (CORS), and its
/// preflighted post is refused before it is sent.
fn an_origin_not_allowed_reads_nothing(step: &Value) {
    assert_eq!(step["readyState"], 2, "{step}");
    assert_eq!(step["opens"], 0, "{step}");
    assert_eq!(step["collected"], 0, "{step}");
    assert!(
        step["post"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{step}"
    );
}
