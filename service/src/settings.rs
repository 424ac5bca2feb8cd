//! The settings both services take, declared once and flattened into each binary's `Args`,
//! and the start-up both repeat: the token watcher, the `/metrics` listener and its serving,
//! and shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use vx11_tokenset::{LegacyTokens, TokenStore, TokenWatcher, WatchConfig};

use crate::{
    ListenerMetrics, PolicyMode, Protocols, Serving, Shutdown, bind_listener, parse_duration,
    serve_metrics,
};

/// Settings of the gateway and the operator backend alike. Each is a flag and an
/// environment variable of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceSettings {
    /// Directory the token Secret is mounted at (holds `tokens.json` or a plain `tokens`).
    #[arg(long, env = "VX11_TOKENS_DIR", default_value = "/var/run/vx11/tokens")]
    pub tokens_dir: PathBuf,

    /// Re-read the token directory this often even without a file event.
    #[arg(long, env = "VX11_TOKENS_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub tokens_poll_interval: Duration,

    /// Policy mode: `solo_madre` switches every module off but `operator` and `madre`;
    /// `full` switches every configured module on. The gateway enforces it; the operator
    /// backend reports it in /operator/api/health.
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

    /// Log filter, in `RUST_LOG` syntax (e.g. `info` or `info,vx11_gateway=debug`); logs are
    /// JSON lines on stderr.
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// On SIGTERM, wait this long for in-flight requests before closing connections (open
    /// event streams end at once).
    #[arg(long, env = "VX11_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub listener: ListenerLimits,

    #[command(flatten)]
    pub streams: StreamLimits,
}

/// Limits of every listener of both services (the API port and `/metrics`): how many
/// connections, how large and how slow a request head, how long an idle keep-alive
/// connection stays. `docs/SECURITY.md` says why each default is what it is.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenerLimits {
    /// Close a connection whose request head (request line and headers) has not fully
    /// arrived this long after its first byte (nginx: `client_header_timeout`).
    #[arg(long, env = "VX11_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head, in bytes (request line and headers); a larger one gets 431.
    #[arg(long, env = "VX11_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most header fields in a request head; a head with more gets 431.
    #[arg(long, env = "VX11_MAX_HEADERS", default_value_t = 256)]
    pub max_headers: usize,

    /// Close a keep-alive connection with no request in flight after this long
    /// (nginx: `keepalive_timeout`).
    #[arg(long, env = "VX11_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections per process on each listener; beyond it new connections are
    /// closed at once (counted in `vx11_connections_refused_total`).
    #[arg(long, env = "VX11_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

/// Limits of event streams (SSE), in the gateway and the backend alike.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamLimits {
    /// Drop an event stream whose client has read nothing for this long while events
    /// wait for it (nginx: `send_timeout`).
    #[arg(long = "stream-stall-timeout", env = "VX11_STREAM_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// Bytes of events held for one client that reads slowly; past it the stream is
    /// treated as stalled (kernel socket buffers not counted).
    #[arg(long = "stream-buffer-bytes", env = "VX11_STREAM_BUFFER_BYTES", default_value_t = 64 * 1024)]
    pub buffer_bytes: usize,

    /// Event streams open at once in this process; past it a new one gets 503.
    #[arg(long, env = "VX11_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,

    /// Event streams open at once with one token; past it a new one gets 429.
    #[arg(long, env = "VX11_MAX_STREAMS_PER_TOKEN", default_value_t = 5_000)]
    pub max_streams_per_token: usize,
}

impl Default for ListenerLimits {
    /// The flags' defaults (a test keeps the two the same).
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 256,
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
        }
    }
}

impl Default for StreamLimits {
    /// The flags' defaults (a test keeps the two the same).
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(60),
            buffer_bytes: 64 * 1024,
            max_streams: 10_000,
            max_streams_per_token: 5_000,
        }
    }
}

/// A shared setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("{name} must be more than zero")]
    Zero { name: &'static str },
    #[error("VX11_MAX_HEADER_BYTES must be at least {min} (the HTTP/1.1 parser's smallest buffer)")]
    HeaderBytes { min: usize },
}

/// The smallest request head limit hyper's HTTP/1.1 parser can work with.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

impl ServiceSettings {
    /// Refuses values that parse but cannot work.
    pub fn check(&self) -> Result<(), SettingError> {
        let durations = [
            ("VX11_TOKENS_POLL_INTERVAL", self.tokens_poll_interval),
            (
                "VX11_HEADER_READ_TIMEOUT",
                self.listener.header_read_timeout,
            ),
            ("VX11_IDLE_TIMEOUT", self.listener.idle_timeout),
            ("VX11_STREAM_STALL_TIMEOUT", self.streams.stall_timeout),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(SettingError::Zero { name });
            }
        }
        let counts = [
            ("VX11_MAX_CONNECTIONS", self.listener.max_connections),
            ("VX11_MAX_HEADERS", self.listener.max_headers),
            ("VX11_STREAM_BUFFER_BYTES", self.streams.buffer_bytes),
            ("VX11_MAX_STREAMS", self.streams.max_streams),
            (
                "VX11_MAX_STREAMS_PER_TOKEN",
                self.streams.max_streams_per_token,
            ),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(SettingError::Zero { name });
            }
        }
        if self.listener.max_header_bytes < MIN_HEADER_BYTES {
            return Err(SettingError::HeaderBytes {
                min: MIN_HEADER_BYTES,
            });
        }
        Ok(())
    }
}

