//! The real gateway in front of a real `vx11-operator-backend`, spoken to by curl, h2load
//! and openssl as clients would: HTTP/2 with prior knowledge in the clear, h2 and HTTP/1.1
//! over TLS (`VX11_TLS_DIR`), and a certificate rotated on disk the way kubelet updates a
//! `kubernetes.io/tls` Secret volume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vx11_tests::abuse::project_active_tokens;
use vx11_tests::eventually;
use vx11_tests::services::{ServiceKind, ServiceProcess};
use vx11_tokenset::TokenValue;

/// A backend, a plain gateway and a TLS gateway in front of it, one token.
struct Stack {
    dir: tempfile::TempDir,
    token: TokenValue,
    _backend: ServiceProcess,
    plain: ServiceProcess,
    tls: ServiceProcess,
}

impl Stack {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = TokenValue::generate(32).unwrap();
        project_active_tokens(&dir.path().join("tokens"), 1, &[("operator", &token)]).unwrap();
        project_pair(&dir.path().join("tls"), 1, &pair("gateway-1", 1));
        let mut env = BTreeMap::from([
            (
                "VX11_TOKENS_DIR".to_string(),
                dir.path().join("tokens").display().to_string(),
            ),
            ("VX11_TOKENS_POLL_INTERVAL".to_string(), "1s".to_string()),
            ("VX11_HEADER_READ_TIMEOUT".to_string(), "2s".to_string()),
        ]);
        let backend =
            ServiceProcess::start(ServiceKind::OperatorBackend, &env, dir.path()).unwrap();
        env.insert("VX11_OPERATOR_BACKEND_URL".into(), backend.base_url());
        let plain = ServiceProcess::start(ServiceKind::Gateway, &env, dir.path()).unwrap();
        env.insert(
            "VX11_TLS_DIR".into(),
            dir.path().join("tls").display().to_string(),
        );
        let tls = ServiceProcess::start(ServiceKind::Gateway, &env, dir.path()).unwrap();
        Self {
            dir,
            token,
            _backend: backend,
            plain,
            tls,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls.addr.port())
    }

    fn token_header(&self) -> String {
        format!("x-vx11-token: {}", self.token.expose())
    }

    /// curl with `args`, trusting the certificate now served; `(HTTP version, status)`.
    fn curl(&self, args: &[&str]) -> (String, String) {
        std::fs::copy(self.dir.path().join("tls/tls.crt"), self.ca()).unwrap();
        let output = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .args(["--cacert", self.ca().to_str().unwrap()])
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", self.tls.addr.port()),
            ])
            .args(["-H", &self.token_header()])
            .args(args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).to_string();
        let (version, status) = out.split_once(' ').unwrap_or(("?", "?"));
        (version.to_string(), status.to_string())
    }

    /// The subject of the certificate a new TLS connection gets.
    fn served_subject(&self) -> String {
        let output = Command::new("openssl")
            .args(["s_client", "-connect", &self.tls.addr.to_string()])
            .args(["-servername", "localhost"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let mut x509 = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-serial"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        x509.stdin
            .take()
            .unwrap()
            .write_all(&output.stdout)
            .unwrap();
        String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).to_string()
    }

    fn tls_metric(&self, line_start: &str) -> Option<f64> {
        let metrics = vx11_tests::services::http_body(self.tls.metrics_addr, "/metrics")?;
        metrics
            .lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }
}

/// A self-signed certificate for `localhost` with common name `name`: (cert PEM, key PEM).
fn pair(name: &str, serial: u64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes `tls.crt` and `tls.key` into `dir` as kubelet projects a Secret (a timestamped
/// directory behind `..data`, swapped at once).
fn project_pair(dir: &Path, _generation: u64, (cert, key): &(String, String)) {
    let payload = BTreeMap::from([
        ("tls.crt".to_string(), cert.clone().into_bytes()),
        ("tls.key".to_string(), key.clone().into_bytes()),
    ]);
    vx11_tokenset::kubelet_sim::project(dir, &payload).unwrap();
}

/// Installs h2load (Debian's `nghttp2-client`) when it is missing.
fn h2load() -> &'static str {
    let present = Command::new("h2load").arg("--version").output().is_ok();
    if !present {
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "nghttp2-client"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "apt-get install nghttp2-client failed");
    }
    "h2load"
}

