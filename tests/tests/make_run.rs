//! `make run` starts every time on the state it keeps: twice in a row, and again after the
//! first was killed; on the real node (its default) and in the simulated mode. On the real
//! node, the README's "From zero to a rotated token" is run as a reader pastes it.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vx11_tests::doc_commands::{CURL_WRAPPER, Runner, check_line, commands, shell_blocks};
use vx11_tests::node::leftovers;
use vx11_tests::services::{binary_path, free_loopback_addr};

const VX11_LOCAL: &str = env!("CARGO_BIN_EXE_vx11-local");

/// A running `vx11-local`, stopped like Ctrl-C if the test ends early.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let mut child = child;
            let _ = child.wait();
        }
    }
}

/// Starts `vx11-local` and waits until it has said vx11 is running and how to use it;
/// returns it and what it printed.
async fn start(state: &Path, gateway: &str, extra: &[&str]) -> (Running, String) {
    let mut child = Command::new(VX11_LOCAL)
        .args([
            "--state-dir",
            &state.display().to_string(),
            "--gateway-addr",
            gateway,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(Some(child));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        let mut lines = BufReader::new(stdout).lines();
        let mut tx = Some(tx);
        for line in lines.by_ref().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            // The last line of what it prints once running (the KUBECONFIG line is before it).
            if line.starts_with("Ctrl-C stops vx11")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(printed.clone());
            }
        }
        // Keep draining, so that the child never blocks on a full pipe.
    });
    let printed = tokio::time::timeout(Duration::from_secs(900), rx)
        .await
        .expect("vx11-local up in time")
        .expect("vx11-local ended before it was running");
    (running, printed)
}

/// The client token through kubectl, as the README does it, and a request with it.
async fn serves(state: &Path, gateway: &str) {
    let kubeconfig = state.join("kubeconfig");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "-n",
            "vx11",
            "get",
            "secret",
            "vx11-client-tokens",
            "-o",
            "jsonpath={.data.operator}",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD
        .decode(out.stdout.trim_ascii())
        .unwrap();
    let token = String::from_utf8(token).unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://{gateway}/operator/api/health"))
        .header("x-vx11-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn interrupt(mut running: Running) {
    let mut child = running.0.take().unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "vx11-local exited with {status} on Ctrl-C"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_starts_twice_on_its_state_and_after_a_crash() {
    if vx11_tests::node::skip_without_node("make_run_starts_twice_on_its_state_and_after_a_crash") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    // Where the README says the gateway is.
    let gateway = README_GATEWAY.to_owned();
    assert!(
        std::net::TcpListener::bind(README_GATEWAY).is_ok(),
        "{README_GATEWAY} is in use (a `make run`, or a vx11 you started by hand?): stop it and run the test again"
    );

    let (first, printed) = start(state.path(), &gateway, &[]).await;
    assert!(printed.contains("real node"), "{printed}");
    serves(state.path(), &gateway).await;
    from_zero_to_a_rotated_token(&printed);
    interrupt(first);
    let left = leftovers().unwrap();
    assert!(left.is_empty(), "left after Ctrl-C: {left:?}");

    let (second, _) = start(state.path(), &gateway, &[]).await;
    serves(state.path(), &gateway).await;
    second_then_killed(second);

    // After a crash: the next start waits for the teardown and comes up on the same state.
    let (third, _) = start(state.path(), &gateway, &[]).await;
    serves(state.path(), &gateway).await;
    interrupt(third);
    let left = leftovers().unwrap();
    assert!(left.is_empty(), "left after Ctrl-C: {left:?}");
}

/// The gateway address of the README's commands (`localhost:8000`).
const README_GATEWAY: &str = "127.0.0.1:8000";

/// Runs the README's `node` blocks ("From zero to a rotated token") in bash as written, on the vx11
/// that `make run` (`vx11-local`, started by the caller, which printed `printed`) runs,
/// checking each `curl` as `tests/tests/doc_commands.rs` does. Three lines are the
/// caller's: `make run` is running already; `export KUBECONFIG=…` is the line `make run`
/// printed with the real path (the README says it prints it); `make install` is replaced
/// by this workspace's `kubectl-vx11` on `PATH` (what it installs, without a release build).
fn from_zero_to_a_rotated_token(printed: &str) {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let blocks: Vec<_> = shell_blocks(Path::new("README.md"), &readme)
        .unwrap()
        .into_iter()
        .filter(|b| b.runner == Some(Runner::Node))
        .collect();
    assert!(
        blocks.iter().any(|b| b.text.contains("rotate")),
        "README.md has no `node` block that rotates a token: {blocks:?}"
    );
    let export = printed
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("export KUBECONFIG="))
        .expect("make run prints the export KUBECONFIG line");
    let plugin_dir = binary_path("kubectl-vx11").unwrap();
    let plugin_dir = plugin_dir.parent().unwrap();
    let mut script = String::from(CURL_WRAPPER);
    for command in blocks.iter().flat_map(|b| commands(&b.text, b.line)) {
        let line = match command.head().as_str() {
            "make run" => continue,
            "make install" => format!("export PATH={}:$PATH", plugin_dir.display()),
            _ if command.text.starts_with("export KUBECONFIG=") => export.to_owned(),
            _ => check_line("README.md", &command),
        };
        script.push_str(&line);
        script.push('\n');
    }
    script.push_str("exit $__vx11_failed\n");
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(workspace())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    eprintln!("--- README.md: from zero to a rotated token ---\n{out}");
    assert!(
        output.status.success(),
        "README.md's commands failed:\n{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked = out
        .lines()
        .filter(|l| l.starts_with("ok README.md"))
        .count();
    assert_eq!(checked, 4, "every curl of the block answered: {out}");
}

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn second_then_killed(mut running: Running) {
    let mut child = running.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_simulated_starts_twice_in_a_row_on_its_state() {
    let state = tempfile::tempdir().unwrap();
    let gateway = free_loopback_addr().to_string();
    let (first, _) = start(state.path(), &gateway, &["--simulated"]).await;
    serves(state.path(), &gateway).await;
    interrupt(first);
    // The second start finds its projected directories unchanged (it hung for 30 s on that).
    let (second, _) = start(state.path(), &gateway, &["--simulated"]).await;
    serves(state.path(), &gateway).await;
    interrupt(second);
}
