//! `kubectl-vx11`'s help texts, usage errors and its reading of `KUBECONFIG`, from the built
//! binary (no cluster needed).

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn kubectl_vx11(args: &[&str], kubeconfig: Option<&std::path::Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-vx11"));
    command.args(args).env_remove("KUBECONFIG");
    if let Some(path) = kubeconfig {
        command.env("KUBECONFIG", path);
    }
    command.output().expect("run kubectl-vx11")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn top_level_help_lists_every_subcommand() {
    let output = kubectl_vx11(&["--help"], None);
    assert!(output.status.success(), "{output:?}");
    let help = text(&output.stdout);
    for word in [
        "Usage: kubectl vx11",
        "status",
        "rotate",
        "token",
        "wait",
        "--kubeconfig",
        "--context",
        "--namespace",
        "Examples:",
    ] {
        assert!(help.contains(word), "no {word:?} in:\n{help}");
    }
}

#[test]
fn each_subcommand_has_help() {
    let cases: &[(&str, &[&str])] = &[
        ("status", &["[SET]", "--output", "json", "NEXT-ROTATION"]),
        (
            "rotate",
            &[
                "<SET>",
                "--token",
                "--wait",
                "--timeout",
                "secretRef",
                "staged",
            ],
        ),
        ("token", &["<SET>", "<NAME>", "staged", "pipe"]),
        (
            "wait",
            &["<SET>", "--for", "propagated", "ready", "--timeout"],
        ),
    ];
    for (sub, words) in cases {
        let output = kubectl_vx11(&[sub, "--help"], None);
        assert!(output.status.success(), "{sub}: {output:?}");
        let help = text(&output.stdout);
        assert!(
            help.contains(&format!("Usage: kubectl vx11 {sub}")),
            "{help}"
        );
        for word in *words {
            assert!(help.contains(word), "{sub}: no {word:?} in:\n{help}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["rotate"][..],
        &["token", "vx11"],
        &["wait", "vx11", "--for", "done"],
        &["wait", "vx11", "--timeout", "soon"],
        &["frobnicate"],
    ] {
        let output = kubectl_vx11(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
}

#[test]
fn honours_kubeconfig_and_says_what_to_do_when_the_cluster_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        &path,
        "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: 'http://127.0.0.1:1'}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: team}
current-context: ctx
",
    )
    .unwrap();
    let output = kubectl_vx11(&["status"], Some(&path));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    // The context's namespace is the default, and the error names it.
    assert!(stderr.contains("namespace team"), "{stderr}");
    assert!(stderr.contains("kubectl cluster-info"), "{stderr}");

    let output = kubectl_vx11(&["status", "--context", "nope"], Some(&path));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--context"), "{stderr}");
}
