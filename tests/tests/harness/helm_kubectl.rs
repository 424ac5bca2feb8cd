//! helm installs a chart into the control plane, and kubectl works with its kubeconfig.

use std::path::Path;
use std::process::Output;

use vx11_tests::ControlPlane;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/smoke");

fn stdout(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn helm_install_and_kubectl_get() {
    assert!(Path::new(CHART).join("Chart.yaml").is_file());
    let cp = ControlPlane::start().await.expect("control plane");

    let version = cp.kubectl().args(["version", "-o", "json"]).output().await;
    let version = stdout(
        "kubectl version",
        &version.expect("kubectl runs (is it installed?)"),
    );
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(server.starts_with("v1.3"), "server version {server:?}");

    let installed = cp
        .helm()
        .args([
            "install",
            "smoke",
            CHART,
            "--namespace",
            "smoke",
            "--create-namespace",
        ])
        .args(["--set", "message=from-the-test"])
        .output()
        .await
        .expect("helm runs");
    stdout("helm install", &installed);

    let status = cp
        .helm()
        .args(["status", "smoke", "--namespace", "smoke", "-o", "json"])
        .output()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&stdout("helm status", &status)).unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");

    let message = cp
        .kubectl()
        .args([
            "get",
            "configmap",
            "smoke",
            "-n",
            "smoke",
            "-o",
            "jsonpath={.data.message}",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(stdout("kubectl get configmap", &message), "from-the-test");

    let objects = [
        "deployment/smoke",
        "service/smoke",
        "serviceaccount/smoke",
        "role/smoke",
    ];
    let found = cp
        .kubectl()
        .args(["get", "-n", "smoke", "-o", "name"])
        .args(objects)
        .arg("rolebinding/smoke")
        .output()
        .await
        .unwrap();
    let found = stdout("kubectl get", &found);
    assert_eq!(found.lines().count(), 5, "{found}");

    // The chart's ServiceAccount may read its ConfigMap and nothing else.
    let can_i = |resource: &'static str| {
        let mut command = cp.kubectl();
        command.args(["auth", "can-i", "get", resource, "-n", "smoke"]);
        command.args(["--as", "system:serviceaccount:smoke:smoke"]);
        command
    };
    let allowed = can_i("configmap/smoke").output().await.unwrap();
    assert_eq!(stdout("kubectl auth can-i", &allowed).trim(), "yes");
    let denied = can_i("secrets").output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");

    let uninstalled = cp
        .helm()
        .args(["uninstall", "smoke", "--namespace", "smoke"])
        .output()
        .await
        .unwrap();
    stdout("helm uninstall", &uninstalled);
}
