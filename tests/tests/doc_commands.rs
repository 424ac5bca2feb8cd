//! Every shell command of `README.md` and `docs/*.md` is run by a test: the `local` blocks
//! here, as a reader pastes them (see `vx11_tests::doc_commands` for the tags).

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use vx11_tests::doc_commands::{
    Block, CURL_WRAPPER, Runner, check_line, commands, documented_files, shell_blocks,
};

/// A doc's local commands may take this long in all (what they `cargo run` is built first,
/// by [`build_what_it_runs`]).
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn all_blocks() -> Vec<Block> {
    let root = root();
    let mut blocks = Vec::new();
    for file in documented_files(&root).unwrap() {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(&root).unwrap();
        match shell_blocks(relative, &text) {
            Ok(found) => blocks.extend(found),
            Err(error) => panic!("{}:{}: {}", relative.display(), error.line, error.message),
        }
    }
    blocks
}

#[test]
fn every_documented_shell_block_names_the_test_that_runs_it() {
    let root = root();
    let mut problems = Vec::new();
    let mut manual = Vec::new();
    for block in all_blocks() {
        let at = format!("{}:{}", block.file.display(), block.line);
        match &block.runner {
            None => problems.push(format!(
                "{at}: a shell block with no `<!-- doc-test: … -->` tag on the line before it: say which test runs it (`local` runs it in tests/tests/doc_commands.rs)"
            )),
            Some(Runner::Local | Runner::Node) => {}
            Some(Runner::Manual(reason)) => manual.push(format!("{at}: {reason}")),
            Some(Runner::By(files)) => {
                let texts: Vec<String> = files
                    .iter()
                    .map(|f| match std::fs::read_to_string(root.join(f)) {
                        Ok(text) => text,
                        Err(_) => {
                            problems.push(format!("{at}: `by {f}`: no such file"));
                            String::new()
                        }
                    })
                    .collect();
                for command in commands(&block.text, block.line) {
                    let head = command.head();
                    if !texts.iter().any(|t| t.contains(&head)) {
                        problems.push(format!(
                            "{}:{}: `{head}` is in none of {files:?}, which the tag says run it",
                            block.file.display(),
                            command.line
                        ));
                    }
                }
            }
        }
    }
    for line in &manual {
        println!("not run by a test: {line}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn local_commands_answer_as_the_docs_say() {
    let blocks = all_blocks();
    let files: BTreeSet<PathBuf> = blocks
        .iter()
        .filter(|b| b.runner == Some(Runner::Local))
        .map(|b| b.file.clone())
        .collect();
    assert!(
        !files.is_empty(),
        "no local block found: the tags were lost"
    );
    let mut failures = Vec::new();
    for file in files {
        let script = script_for(&file, &blocks);
        let ports = loopback_ports(&script);
        if let Some(busy) = ports.iter().find(|p| !is_free(**p)) {
            panic!(
                "{}: port {busy} of its commands is in use (a `make run`, or a vx11 you started by hand?): stop it and run the test again",
                file.display()
            );
        }
        build_what_it_runs(&script);
        let (ok, output) = run_script(&script);
        println!("--- {} ---\n{output}", file.display());
        if !ok {
            failures.push(format!(
                "{}:\n{}",
                file.display(),
                output
                    .lines()
                    .filter(|l| l.starts_with("FAILED") || l.contains("error"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        // The processes a doc started are gone before the next doc starts its own.
        assert!(
            ports.iter().all(|p| is_free(*p)),
            "{}: its processes still hold {ports:?}",
            file.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The file's `local` commands, in order, each followed by its check.
fn script_for(file: &Path, blocks: &[Block]) -> String {
    let mut script = String::from(CURL_WRAPPER);
    let name = file.display().to_string();
    for block in blocks
        .iter()
        .filter(|b| b.file == file && b.runner == Some(Runner::Local))
    {
        for command in commands(&block.text, block.line) {
            script.push_str(&check_line(&name, &command));
            script.push('\n');
        }
    }
    script.push_str("exit $__vx11_failed\n");
    script
}

/// Builds the packages a script starts with `cargo run -p <package>`, as that command
/// builds them (one package's features, not the workspace's), before the script runs: a
/// cold build there takes minutes, longer than its `curl`s wait for the services
/// (`--retry-max-time 120`), and more on a machine busy with other builds.
fn build_what_it_runs(script: &str) {
    let packages: BTreeSet<&str> = script
        .match_indices("cargo run -p ")
        .filter_map(|(at, prefix)| script[at + prefix.len()..].split_whitespace().next())
        .collect();
    for package in packages {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", package])
            .current_dir(root())
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cargo build -p {package} failed: {status}"
        );
    }
}

/// The `127.0.0.1:PORT` and `localhost:PORT` addresses a script names.
fn loopback_ports(script: &str) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for prefix in ["127.0.0.1:", "localhost:"] {
        for (at, _) in script.match_indices(prefix) {
            let digits: String = script[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(port) = digits.parse() {
                ports.insert(port);
            }
        }
    }
    ports
}

fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Runs `script` in `bash` from the repository's root, in a process group of its own that
/// is ended afterwards (the services a doc starts with `&` included).
fn run_script(script: &str) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    end_group(group);
    let _ = child.wait();
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!("{output}\nFAILED: still running after {SCRIPT_LIMIT:?}"),
        ),
    }
}

/// SIGTERM to the group, then SIGKILL to what is left of it after a few seconds.
fn end_group(group: Pid) {
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if killpg(group, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = killpg(group, Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
}
