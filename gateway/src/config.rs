//! The gateway's settings: each one a flag and an environment variable of the same name.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vx11_service::{ServiceSettings, SettingError, parse_duration};

use crate::cors::{Cors, CorsArgs, CorsError};
use crate::forwarded::TrustedProxies;
use crate::modules::{Modules, Upstream};
use crate::outage::OutageArgs;
use crate::proxy_settings::{ProxyArgs, ProxySettings, ProxySettingsError};
use crate::upstream::MIN_STREAM_BUFFER_BYTES;
use crate::worker_cpus::{WorkerCpus, WorkerCpusError};

/// vx11-gateway: the public entrypoint. Checks the token of every `/<module>/api/*` request
/// and streams it, unchanged, to the module's backend.
#[derive(Debug, Clone, Parser)]
#[command(name = "vx11-gateway", version, about, long_about = None)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "VX11_GATEWAY_ADDR", default_value = "0.0.0.0:8000")]
    pub addr: SocketAddr,

    /// Base URL of the operator backend (`/operator/api/*` goes there).
    #[arg(
        long,
        env = "VX11_OPERATOR_BACKEND_URL",
        default_value = "http://vx11-operator-backend:8011"
    )]
    pub operator_backend_url: String,

    #[command(flatten)]
    pub service: ServiceSettings,

    /// Other modules, `name=url,...` (e.g. `madre=http://madre:8001,switch=http://switch:8002`).
    #[arg(long, env = "VX11_MODULES", default_value = "")]
    pub modules: String,

    /// Modules whose event streams (requests with `Accept: text/event-stream`) go to the
    /// backend over HTTP/2 without TLS (h2c), all of a worker's streams on one connection,
    /// rather than one HTTP/1.1 connection each; their backends must speak h2c
    /// (vx11-operator-backend does). Empty: HTTP/1.1 only.
    #[arg(long, env = "VX11_H2C_STREAMS", default_value = "operator")]
    pub h2c_streams: String,

    /// Give up connecting to a backend after this long (answer 502). Above 1 s, so a SYN
    /// the kernel dropped and retransmits after 1 s still connects.
    #[arg(long, env = "VX11_UPSTREAM_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Give up waiting for a backend's response headers after this long (answer 504).
    #[arg(long, env = "VX11_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// End a response body (an SSE stream too) that sends nothing for this long.
    #[arg(long, env = "VX11_UPSTREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// Largest request body passed on, in bytes (larger ones get 413).
    #[arg(long, env = "VX11_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: u64,

    /// Worker threads, each a single-threaded runtime accepting on the shared port
    /// (default: the CPUs this process may use).
    #[arg(long, env = "VX11_WORKERS")]
    pub workers: Option<usize>,

    /// `auto`: with two or more workers, each on a CPU of its own (the first CPUs this
    /// process may run on) and each new connection to the worker on the CPU its handshake
    /// arrived on; for CPUs the gateway has to itself (`docs/gateway.md`). `off`, and a
    /// single worker: workers run anywhere.
    #[arg(long, env = "VX11_WORKER_CPUS", value_enum, default_value_t = WorkerCpus::Off)]
    pub worker_cpus: WorkerCpus,

    /// Proxies in front of the gateway whose `X-Forwarded-For` is kept and appended to:
    /// IPs or CIDR ranges, comma-separated (e.g. `10.0.0.0/8,192.168.1.7`). From any other
    /// peer the header is replaced by the peer's address. Empty: no peer is trusted.
    #[arg(long, env = "VX11_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// The express lane: plain proxied `GET`s over HTTP/1.1 in the clear answered without
    /// hyper's machinery (`docs/gateway.md`); `false` sends every request the full path.
    /// Off with TLS or CORS, whatever this says.
    #[arg(long, env = "VX11_EXPRESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub express: bool,

    #[command(flatten)]
    pub websocket: crate::tunnel::WebSocketArgs,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    #[command(flatten)]
    pub cors: CorsArgs,

    #[command(flatten)]
    pub outage: OutageArgs,
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Tokens, metrics, policy, logs, shutdown: as the operator backend takes them.
    pub service: ServiceSettings,
    pub modules: Modules,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub workers: usize,
    /// `VX11_WORKER_CPUS=auto`: the CPU of each worker; `None`: off.
    pub worker_cpus: Option<Vec<usize>>,
    pub trusted_proxies: TrustedProxies,
    /// `VX11_EXPRESS`, and neither TLS nor CORS on: the express lane takes what it can.
    pub express: bool,
    pub websocket: crate::tunnel::TunnelLimits,
    /// `VX11_TLS_DIR`; `None`: no TLS.
    pub tls_dir: Option<std::path::PathBuf>,
    /// Response head limits, redirect rewriting, h2c fallbacks.
    pub proxy: ProxySettings,
    /// `VX11_CORS_*`: cross-origin pages (off by default).
    pub cors: Cors,
    /// `VX11_STREAM_RETRY`: the `retry:` of the outage stream (`crate::outage`).
    pub stream_retry: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("VX11_OPERATOR_BACKEND_URL: {0}")]
    OperatorBackendUrl(String),
    #[error("VX11_MODULES: {0}")]
    Modules(String),
    #[error("VX11_H2C_STREAMS: {0}")]
    H2cStreams(String),
    #[error("VX11_TRUSTED_PROXIES: {0}")]
    TrustedProxies(String),
    #[error(
        "VX11_STREAM_BUFFER_BYTES must be at least {min} at the gateway (an HTTP/2 frame, the bytes in flight to the client and a stream window of a frame)"
    )]
    StreamBuffer { min: usize },
    #[error("{name} must be more than zero")]
    Zero { name: &'static str },
    #[error(transparent)]
    Proxy(#[from] ProxySettingsError),
    #[error(transparent)]
    Cors(#[from] CorsError),
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error(transparent)]
    WorkerCpus(#[from] WorkerCpusError),
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let operator =
            Upstream::parse(&args.operator_backend_url).map_err(ConfigError::OperatorBackendUrl)?;
        args.service.check()?;
        let modules = Modules::parse(operator, &args.modules, args.service.policy_mode)
            .map_err(ConfigError::Modules)?
            .with_h2c_streams(&args.h2c_streams)
            .map_err(ConfigError::H2cStreams)?;
        for (name, value) in [
            (
                "VX11_UPSTREAM_CONNECT_TIMEOUT",
                args.upstream_connect_timeout,
            ),
            ("VX11_UPSTREAM_TIMEOUT", args.upstream_timeout),
            ("VX11_UPSTREAM_IDLE_TIMEOUT", args.upstream_idle_timeout),
            ("VX11_STREAM_RETRY", args.outage.stream_retry),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { name });
            }
        }
        if args.max_body_bytes == 0 {
            return Err(ConfigError::Zero {
                name: "VX11_MAX_BODY_BYTES",
            });
        }
        if args.service.streams.buffer_bytes < MIN_STREAM_BUFFER_BYTES {
            return Err(ConfigError::StreamBuffer {
                min: MIN_STREAM_BUFFER_BYTES,
            });
        }
        let trusted_proxies =
            TrustedProxies::parse(&args.trusted_proxies).map_err(ConfigError::TrustedProxies)?;
        if args.workers == Some(0) {
            return Err(ConfigError::Zero {
                name: "VX11_WORKERS",
            });
        }
        let websocket = args
            .websocket
            .limits()
            .map_err(|name| ConfigError::Zero { name })?;
        let proxy = ProxySettings::from_args(&args.proxy)?;
        let workers = args.workers.unwrap_or_else(default_workers);
        Ok(Self {
            websocket,
            proxy,
            workers,
            worker_cpus: args.worker_cpus.assign(workers)?,
            addr: args.addr,
            service: args.service,
            modules,
            upstream_connect_timeout: args.upstream_connect_timeout,
            upstream_timeout: args.upstream_timeout,
            upstream_idle_timeout: args.upstream_idle_timeout,
            max_body_bytes: args.max_body_bytes,
            trusted_proxies,
            express: args.express,
            tls_dir: args.tls.dir().map(std::path::Path::to_path_buf),
            cors: Cors::from_args(&args.cors)?,
            stream_retry: args.outage.stream_retry,
        })
    }
}

