//! The real `vx11-gateway` and `vx11-operator-backend` binaries as child processes on
//! loopback ports, with their logs captured to files.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// One of vx11's service binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    Gateway,
    OperatorBackend,
    /// `vx11-controller`: its `/health` is on its metrics listener.
    Controller,
}

impl ServiceKind {
    pub fn binary(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "vx11-gateway",
            ServiceKind::OperatorBackend => "vx11-operator-backend",
            ServiceKind::Controller => "vx11-controller",
        }
    }

    fn addr_var(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "VX11_GATEWAY_ADDR",
            ServiceKind::OperatorBackend => "VX11_OPERATOR_BACKEND_ADDR",
            ServiceKind::Controller => "VX11_METRICS_ADDR",
        }
    }
}

/// Where the workspace's binaries are: `VX11_BIN_DIR`, else the profile directory the
/// running test was built into. A binary that is not there is built once with cargo.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let dir = match std::env::var_os("VX11_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir()?,
    };
    let path = dir.join(name);
    if !path.exists() {
        BUILT
            .get_or_init(|| build_service_binaries(&dir))
            .clone()
            .map_err(Error::Binaries)?;
    }
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Binaries(format!(
            "{} not found; run `cargo build --workspace --bins` or set VX11_BIN_DIR",
            path.display()
        )))
    }
}

fn profile_dir() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating the running binary".into(), e))?;
    let dir = exe.parent().ok_or_else(|| {
        Error::Binaries(format!("cannot find the target dir from {}", exe.display()))
    })?;
    // target/<profile>/deps/<test> for a test, target/<profile>/<bin> for a binary.
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

fn build_service_binaries(profile_dir: &Path) -> std::result::Result<(), String> {
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // By package: from this package's directory, `--bin` finds only this package's bins.
    cargo.args(["build", "-p", "vx11-gateway", "-p", "vx11-operator-backend"]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("cargo build of the service binaries failed ({status})"))
}

/// A free loopback port (bound and released; good enough for tests on one machine).
#[allow(
    clippy::expect_used,
    reason = "for tests: without loopback no test can run"
)]
pub fn free_loopback_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
}

/// A running service binary; killed on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    pub kind: ServiceKind,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    /// Its API port speaks TLS (`VX11_TLS_DIR` set).
    tls: bool,
}

impl ServiceProcess {
    /// Starts `kind` with `env` (on top of its address and metrics address, which are
    /// chosen here) and waits until `/health` answers. Logs go to `log_dir/<binary>.log`.
    pub fn start(
        kind: ServiceKind,
        env: &BTreeMap<String, String>,
        log_dir: &Path,
    ) -> Result<Self> {
        Self::start_at(kind, free_loopback_addr(), env, log_dir)
    }

    /// Like [`start`](Self::start), on a given address.
    pub fn start_at(
        kind: ServiceKind,
        addr: SocketAddr,
        env: &BTreeMap<String, String>,
        log_dir: &Path,
    ) -> Result<Self> {
        let metrics_addr = if kind == ServiceKind::Controller {
            addr
        } else {
            free_loopback_addr()
        };
        let log_path = log_dir.join(format!("{}-{}.log", kind.binary(), addr.port()));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let stderr = log
            .try_clone()
            .map_err(|e| Error::io("cloning the log file".into(), e))?;
        let child = Command::new(binary_path(kind.binary())?)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env)
            // The addresses chosen here win over any in `env` (e.g. a pod's 0.0.0.0:8011).
            .env(kind.addr_var(), addr.to_string())
            .env("VX11_METRICS_ADDR", metrics_addr.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", kind.binary()), e))?;
        let mut process = Self {
            kind,
            addr,
            metrics_addr,
            child,
            log_path,
            tls: env.get("VX11_TLS_DIR").is_some_and(|dir| !dir.is_empty()),
        };
        process.wait_for_health()?;
        Ok(process)
    }

    fn wait_for_health(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        // A gateway serving TLS (VX11_TLS_DIR) is up once its plain /metrics answers.
        let (addr, path) = if self.tls {
            (self.metrics_addr, "/metrics")
        } else {
            (self.addr, "/health")
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.startup_error(format!("exited with {status}")));
            }
            if http_status(addr, path) == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.startup_error("no answer on /health within 20 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn startup_error(&self, reason: String) -> Error {
        Error::Startup {
            component: self.kind.binary().into(),
            reason,
            log: self.log_path.clone(),
            log_tail: self
                .logs()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.0 GET on loopback, for readiness polls without an async runtime.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_status_with(addr, path, "", Duration::from_secs(1))
}

/// [`http_status`] with further request header lines (`"name: value\r\n"` each) and a
/// read timeout.
pub fn http_status_with(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    read_timeout: Duration,
) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Fails the test if any of `values` (token plaintexts) occurs in `text`, which is named
/// `what` in the failure; the failure names the value by its fingerprint only.
pub fn assert_no_value_in<V: AsRef<str>>(
    what: &str,
    text: &str,
    values: impl IntoIterator<Item = V>,
) {
    for value in values {
        let value = value.as_ref();
        assert!(
            !text.contains(value),
            "{what} contains a token value (fingerprint {})",
            vx11_tokenset::TokenDigest::of(value.as_bytes()).fingerprint()
        );
    }
}

/// Fails the test if `text` (named `what`) has a `token=` not followed by `REDACTED`.
pub fn assert_query_tokens_redacted(what: &str, text: &str) {
    for (at, _) in text.match_indices("token=") {
        assert!(
            text[at + "token=".len()..].starts_with(vx11_tokenset::REDACTED),
            "{what} has an unredacted `token=` value: {}",
            &text[at.saturating_sub(80)..at]
        );
    }
}

/// The body of a bare HTTP/1.0 GET on loopback (e.g. a `/metrics` page), if it answered.
pub fn http_body(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}
