//! The backend's settings: each one a flag and an environment variable of the same name,
//! checked into a [`Config`] that tests build from a plain map.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vx11_service::{ServiceSettings, SettingError, args_from_lookup, clap_message, parse_duration};
use vx11_tokenset::{LegacyTokenError, LegacyTokens};

use crate::events::HistoryLimits;

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

    #[command(flatten)]
    pub service: ServiceSettings,

    /// How many recent events are kept for replay (`follow=false`) and resume
    /// (`Last-Event-ID`).
    #[arg(long, env = "VX11_EVENT_HISTORY", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub event_history: u64,

    /// Bytes of encoded events (SSE frames) the history keeps at most; the oldest events are
    /// dropped first, as past `VX11_EVENT_HISTORY`.
    #[arg(long, env = "VX11_EVENT_HISTORY_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(64 * 1024..=1024 * 1024 * 1024))]
    pub event_history_bytes: u64,

    /// Bytes one event may take once encoded (its SSE frame, JSON escapes included); a chat
    /// message whose event would be larger is refused with 413.
    #[arg(long, env = "VX11_MAX_EVENT_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(32 * 1024..=16 * 1024 * 1024))]
    pub max_event_bytes: u64,

    /// Send an SSE keep-alive comment on a quiet stream this often (e.g. `15s`, `500ms`).
    #[arg(long, env = "VX11_SSE_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub sse_keep_alive: Duration,
}

/// `VX11_POLICY_MODE`. The backend only reports it; the gateway enforces it.
pub use vx11_service::PolicyMode;

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Tokens, metrics, policy, logs, shutdown: as the gateway takes them.
    pub service: ServiceSettings,
    /// `VX11_EVENT_HISTORY`, `VX11_EVENT_HISTORY_BYTES`, `VX11_MAX_EVENT_BYTES`.
    pub history: HistoryLimits,
    pub sse_keep_alive: Duration,
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
    #[error(
        "VX11_MAX_EVENT_BYTES ({event}) must not be more than VX11_EVENT_HISTORY_BYTES ({history}): the history must hold at least one event"
    )]
    EventLargerThanHistory { event: u64, history: u64 },
    #[error(transparent)]
    Setting(#[from] SettingError),
}

impl ConfigError {
    fn from_clap(error: &clap::Error) -> Self {
        Self::Args(clap_message::<Args>(error))
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
        let args = args_from_lookup::<Args>("vx11-operator-backend", &lookup)
            .map_err(|e| ConfigError::from_clap(&e))?;
        Self::from_args(args, LegacyTokens::from_lookup(&lookup)?)
    }

    pub fn from_args(args: Args, legacy: LegacyTokens) -> Result<Self, ConfigError> {
        if args.sse_keep_alive.is_zero() {
            return Err(ConfigError::Zero {
                name: "VX11_SSE_KEEP_ALIVE",
            });
        }
        args.service.check()?;
        if args.max_event_bytes > args.event_history_bytes {
            return Err(ConfigError::EventLargerThanHistory {
                event: args.max_event_bytes,
                history: args.event_history_bytes,
            });
        }
        // Each at most 1 GiB by the parser, so they fit.
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Self {
            addr: args.addr,
            service: args.service,
            history: HistoryLimits {
                events: size(args.event_history),
                bytes: size(args.event_history_bytes),
                event_bytes: size(args.max_event_bytes),
            },
            sse_keep_alive: args.sse_keep_alive,
            legacy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::HashMap;
    use std::path::PathBuf;

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
        assert_eq!(config.service.metrics_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(
            config.service.tokens_dir,
            PathBuf::from("/var/run/vx11/tokens")
        );
        assert_eq!(config.service.policy_mode, PolicyMode::SoloMadre);
        assert_eq!(config.service.log_filter, "info");
        assert_eq!(config.history, HistoryLimits::DEFAULT);
        assert_eq!(config.history.bytes, 4 * 1024 * 1024);
        assert_eq!(config.history.event_bytes, 64 * 1024);
        assert_eq!(
            config.service.streams.stall_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(config.service.streams.buffer_bytes, 64 * 1024);
        assert_eq!(config.sse_keep_alive, Duration::from_secs(15));
        assert_eq!(config.service.tokens_poll_interval, Duration::from_secs(2));
        assert_eq!(config.service.shutdown_grace, Duration::from_secs(10));
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
            ("VX11_EVENT_HISTORY_BYTES", "1048576"),
            ("VX11_MAX_EVENT_BYTES", "40000"),
            ("VX11_STREAM_STALL_TIMEOUT", "2s"),
            ("VX11_SSE_KEEP_ALIVE", "250ms"),
            ("VX11_TOKENS_POLL_INTERVAL", "1s"),
            ("VX11_SHUTDOWN_GRACE", "0s"),
            ("VX11_OPERATOR_TOKEN", "vx11-operator-test-token"),
        ])
        .unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.service.metrics_addr.port(), 9191);
        assert_eq!(config.service.tokens_dir, PathBuf::from("/tmp/tokens"));
        assert_eq!(config.service.policy_mode, PolicyMode::Full);
        assert_eq!(config.service.log_filter, "debug");
        assert_eq!(
            config.history,
            HistoryLimits {
                events: 5,
                bytes: 1_048_576,
                event_bytes: 40_000
            }
        );
        assert_eq!(config.service.streams.stall_timeout, Duration::from_secs(2));
        assert_eq!(config.sse_keep_alive, Duration::from_millis(250));
        assert_eq!(config.service.tokens_poll_interval, Duration::from_secs(1));
        assert_eq!(config.service.shutdown_grace, Duration::ZERO);
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
        let err = config(&[("VX11_MAX_EVENT_BYTES", "100")]).unwrap_err();
        assert!(err.contains("--max-event-bytes"), "{err}");
        let err = config(&[
            ("VX11_EVENT_HISTORY_BYTES", "100000"),
            ("VX11_MAX_EVENT_BYTES", "200000"),
        ])
        .unwrap_err();
        assert!(
            err.contains("VX11_MAX_EVENT_BYTES") && err.contains("VX11_EVENT_HISTORY_BYTES"),
            "{err}"
        );
        let err = config(&[("VX11_STREAM_STALL_TIMEOUT", "0s")]).unwrap_err();
        assert!(err.contains("VX11_STREAM_STALL_TIMEOUT"), "{err}");
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
            "VX11_EVENT_HISTORY_BYTES",
            "VX11_MAX_EVENT_BYTES",
            "VX11_STREAM_STALL_TIMEOUT",
            "VX11_STREAM_BUFFER_BYTES",
            "VX11_MAX_STREAMS",
            "VX11_MAX_STREAMS_PER_TOKEN",
            "VX11_SSE_KEEP_ALIVE",
            "VX11_TOKENS_POLL_INTERVAL",
            "VX11_SHUTDOWN_GRACE",
            "VX11_OPERATOR_TOKEN",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }
}
