//! The backend's settings: each one a flag and an environment variable of the same name,
//! checked into a [`Config`] that tests build from a plain map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use vx11_tokenset::{LegacyTokenError, LegacyTokens};

/// vx11-operator-backend: health, chat and the operator event stream (SSE). Internal: only
/// the gateway reaches it, and it checks the token again.
///
/// Besides these settings, the Compose deployment's VX11_TENTACULO_LINK_TOKEN,
/// VX11_GATEWAY_TOKEN and VX11_OPERATOR_TOKEN, where set, are added to the token set.
#[derive(Debug, Clone, Parser)]
#[command(name = "vx11-operator-backend", version, about, long_about)]
pub struct Args {
    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "VX11_OPERATOR_BACKEND_ADDR",
        default_value = "0.0.0.0:8011"
    )]
    pub addr: SocketAddr,

    /// Directory the token Secret is mounted at (holds `tokens.json` or a plain `tokens`).
    #[arg(long, env = "VX11_TOKENS_DIR", default_value = "/var/run/vx11/tokens")]
    pub tokens_dir: PathBuf,

    /// Policy mode, reported by /operator/api/health: `solo_madre` or `full`.
    #[arg(
        long,
        env = "VX11_POLICY_MODE",
        default_value = "solo_madre",
        value_enum
    )]
    pub policy_mode: PolicyMode,

    /// Address of the Prometheus `/metrics` listener.
    #[arg(long, env = "VX11_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Log filter, in `RUST_LOG` syntax (e.g. `info` or `info,vx11_operator_backend=debug`).
    /// Logs are JSON lines on stderr.
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// How many recent events are kept for replay (`follow=false`) and resume
    /// (`Last-Event-ID`).
    #[arg(long, env = "VX11_EVENT_HISTORY", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub event_history: u64,

    /// Send an SSE keep-alive comment on a quiet stream this often (e.g. `15s`, `500ms`).
    #[arg(long, env = "VX11_SSE_KEEP_ALIVE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sse_keep_alive: Duration,

    /// Re-read the token directory this often even without a file event.
    #[arg(long, env = "VX11_TOKENS_POLL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub tokens_poll_interval: Duration,

    /// On SIGTERM, wait this long for in-flight requests before closing connections
    /// (open streams end at once).
    #[arg(long, env = "VX11_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// `VX11_POLICY_MODE`. The backend only reports it; the gateway enforces it.
