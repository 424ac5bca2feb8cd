//! The node's network namespace and machine-level teardown, held by `tests/node/node.sh hold`.
//!
//! The script takes the machine-wide node lock, builds the namespace, prints `ready`, and tears
//! everything down once its stdin closes. This side keeps the write end of that pipe, so the
//! teardown runs however this process ends (drop, panic, Ctrl-C or SIGKILL).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::{Error, Result};

/// The node's network namespace (`/run/netns/vx11-node`).
pub const NETNS: &str = "vx11-node";
/// The node's address, inside its namespace: API server, kubelet, NodePorts.
pub const NODE_IP: &str = "10.89.0.2";
/// The host's end of the veth pair.
pub const HOST_IP: &str = "10.89.0.1";
/// Pods' addresses, on the bridge `cni0` inside the namespace.
pub const POD_CIDR: &str = "10.88.0.0/16";
/// The bridge's address: the pods' gateway, where CoreDNS answers.
pub const BRIDGE_IP: &str = "10.88.0.1";
/// The node's name in the cluster.
pub const NODE_NAME: &str = "vx11-node";

/// The machine-wide node lock, held by `node.sh hold` from before the node starts until its
/// teardown is done.
pub const NODE_LOCK: &str = "/run/vx11-node.lock";

/// The script that builds and tears down the namespace.
pub const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/node.sh");

/// The held network namespace. Dropping it tears down everything of the node on this machine
/// (processes, pods' cgroups and mounts, namespaces, the state directory) and waits for that.
#[derive(Debug)]
pub struct NodeNetwork {
    holder: Child,
    stdin: Option<ChildStdin>,
    state_dir: PathBuf,
}

impl NodeNetwork {
    /// Takes the node lock (waiting for another node on this machine to be torn down) and
    /// builds the namespace, with the node's state in `state_dir`.
    pub fn hold(state_dir: &Path, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut holder = Command::new("bash")
            .arg(NODE_SCRIPT)
            .arg("hold")
            .arg(state_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| Error::io(format!("running {NODE_SCRIPT}"), e))?;
        let stdin = holder.stdin.take();
        let stdout = holder.stdout.take();
        let mut network = Self {
            holder,
            stdin,
            state_dir: state_dir.to_path_buf(),
        };
        let mut line = String::new();
        if let Some(stdout) = stdout {
            // Blocks until the script is ready or has failed (it closes stdout on exit).
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = network.holder.wait();
            return Err(Error::Startup {
                component: "node network".into(),
                reason: format!("{NODE_SCRIPT} hold did not get ready"),
                log: log.to_path_buf(),
                log_tail: crate::process::tail(log, 20),
            });
        }
        Ok(network)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `nsenter --net=… -- program`: a command that runs inside the node's namespace (only its
    /// network namespace: mounts stay shared, so containerd sees kubelet's volume mounts).
    pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{NETNS}"))
            .arg("--")
            .arg(program);
        command
    }

    /// Tears the node down now and waits for it (up to about a minute).
    pub fn teardown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        drop(self.stdin.take());
        for _ in 0..600 {
            if self.holder.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!("the node's teardown takes over a minute; leaving it running");
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits until no node holds the machine-wide node lock (none runs or is being torn down).
pub fn wait_until_no_node(timeout: Duration) -> Result<()> {
    let status = Command::new("flock")
        .arg("-w")
        .arg(timeout.as_secs().to_string())
        .arg(NODE_LOCK)
        .arg("true")
        .status()
        .map_err(|e| Error::io("running flock".into(), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Binaries(format!(
            "a node still holds {NODE_LOCK} after {timeout:?}"
        )))
    }
}

/// What of a node is still on this machine (namespaces, links, iptables rules, mounts,
/// processes, cgroups), one line each; empty when the machine is clean.
pub fn leftovers() -> Result<Vec<String>> {
    let output = Command::new("bash")
        .arg(NODE_SCRIPT)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {NODE_SCRIPT} check"), e))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}