/// What [`start`] set up.
#[derive(Debug)]
pub struct Started {
    /// Keeps the token set reloading; dropped last.
    pub watcher: TokenWatcher,
    pub store: Arc<TokenStore>,
    pub metrics_listener: TcpListener,
    /// Triggered by SIGTERM or SIGINT.
    pub shutdown: Shutdown,
}

/// The start-up both services share: loads and watches the token directory, binds the
/// `/metrics` listener, and installs the signal handlers. The service's own listener is
/// bound by the caller, between this and [`Started::serve_metrics`].
pub async fn start(settings: &ServiceSettings, legacy: LegacyTokens) -> std::io::Result<Started> {
    let mut watch = WatchConfig::new(&settings.tokens_dir);
    watch.poll_interval = settings.tokens_poll_interval;
    let watcher = TokenWatcher::start(watch, legacy)?;
    let store = watcher.store().clone();
    let metrics_listener = bind_listener(settings.metrics_addr, "VX11_METRICS_ADDR")?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    Ok(Started {
        watcher,
        store,
        metrics_listener,
        shutdown,
    })
}

impl Started {
    /// Serves `registry` (the service's metrics, [`crate::TokenMetrics`] and `listeners`
    /// among them) on the `/metrics` listener until shutdown, under `settings`' listener
    /// limits; what is left to keep is the watcher and the shutdown signal.
    pub fn serve_metrics(
        self,
        registry: Arc<Registry>,
        settings: &ServiceSettings,
        listeners: ListenerMetrics,
    ) -> (TokenWatcher, Shutdown) {
        let Started {
            watcher,
            store,
            metrics_listener,
            shutdown,
        } = self;
        let serving = Serving::new("metrics", Protocols::Http1, settings, listeners);
        let serve = serve_metrics(metrics_listener, registry, store, shutdown.clone(), serving);
        tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        });
        (watcher, shutdown)
    }
}

/// Parses `A` from variables looked up by name (a plain map in tests), ignoring the
/// process's environment: each flag with an `env` name gets that variable's value.
pub fn args_from_lookup<A>(
    name: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<A, clap::Error>
where
    A: CommandFactory + FromArgMatches,
{
    let command = A::command();
    let mut argv = vec![name.to_owned()];
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        if let Some(value) = var.to_str().and_then(lookup) {
            argv.push(format!("--{long}={value}"));
        }
    }
    let matches = command
        .mut_args(|arg| arg.env(None::<&'static str>))
        .try_get_matches_from(argv)?;
    A::from_arg_matches(&matches)
}

/// clap's message on one line, without its "try --help" footer, naming the environment
/// variable of the flag it is about.
pub fn clap_message<A: CommandFactory>(error: &clap::Error) -> String {
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
    let command = A::command();
    let var = command.get_arguments().find_map(|arg| {
        let long = arg.get_long()?;
        let named = text.contains(&format!("'--{long} ")) || text.contains(&format!("'--{long}'"));
        named.then(|| arg.get_env()?.to_str()).flatten()
    });
    if let Some(var) = var {
        text.push_str(&format!(" (env: {var})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Only {
        #[command(flatten)]
        service: ServiceSettings,
    }

    #[test]
    fn the_limits_defaults_are_the_flags_defaults() {
        let parsed: Only = args_from_lookup("test", &|_| None).unwrap();
        let defaults = ListenerLimits::default();
        let listener = &parsed.service.listener;
        assert_eq!(listener.header_read_timeout, defaults.header_read_timeout);
        assert_eq!(listener.max_header_bytes, defaults.max_header_bytes);
        assert_eq!(listener.max_headers, defaults.max_headers);
        assert_eq!(listener.idle_timeout, defaults.idle_timeout);
        assert_eq!(listener.max_connections, defaults.max_connections);
        let streams = &parsed.service.streams;
        let defaults = StreamLimits::default();
        assert_eq!(streams.stall_timeout, defaults.stall_timeout);
        assert_eq!(streams.buffer_bytes, defaults.buffer_bytes);
        assert_eq!(streams.max_streams, defaults.max_streams);
        assert_eq!(
            streams.max_streams_per_token,
            defaults.max_streams_per_token
        );
        parsed.service.check().unwrap();
    }

    #[test]
    fn limits_that_cannot_work_are_refused_with_their_variable() {
        for (var, value) in [
            ("VX11_HEADER_READ_TIMEOUT", "0s"),
            ("VX11_IDLE_TIMEOUT", "0ms"),
            ("VX11_MAX_CONNECTIONS", "0"),
            ("VX11_MAX_HEADERS", "0"),
            ("VX11_MAX_HEADER_BYTES", "1024"),
            ("VX11_STREAM_STALL_TIMEOUT", "0s"),
            ("VX11_MAX_STREAMS_PER_TOKEN", "0"),
        ] {
            let parsed: Only =
                args_from_lookup("test", &|name| (name == var).then(|| value.to_owned())).unwrap();
            let error = parsed.service.check().unwrap_err().to_string();
            assert!(error.contains(var), "{var}: {error}");
        }
    }
}