/// Workers when `VX11_WORKERS` is not set: the CPUs this process may use (cgroup quota
/// included).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::PolicyMode;
    use std::path::PathBuf;

    fn parse(flags: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("vx11-gateway").chain(flags.iter().copied()))
                .map_err(|e| e.to_string())?;
        Config::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.addr.to_string(), "0.0.0.0:8000");
        assert_eq!(config.service.metrics_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(
            config.service.tokens_dir,
            PathBuf::from("/var/run/vx11/tokens")
        );
        assert_eq!(config.service.policy_mode, PolicyMode::SoloMadre);
        assert!(config.modules.get("operator").unwrap().streams_over_h2c);
        let config = parse(&["--h2c-streams", "", "--modules", "madre=http://m:1"]).unwrap();
        assert!(!config.modules.get("operator").unwrap().streams_over_h2c);
        assert!(!config.modules.get("madre").unwrap().streams_over_h2c);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.service.streams.buffer_bytes, 64 * 1024);
        assert_eq!(config.tls_dir, None);
        assert_eq!(config.service.listener.max_headers, 256);
        assert_eq!(config.proxy.max_response_header_bytes, 16 * 1024);
        assert_eq!(config.proxy.max_response_headers, 256);
        assert!(config.proxy.rewrite_redirects);
        assert!(
            !parse(&["--proxy-redirect", "off"])
                .unwrap()
                .proxy
                .rewrite_redirects
        );
        assert!(!config.cors.is_on());
        assert_eq!(config.stream_retry, Duration::from_secs(3));
        assert_eq!(config.worker_cpus, None);
    }

    #[test]
    fn clear_errors() {
        let err = parse(&["--operator-backend-url", "ftp://x"]).unwrap_err();
        assert!(
            err.contains("VX11_OPERATOR_BACKEND_URL") && err.contains("http://"),
            "{err}"
        );
        let err = parse(&["--modules", "madre"]).unwrap_err();
        assert!(err.contains("name=url"), "{err}");
        let err = parse(&["--policy-mode", "all"]).unwrap_err();
        assert!(err.contains("solo_madre"), "{err}");
        let err = parse(&["--upstream-timeout", "0s"]).unwrap_err();
        assert!(err.contains("VX11_UPSTREAM_TIMEOUT"), "{err}");
        let err = parse(&["--h2c-streams", "madre"]).unwrap_err();
        assert!(
            err.contains("VX11_H2C_STREAMS") && err.contains("`madre` is not a routed module"),
            "{err}"
        );
        let err = parse(&["--workers", "0"]).unwrap_err();
        assert!(err.contains("VX11_WORKERS"), "{err}");
        let err = parse(&["--worker-cpus", "all"]).unwrap_err();
        assert!(err.contains("auto") && err.contains("off"), "{err}");
        let err = parse(&["--worker-cpus", "auto", "--workers", "4097"]).unwrap_err();
        assert!(
            err.contains("VX11_WORKER_CPUS=auto") && err.contains("VX11_WORKERS is 4097"),
            "{err}"
        );
        let err = parse(&["--trusted-proxies", "10.0.0.0/40"]).unwrap_err();
        assert!(err.contains("VX11_TRUSTED_PROXIES"), "{err}");
        for (flags, var) in [
            (
                ["--max-response-header-bytes", "4096"],
                "VX11_MAX_RESPONSE_HEADER_BYTES",
            ),
            (["--max-response-headers", "0"], "VX11_MAX_RESPONSE_HEADERS"),
            (["--proxy-redirect", "on"], "VX11_PROXY_REDIRECT"),
        ] {
            let err = parse(&flags).unwrap_err();
            assert!(err.contains(var), "{err}");
        }
        let err = parse(&[
            "--cors-allowed-origins",
            "*",
            "--cors-allow-credentials",
            "true",
        ])
        .unwrap_err();
        assert!(
            err.contains("VX11_CORS_ALLOWED_ORIGINS")
                && err.contains("VX11_CORS_ALLOW_CREDENTIALS"),
            "{err}"
        );
        let err = parse(&["--stream-retry", "0s"]).unwrap_err();
        assert!(err.contains("VX11_STREAM_RETRY"), "{err}");
        let err = parse(&["--stream-buffer-bytes", "1024"]).unwrap_err();
        assert!(err.contains("VX11_STREAM_BUFFER_BYTES"), "{err}");
    }

    #[test]
    fn help_lists_every_env_var() {
        let help = <Args as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for var in [
            "VX11_GATEWAY_ADDR",
            "VX11_OPERATOR_BACKEND_URL",
            "VX11_TOKENS_DIR",
            "VX11_POLICY_MODE",
            "VX11_MODULES",
            "VX11_METRICS_ADDR",
            "RUST_LOG",
            "VX11_WORKERS",
            "VX11_H2C_STREAMS",
            "VX11_TRUSTED_PROXIES",
            "VX11_STREAM_STALL_TIMEOUT",
            "VX11_STREAM_BUFFER_BYTES",
            "VX11_MAX_STREAMS",
            "VX11_MAX_STREAMS_PER_TOKEN",
            "VX11_WEBSOCKET_IDLE_TIMEOUT",
            "VX11_WEBSOCKET_MAX_FRAME_BYTES",
            "VX11_TLS_DIR",
            "VX11_MAX_HEADERS",
            "VX11_MAX_RESPONSE_HEADER_BYTES",
            "VX11_MAX_RESPONSE_HEADERS",
            "VX11_PROXY_REDIRECT",
            "VX11_CORS_ALLOWED_ORIGINS",
            "VX11_CORS_ALLOWED_METHODS",
            "VX11_CORS_ALLOWED_HEADERS",
            "VX11_CORS_ALLOW_CREDENTIALS",
            "VX11_CORS_MAX_AGE",
            "VX11_CORS_EXPOSE_HEADERS",
            "VX11_STREAM_RETRY",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }
}