pub use vx11_tokenset::service::PolicyMode;

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub tokens_dir: PathBuf,
    pub policy_mode: PolicyMode,
    pub log_filter: String,
    pub event_history: usize,
    pub sse_keep_alive: Duration,
    pub tokens_poll_interval: Duration,
    pub shutdown_grace: Duration,
    /// Tokens from the Compose deployment's environment variables.
    pub legacy: LegacyTokens,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or variable that does not parse (clap's message, which names the flag).
    #[error("{0}")]
    Args(String),
    #[error(transparent)]
    Legacy(#[from] LegacyTokenError),
    #[error("{name} must be more than zero")]
    Zero { name: &'static str },
}

impl ConfigError {
    /// clap's message on one line, without its "try --help" footer, naming the
    /// environment variable of the flag it is about.
    fn from_clap(error: &clap::Error) -> Self {
        let rendered = error.render().to_string();
        let mut text = rendered
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(rest) = text.strip_prefix("error: ") {
            text = rest.to_owned();
        }
        let command = Args::command();
        let var = command.get_arguments().find_map(|arg| {
            let long = arg.get_long()?;
            let named =
                text.contains(&format!("'--{long} ")) || text.contains(&format!("'--{long}'"));
            named.then(|| arg.get_env()?.to_str()).flatten()
        });
        if let Some(var) = var {
            text.push_str(&format!(" (env: {var})"));
        }
        Self::Args(text)
    }
}

impl Config {
    /// From the process's flags and environment. `--help` and `--version` print and exit.
    pub fn from_env() -> Result<Self, ConfigError> {
        let args = match Args::try_parse() {
            Ok(args) => args,
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => return Err(ConfigError::from_clap(&error)),
        };
        Self::from_args(args, LegacyTokens::from_env()?)
    }

    /// From variables looked up by name (a plain map in tests), ignoring the process's
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let command = Args::command();
        let mut argv = vec!["vx11-operator-backend".to_owned()];
        for arg in command.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            if let Some(value) = var.to_str().and_then(&lookup) {
                argv.push(format!("--{long}={value}"));
            }
        }
        let matches = command
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(argv)
            .map_err(|e| ConfigError::from_clap(&e))?;
        let args = Args::from_arg_matches(&matches).map_err(|e| ConfigError::from_clap(&e))?;
        Self::from_args(args, LegacyTokens::from_lookup(&lookup)?)
    }

    pub fn from_args(args: Args, legacy: LegacyTokens) -> Result<Self, ConfigError> {
        for (name, value) in [
            ("VX11_SSE_KEEP_ALIVE", args.sse_keep_alive),
            ("VX11_TOKENS_POLL_INTERVAL", args.tokens_poll_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { name });
            }
        }
        Ok(Self {
            addr: args.addr,
            metrics_addr: args.metrics_addr,
            tokens_dir: args.tokens_dir,
            policy_mode: args.policy_mode,
            log_filter: args.log_filter,
            // At most 1 000 000 by the parser, so it fits.
            event_history: usize::try_from(args.event_history).unwrap_or(usize::MAX),
            sse_keep_alive: args.sse_keep_alive,
            tokens_poll_interval: args.tokens_poll_interval,
            shutdown_grace: args.shutdown_grace,
            legacy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = config(&[]).unwrap();
        assert_eq!(config.addr.to_string(), "0.0.0.0:8011");
        assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(config.tokens_dir, PathBuf::from("/var/run/vx11/tokens"));
        assert_eq!(config.policy_mode, PolicyMode::SoloMadre);
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.event_history, 1000);
        assert_eq!(config.sse_keep_alive, Duration::from_secs(15));
        assert_eq!(config.tokens_poll_interval, Duration::from_secs(2));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert!(config.legacy.is_empty());
    }

    #[test]
    fn reads_every_variable() {
        let config = config(&[
            ("VX11_OPERATOR_BACKEND_ADDR", "127.0.0.1:0"),
            ("VX11_METRICS_ADDR", "127.0.0.1:9191"),
            ("VX11_TOKENS_DIR", "/tmp/tokens"),
            ("VX11_POLICY_MODE", "full"),
            ("RUST_LOG", "debug"),
            ("VX11_EVENT_HISTORY", "5"),
            ("VX11_SSE_KEEP_ALIVE", "250ms"),
            ("VX11_TOKENS_POLL_INTERVAL", "1s"),
            ("VX11_SHUTDOWN_GRACE", "0s"),
            ("VX11_OPERATOR_TOKEN", "vx11-operator-test-token"),
        ])
        .unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.metrics_addr.port(), 9191);
        assert_eq!(config.tokens_dir, PathBuf::from("/tmp/tokens"));
        assert_eq!(config.policy_mode, PolicyMode::Full);
        assert_eq!(config.log_filter, "debug");
        assert_eq!(config.event_history, 5);
        assert_eq!(config.sse_keep_alive, Duration::from_millis(250));
        assert_eq!(config.tokens_poll_interval, Duration::from_secs(1));
        assert_eq!(config.shutdown_grace, Duration::ZERO);
        assert_eq!(config.legacy.iter().count(), 1);
    }

    #[test]
    fn clear_errors() {
        let err = config(&[("VX11_POLICY_MODE", "all")]).unwrap_err();
        assert!(
            err.contains("solo_madre") && err.contains("--policy-mode"),
            "{err}"
        );
        let err = config(&[("VX11_OPERATOR_BACKEND_ADDR", "localhost")]).unwrap_err();
        assert!(err.contains("--addr"), "{err}");
        let err = config(&[("VX11_EVENT_HISTORY", "0")]).unwrap_err();
        assert!(err.contains("--event-history"), "{err}");
        let err = config(&[("VX11_SSE_KEEP_ALIVE", "0s")]).unwrap_err();
        assert!(err.contains("VX11_SSE_KEEP_ALIVE"), "{err}");
        let err = config(&[("VX11_SSE_KEEP_ALIVE", "soon")]).unwrap_err();
        assert!(err.contains("--sse-keep-alive"), "{err}");
        let err = config(&[("VX11_GATEWAY_TOKEN", "abc123")]).unwrap_err();
        assert!(
            err.contains("VX11_GATEWAY_TOKEN") && !err.contains("abc123"),
            "{err}"
        );
    }

    #[test]
    fn help_lists_every_setting() {
        let help = Args::command().render_long_help().to_string();
        for var in [
            "VX11_OPERATOR_BACKEND_ADDR",
            "VX11_TOKENS_DIR",
            "VX11_POLICY_MODE",
            "VX11_METRICS_ADDR",
            "RUST_LOG",
            "VX11_EVENT_HISTORY",
            "VX11_SSE_KEEP_ALIVE",
            "VX11_TOKENS_POLL_INTERVAL",
            "VX11_SHUTDOWN_GRACE",
            "VX11_OPERATOR_TOKEN",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }
}
