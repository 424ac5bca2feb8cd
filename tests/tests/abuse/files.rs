//! Abuse tests: the token directory and the query string, against the real
//! `vx11-operator-backend` (the same loader, redaction and `/ready` as the gateway).
//!
//! Who: whoever can write into the mounted token directory (a hand-made Secret, a
//! misconfigured volume) or send a request with any query string. What must hold: the
//! reload is never blocked and never leaves the directory, the last good set keeps serving,
//! `/ready` tells the truth in generic words, and no file content or token value reaches
//! the public `/ready` or a log line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vx11_tests::abuse::ValidClient;
use vx11_tests::services::{ServiceKind, ServiceProcess, assert_no_value_in};
use vx11_tokenset::{TokenEntry, TokenFile, TokenState, TokenValue, kubelet_sim};

/// How long a refused or new token file may take to show (poll interval 200 ms).
const PICKUP: Duration = Duration::from_secs(5);

/// A backend serving a token directory, and a client with a valid token.
struct Mounted {
    root: tempfile::TempDir,
    dir: PathBuf,
    backend: ServiceProcess,
    valid: TokenValue,
    http: reqwest::Client,
}

impl Mounted {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tokens");
        let valid = TokenValue::generate(32).unwrap();
        project_tokens(&dir, 1, &[&valid]);
        let env = BTreeMap::from([
            ("VX11_TOKENS_DIR".to_owned(), dir.display().to_string()),
            ("VX11_TOKENS_POLL_INTERVAL".to_owned(), "200ms".to_owned()),
        ]);
        let backend =
            ServiceProcess::start(ServiceKind::OperatorBackend, &env, root.path()).unwrap();
        Self {
            root,
            dir,
            backend,
            valid,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    fn valid_client(&self) -> ValidClient {
        ValidClient::start(
            self.backend.addr,
            "/operator/api/health",
            vec![("x-vx11-token".into(), self.valid.expose().into())],
            Duration::from_millis(50),
        )
    }

    async fn ready(&self) -> (u16, Value, String) {
        let response = self
            .http
            .get(format!("{}/ready", self.backend.base_url()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap(), text)
    }

    /// Polls `/ready` until `condition` holds on its body; the last body when it never did.
    async fn ready_until(&self, condition: impl Fn(&Value) -> bool) -> Result<Value, Value> {
        let deadline = tokio::time::Instant::now() + PICKUP;
        loop {
            let (_, body, _) = self.ready().await;
            if condition(&body) {
                return Ok(body);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status_with(&self, path: &str, token: &str) -> u16 {
        self.http
            .get(format!("{}{path}", self.backend.base_url()))
            .header("x-vx11-token", token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn outside(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// Writes a token file of `values` at `generation` as kubelet projects a Secret.
fn project_tokens(dir: &Path, generation: u64, values: &[&TokenValue]) {
    let entries = values
        .iter()
        .enumerate()
        .map(|(i, v)| TokenEntry {
            name: format!("client-{i}"),
            sha256: v.digest(),
            state: TokenState::Active,
            not_before: None,
            expires_at: None,
        })
        .collect();
    let file = TokenFile::new(generation, entries);
    project(dir, &[("tokens.json", file.to_json().into_bytes())]);
}

fn project(dir: &Path, files: &[(&str, Vec<u8>)]) {
    let payload = files
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    kubelet_sim::project(dir, &payload).unwrap();
}

fn refused(body: &Value) -> bool {
    body["reason"] == "token_source_refused"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_link_to_a_fifo_does_not_block_the_reload() {
    let m = Mounted::start();
    let client = m.valid_client();
    // Nobody ever writes into it: an open(2) that waits for a writer waits forever.
    let fifo = m.dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("fifo", m.dir.join("tokens")).unwrap();

    let body = m.ready_until(refused).await;
    assert!(
        body.is_ok(),
        "/ready does not say the token files were refused (a reload stuck on the FIFO?): {body:?}"
    );
    let body = body.unwrap();
    assert_eq!(body["status"], "ready", "the last good set is served");
    assert_eq!(body["generation"], 1);

    // The reload is free: the next projection is picked up.
    std::fs::remove_file(m.dir.join("tokens")).unwrap();
    let next = TokenValue::generate(32).unwrap();
    project_tokens(&m.dir, 2, &[&m.valid, &next]);
    let body = m
        .ready_until(|b| b["generation"] == 2 && b.get("reason").is_none())
        .await;
    assert!(body.is_ok(), "generation 2 not picked up: {body:?}");
    assert_eq!(
        m.status_with("/operator/api/health", next.expose()).await,
        200
    );

    let report = client.stop().await;
    assert!(report.ok > 0, "{report:?}");
    assert_eq!(report.failed, 0, "the valid client was refused: {report:?}");
    assert!(m.backend.logs().contains("is a FIFO, not a regular file"));
    assert_no_value_in(
        "the backend's logs",
        &m.backend.logs(),
        [m.valid.expose(), next.expose()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_directory_are_refused_and_the_last_good_set_kept() {
    let m = Mounted::start();
    let client = m.valid_client();
    let intruder = TokenValue::generate(32).unwrap();
    let outside = m.outside("outside-list");
    std::fs::write(&outside, format!("{}\n", intruder.expose())).unwrap();
    for (i, target) in [
        outside.display().to_string(),
        "../outside-list".to_owned(),
        "/dev/zero".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let link = m.dir.join("tokens");
        let _ = std::fs::remove_file(&link);
        // Each link is new content: wait for the set to be back to clean between them.
        if i > 0 {
            let clean = m.ready_until(|b| !refused(b)).await;
            assert!(clean.is_ok(), "{clean:?}");
        }
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let body = m.ready_until(refused).await;
        assert!(body.is_ok(), "{target}: not refused: {body:?}");
        assert_eq!(
            m.status_with("/operator/api/health", intruder.expose())
                .await,
            401,
            "{target}: a token from outside the directory passed"
        );
        assert_eq!(
            m.status_with("/operator/api/health", m.valid.expose())
                .await,
            200
        );
    }
    let (_, body, _) = m.ready().await;
    assert_eq!(body["generation"], 1);
    let report = client.stop().await;
    assert_eq!(report.failed, 0, "{report:?}");
    let logs = m.backend.logs();
    assert!(logs.contains("leads out of"), "no clear error logged");
    assert!(!logs.contains("over the limit"), "/dev/zero was read");
    assert_no_value_in("the backend's logs", &logs, [intruder.expose()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_token_file_never_reaches_ready_or_the_logs() {
    let m = Mounted::start();
    let client = m.valid_client();
    let pasted = TokenValue::generate(32).unwrap();
    let digest = "ab".repeat(32);
    let v = pasted.expose();
    let garbage = [
        // serde would say "unknown variant `<value>`"
        format!(
            r#"{{"version":1,"generation":2,"tokens":[{{"name":"x","sha256":"{digest}","state":"{v}"}}]}}"#
        ),
        // "unknown field `<value>`"
        format!(r#"{{"version":1,"generation":3,"tokens":[],"{v}":true}}"#),
        // "invalid type: string \"<value>\""
        format!(r#"{{"version":1,"generation":"{v}","tokens":[]}}"#),
        format!(r#"{{"version":1,"generation":4,"tokens":[{{"name":"x","sha256":"{v}"}}]}}"#),
        format!("not json at all {v}"),
    ];
    for content in &garbage {
        project(&m.dir, &[("tokens.json", content.clone().into_bytes())]);
        // Any sign of the refusal (older builds showed the error itself as `lastError`).
        let body = m
            .ready_until(|b| refused(b) || !b["lastError"].is_null())
            .await;
        assert!(body.is_ok(), "not refused: {body:?}");
        let (status, body, text) = m.ready().await;
        assert_no_value_in("/ready", &text, [v]);
        assert!(refused(&body), "{text}");
        assert_eq!(status, 200, "the last good set is served");
        assert!(
            !text.contains("tokens.json"),
            "/ready names the file: {text}"
        );
        let health = m
            .http
            .get(format!("{}/operator/api/health", m.backend.base_url()))
            .header("x-vx11-token", m.valid.expose())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(health.contains("tokens.json"), "{health}");
        assert_no_value_in("the authenticated health", &health, [v]);
        // Back to the content being served, so that the next garbage is a new error.
        project_tokens(&m.dir, 1, &[&m.valid]);
        let clean = m.ready_until(|b| !refused(b)).await;
        assert!(clean.is_ok(), "{clean:?}");
    }
    let report = client.stop().await;
    assert_eq!(report.failed, 0, "{report:?}");
    let logs = m.backend.logs();
    assert!(logs.contains("line 1 column"), "no position logged");
    assert_no_value_in("the backend's logs", &logs, [v, m.valid.expose()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_token_parameters_are_not_logged() {
    let m = Mounted::start();
    let values: Vec<TokenValue> = (0..6).map(|_| TokenValue::generate(32).unwrap()).collect();
    let keys = [
        "tok%65n",
        "TOK%45N",
        "tok%2565n",
        "to+ken",
        "token+",
        "access%5Ftoken",
    ];
    for (key, value) in keys.iter().zip(&values) {
        let path = format!("/operator/api/health?follow=true&{key}={}", value.expose());
        assert_eq!(m.status_with(&path, m.valid.expose()).await, 200, "{key}");
    }
    // The access lines are written before the answer is sent; allow the file a moment.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = m.backend.logs();
        if logs.matches("follow=true").count() >= keys.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        logs.matches("follow=true").count() >= keys.len(),
        "no access lines"
    );
    assert_no_value_in(
        "the backend's access lines",
        &logs,
        values.iter().map(TokenValue::expose),
    );
    assert_no_value_in("the backend's logs", &logs, [m.valid.expose()]);
}
