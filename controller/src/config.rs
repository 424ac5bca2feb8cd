//! Configuration: every setting is a flag and an environment variable of the same meaning
//! (`--help` lists them). [`Cli::settings`] checks and types them; a bad value is refused
//! before anything starts, as `Invalid configuration: …`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Reconciles Vx11TokenSet resources into the Secrets that vx11's gateway, operator backend
/// and clients read.
#[derive(Debug, Parser)]
#[command(name = "vx11-controller", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the listener for `/metrics`, `/health` and `/ready`.
    #[arg(long, env = "VX11_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,

    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, env = "VX11_WATCH_NAMESPACES", default_value = "")]
    pub watch_namespaces: String,

    /// Elect one active replica through a `coordination.k8s.io` Lease.
    #[arg(long, env = "VX11_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "VX11_LEASE_NAME", default_value = "vx11-controller")]
    pub lease_name: String,

    /// Namespace of the Lease; default: the pod's namespace (from its ServiceAccount mount),
    /// else `default`.
    #[arg(long, env = "VX11_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a leader's Lease is valid without renewal: a standby takes over after this.
    #[arg(long, env = "VX11_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,

    /// This replica's identity in the Lease; default: `$POD_NAME` or the host name, and the pid.
    #[arg(long, env = "VX11_IDENTITY")]
    pub identity: Option<String>,

    /// How many Vx11TokenSets are reconciled at the same time (bounds connections and memory).
    #[arg(long, env = "VX11_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Testing only: exit abruptly at a named point of a reconcile (`after-client-write`),
    /// to check that a crash there loses nothing.
    #[arg(long, env = "VX11_CRASH_AT", hide = true)]
    pub crash_at: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinition (YAML) and exit.
    Crd,
    /// Run the controller (the default).
    Run,
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub metrics_addr: SocketAddr,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    pub leader_election: Option<LeaseSettings>,
    pub concurrency: u16,
    pub crash_at: Option<CrashPoint>,
}

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub duration: Duration,
    pub identity: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterClientWrite,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Cli {
    /// Checks and types the settings. `pod_namespace` and `host` come from the environment
    /// (the ServiceAccount mount, `$POD_NAME`/host name); passed in so tests use plain values.
    pub fn settings(
        &self,
        pod_namespace: Option<String>,
        host: &str,
    ) -> Result<Settings, InvalidConfig> {
        let metrics_addr = self.metrics_addr.parse().map_err(|_| {
            InvalidConfig(format!(
                "--metrics-addr / VX11_METRICS_ADDR: `{}` is not an address like 0.0.0.0:9090",
                self.metrics_addr
            ))
        })?;
        let namespaces: Vec<String> = self
            .watch_namespaces
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = namespaces.iter().find(|n| !is_dns_label(n)) {
            return Err(InvalidConfig(format!(
                "--watch-namespaces / VX11_WATCH_NAMESPACES: `{bad}` is not a namespace name"
            )));
        }
        let leader_election = if self.leader_election {
            let duration = crate::duration::parse(&self.lease_duration).map_err(|e| {
                InvalidConfig(format!("--lease-duration / VX11_LEASE_DURATION: {e}"))
            })?;
            if duration < Duration::from_secs(2) {
                return Err(InvalidConfig(
                    "--lease-duration / VX11_LEASE_DURATION: at least 2s".into(),
                ));
            }
            let namespace = self
                .lease_namespace
                .clone()
                .or(pod_namespace)
                .unwrap_or_else(|| "default".to_owned());
            if !is_dns_label(&namespace) {
                return Err(InvalidConfig(format!(
                    "--lease-namespace / VX11_LEASE_NAMESPACE: `{namespace}` is not a namespace name"
                )));
            }
            if self.lease_name.is_empty() || self.lease_name.len() > 253 {
                return Err(InvalidConfig(
                    "--lease-name / VX11_LEASE_NAME: 1 to 253 characters".into(),
                ));
            }
            Some(LeaseSettings {
                name: self.lease_name.clone(),
                namespace,
                duration,
                identity: self
                    .identity
                    .clone()
                    .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
            })
        } else {
            None
        };
        let crash_at = match self.crash_at.as_deref() {
            None | Some("") => None,
            Some("after-client-write") => Some(CrashPoint::AfterClientWrite),
            Some(other) => {
                return Err(InvalidConfig(format!(
                    "VX11_CRASH_AT: unknown point `{other}`"
                )));
            }
        };
        if self.concurrency == 0 {
            return Err(InvalidConfig(
                "--concurrency / VX11_RECONCILE_CONCURRENCY: at least 1".into(),
            ));
        }
        Ok(Settings {
            metrics_addr,
            namespaces,
            leader_election,
            concurrency: self.concurrency,
            crash_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, InvalidConfig> {
        let mut argv = vec!["vx11-controller"];
        argv.extend(args);
        Cli::try_parse_from(argv).unwrap().settings(None, "host")
    }

    #[test]
    fn defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.metrics_addr.to_string(), "0.0.0.0:9090");
        assert!(s.namespaces.is_empty());
        let lease = s.leader_election.unwrap();
        assert_eq!(
            (lease.name.as_str(), lease.namespace.as_str()),
            ("vx11-controller", "default")
        );
        assert_eq!(lease.duration, Duration::from_secs(15));
        assert!(lease.identity.starts_with("host-"));
    }

    #[test]
    fn namespaces_and_lease() {
        let s = parse(&["--watch-namespaces", "a, b", "--leader-election", "false"]).unwrap();
        assert_eq!(s.namespaces, ["a", "b"]);
        assert!(s.leader_election.is_none());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (vec!["--metrics-addr", "nowhere"], "--metrics-addr"),
            (vec!["--watch-namespaces", "Not_A_NS"], "--watch-namespaces"),
            (vec!["--lease-duration", "5 minutes"], "--lease-duration"),
            (vec!["--lease-duration", "1s"], "at least 2s"),
            (vec!["--lease-namespace", "UPPER"], "--lease-namespace"),
            (vec!["--concurrency", "0"], "--concurrency"),
        ] {
            let err = parse(&args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