/// h2load's counts: (succeeded, 2xx).
fn h2load_counts(output: &str) -> (u64, u64) {
    let number_before = |line: &str, word: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',') == word)
            .unwrap();
        words[at - 1].parse().unwrap()
    };
    let requests = output.lines().find(|l| l.starts_with("requests:")).unwrap();
    let codes = output
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap();
    (
        number_before(requests, "succeeded"),
        number_before(codes, "2xx"),
    )
}

#[test]
fn h2c_and_h2_and_http1_over_tls_all_get_200_from_the_backend() {
    let stack = Stack::start();
    let plain = format!("{}/operator/api/health", stack.plain.base_url());
    assert_eq!(
        stack.curl(&["--http2-prior-knowledge", &plain]),
        ("2".to_string(), "200".to_string())
    );
    assert_eq!(
        stack.curl(&["--http1.1", &plain]),
        ("1.1".to_string(), "200".to_string())
    );
    let https = stack.https("/operator/api/health");
    assert_eq!(
        stack.curl(&["--http2", &https]),
        ("2".to_string(), "200".to_string())
    );
    assert_eq!(
        stack.curl(&["--http1.1", &https]),
        ("1.1".to_string(), "200".to_string())
    );
    // Without a token, HTTP/2 gets the same 401 as HTTP/1.1.
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http2-prior-knowledge",
        ])
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "401");
}

#[test]
fn h2load_over_h2c_and_tls_gets_only_200s() {
    let stack = Stack::start();
    let h2load = h2load();
    for url in [
        format!("{}/operator/api/health", stack.plain.base_url()),
        format!("https://{}/operator/api/health", stack.tls.addr),
    ] {
        let output = Command::new(h2load)
            .args(["-n", "2000", "-c", "8", "-m", "16"])
            .args(["-H", &stack.token_header()])
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(h2load_counts(&text), (2000, 2000), "{url}: {text}");
    }
}

