//! The configuration files of the node's programs: containerd, CNI, kubelet, CoreDNS.
//! Each choice that is not a default is explained where it is made; the traps behind them are
//! in `shared/NODE.md`.

use std::path::Path;
use std::time::Duration;

use super::network::{BRIDGE_IP, NODE_IP, POD_CIDR};

/// The pod sandbox image, made here and imported (nothing is ever pulled).
pub const PAUSE_IMAGE: &str = "docker.io/library/vx11-pause:1";

/// containerd 1.6's config (version 2 format): everything under `dir`, CRI on, no pulls needed.
pub fn containerd(dir: &Path, socket: &Path, cni_conf_dir: &Path) -> String {
    let dir = dir.display();
    let socket = socket.display();
    let cni_conf_dir = cni_conf_dir.display();
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM's processes lack CAP_SYS_RESOURCE in their bounding set: runc cannot set a
  # negative oom_score_adj, and every sandbox would fail without this.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf_dir}"
"#
    )
}

/// The pod network: one bridge (`cni0`, made before containerd starts), host-local addresses.
pub fn cni(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "vx11",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                // Pods talk to each other, to Services and to the node; nothing is masqueraded
                // towards an outside that does not exist.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// Paths kubelet's configuration refers to.
#[derive(Debug)]
pub struct KubeletPaths<'a> {
    pub ca: &'a Path,
    pub serving_cert: &'a Path,
    pub serving_key: &'a Path,
    pub runtime_socket: &'a Path,
    pub resolv_conf: &'a Path,
    pub pod_logs: &'a Path,
}

/// kubelet's `KubeletConfiguration`. `sync_frequency` bounds how late a pod sees a changed
/// Secret (with the Watch strategy the delay is about one sync period plus jitter).
pub fn kubelet(paths: &KubeletPaths<'_>, sync_frequency: Duration) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": paths.serving_cert,
        "tlsPrivateKeyFile": paths.serving_key,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": paths.ca},
        },
        "authorization": {"mode": "Webhook"},
        // This machine has cgroup v1 only, which kubelet 1.36 refuses unless told.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": false,
        "containerRuntimeEndpoint": format!("unix://{}", paths.runtime_socket.display()),
        "clusterDNS": [BRIDGE_IP],
        "clusterDomain": "cluster.local",
        // Never the machine's resolver: no DNS query may leave the machine.
        "resolvConf": paths.resolv_conf,
        "podLogsDir": paths.pod_logs,
        "syncFrequency": format!("{}ms", sync_frequency.as_millis()),
        "configMapAndSecretChangeDetectionStrategy": "Watch",
        "failSwapOn": false,
        // The images are imported, never pulled: they must never be collected either.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "2s",
        "kernelMemcgNotification": false,
        "protectKernelDefaults": false,
        "shutdownGracePeriod": "0s",
    })
    .to_string()
}

/// CoreDNS: cluster names only, from the API; no `forward`, so no query ever leaves.
pub fn corefile(kubeconfig: &Path) -> String {
    format!(
        r#".:53 {{
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {} vx11
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"#,
        kubeconfig.display()
    )
}
