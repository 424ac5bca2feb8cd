//! The committed CRD copies are what `vx11-controller crd` prints. To refresh them:
//! `cargo run -p vx11-controller --bin vx11-controller -- crd > manifests/crd.yaml && cp manifests/crd.yaml charts/vx11/crds/vx11tokensets.yaml`

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn committed_crds_are_fresh() {
    let output = Command::new(env!("CARGO_BIN_EXE_vx11-controller"))
        .arg("crd")
        .output()
        .expect("run vx11-controller crd");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert_eq!(generated, vx11_controller::crd::crd_yaml());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for path in ["manifests/crd.yaml", "charts/vx11/crds/vx11tokensets.yaml"] {
        let committed = std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p vx11-controller --bin vx11-controller -- crd > {path}`"
        );
    }
}

#[test]
fn bad_configuration_is_refused_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_vx11-controller"))
        .env("VX11_METRICS_ADDR", "not-an-address")
        .output()
        .expect("run vx11-controller");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("Invalid configuration: "), "{stderr}");
    assert!(stderr.contains("VX11_METRICS_ADDR"), "{stderr}");
}

#[test]
fn help_lists_every_setting_with_its_env() {
    let output = Command::new(env!("CARGO_BIN_EXE_vx11-controller"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for env in [
        "VX11_METRICS_ADDR",
        "VX11_WATCH_NAMESPACES",
        "VX11_LEADER_ELECTION",
        "VX11_LEASE_NAME",
        "VX11_LEASE_NAMESPACE",
        "VX11_LEASE_DURATION",
        "VX11_IDENTITY",
        "VX11_RECONCILE_CONCURRENCY",
        "RUST_LOG",
    ] {
        assert!(help.contains(env), "--help lacks {env}");
    }
}