#[test]
fn too_many_header_fields_get_431_and_256_are_passed_on() {
    let stack = Stack::start();
    let url = format!("{}/operator/api/health", stack.plain.base_url());
    let headers = |count: usize| -> Vec<String> {
        (0..count)
            .flat_map(|i| ["-H".to_string(), format!("x-h{i}: 1")])
            .collect()
    };
    // curl adds Host, User-Agent, Accept and the token: 250 of its own fit under 256.
    let mut args: Vec<String> = headers(250);
    args.push(url.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(stack.curl(&args).1, "200");
    let mut args: Vec<String> = headers(300);
    args.push(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(stack.curl(&args).1, "431");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_goes_to_new_connections_while_an_open_stream_keeps_flowing() {
    let stack = Stack::start();
    assert!(stack.served_subject().contains("gateway-1"));

    // Three event streams on one h2 connection, opened before the rotation.
    std::fs::copy(stack.dir.path().join("tls/tls.crt"), stack.ca()).unwrap();
    let events = stack.dir.path().join("events.txt");
    let trace = stack.dir.path().join("curl-trace.txt");
    let url = stack.https("/operator/api/events/stream");
    let mut stream = Command::new("curl")
        .args(["-vsN", "--parallel", "--http2"])
        .args(["--cacert", stack.ca().to_str().unwrap()])
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", stack.tls.addr.port()),
        ])
        .args([
            "-H",
            &stack.token_header(),
            "-H",
            "accept: text/event-stream",
        ])
        .args([&url, &url, &url])
        .stdout(std::fs::File::create(&events).unwrap())
        .stderr(std::fs::File::create(&trace).unwrap())
        .spawn()
        .unwrap();
    let count_events = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .matches("event: tokens")
            .count()
    };
    eventually(
        "each stream's first event",
        Duration::from_secs(10),
        || async {
            if count_events() >= 3 {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await
    .unwrap();

    project_pair(&stack.dir.path().join("tls"), 2, &pair("gateway-2", 2));
    eventually(
        "the new certificate served",
        Duration::from_secs(10),
        || async {
            let subject = stack.served_subject();
            if subject.contains("gateway-2") {
                Ok(())
            } else {
                Err(subject)
            }
        },
    )
    .await
    .unwrap();
    assert!(stack.served_subject().to_lowercase().contains("serial=02"));
    assert_eq!(
        stack.curl(&["--http2", &stack.https("/operator/api/health")]),
        ("2".to_string(), "200".to_string())
    );

    // The stream opened under the old certificate is still open and gets the next event.
    let other = TokenValue::generate(32).unwrap();
    project_active_tokens(
        &stack.dir.path().join("tokens"),
        2,
        &[("operator", &stack.token), ("other", &other)],
    )
    .unwrap();
    eventually(
        "an event on each stream after the rotation",
        Duration::from_secs(10),
        || async {
            if count_events() >= 6 {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await
    .unwrap();
    assert!(stream.try_wait().unwrap().is_none(), "the streams ended");
    let trace_text = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        trace_text.matches("Re-using existing connection").count(),
        2,
        "the three streams did not share one connection: {trace_text}"
    );

    // A key that is not the certificate's: the last good pair stays, the error is counted.
    let (cert, _) = pair("gateway-3", 3);
    let (_, wrong_key) = pair("unrelated", 4);
    project_pair(&stack.dir.path().join("tls"), 3, &(cert, wrong_key.clone()));
    eventually("the bad pair counted", Duration::from_secs(10), || async {
        match stack.tls_metric("vx11_tls_reloads_total{result=\"error\"}") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert!(stack.served_subject().contains("gateway-2"));
    let logs = stack.tls.logs();
    assert!(logs.contains("TLS certificate not reloaded"), "{logs}");
    let key_line = wrong_key.lines().nth(1).unwrap();
    assert!(!logs.contains(key_line), "the key is in the logs");
    let _ = stream.kill();
    let _ = stream.wait();
}

#[test]
fn a_start_without_a_valid_pair_fails_naming_vx11_tls_dir() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(vx11_tests::services::binary_path("vx11-gateway").unwrap())
        .env_clear()
        .env("VX11_TLS_DIR", dir.path())
        .env("VX11_TOKENS_DIR", dir.path())
        .env("VX11_GATEWAY_ADDR", "127.0.0.1:0")
        .env("VX11_METRICS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("VX11_TLS_DIR") && stderr.contains("tls.crt"),
        "{stderr}"
    );
}

/// `helm template` of the chart in this repository with `sets`.
fn render_chart(sets: &[&str]) -> std::process::Output {
    let helm = vx11_tests::Binaries::locate().unwrap().helm();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/vx11");
    let mut command = Command::new(helm);
    command.args(["template", "vx11"]).arg(chart);
    for set in sets {
        command.args(["--set", set]);
    }
    command.output().unwrap()
}

#[test]
fn the_chart_with_gateway_tls_mounts_the_secret_and_probes_over_https() {
    let plain = render_chart(&[]);
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(!plain.contains("VX11_TLS_DIR") && !plain.contains("scheme: HTTPS"));

    let output = render_chart(&["gateway.tls.enabled=true", "gateway.tls.secretName=gw-tls"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "{name: VX11_TLS_DIR, value: /var/run/vx11/tls}",
        "{name: tls, mountPath: /var/run/vx11/tls, readOnly: true}",
        "secretName: gw-tls",
        "httpGet: {path: /ready, port: https, scheme: HTTPS}",
        "httpGet: {path: /health, port: https, scheme: HTTPS}",
        "appProtocol: https",
        "targetPort: https",
    ] {
        assert!(text.contains(expected), "missing {expected:?}");
    }

    let missing = render_chart(&["gateway.tls.enabled=true"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("gateway.tls.secretName"));
}

#[test]
fn a_client_that_opens_tcp_and_sends_nothing_is_closed_after_the_header_timeout() {
    use std::io::Read as _;
    let stack = Stack::start();
    let mut silent = std::net::TcpStream::connect(stack.tls.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = silent.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "not closed: {read:?}"
    );
    let closed = stack.tls_metric(
        "vx11_connections_closed_total{listener=\"api\",reason=\"tls_handshake_timeout\"}",
    );
    assert_eq!(closed, Some(1.0));
}
