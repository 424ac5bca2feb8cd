//! What every request of a worker shares: the token set, the modules, the backends'
//! clients, the limits, the metrics and the shutdown signal; and, with every other worker,
//! the count of open event streams.

use std::sync::Arc;
use std::time::Duration;

use vx11_service::{Shutdown, StreamLimits, StreamSlots};
use vx11_tokenset::TokenStore;

use crate::config::Config;
use crate::cors::Cors;
use crate::forwarded::TrustedProxies;
use crate::metrics::GatewayMetrics;
use crate::modules::{Modules, PolicyMode};
use crate::upstream::Upstreams;

/// Everything a request needs.
#[derive(Debug)]
pub struct Gateway {
    pub store: Arc<TokenStore>,
    pub modules: Modules,
    pub mode: PolicyMode,
    pub upstreams: Upstreams,
    pub upstream_idle_timeout: Duration,
    pub max_body_bytes: u64,
    /// `VX11_STREAM_*`: stall timeout and buffer of an event stream.
    pub streams: StreamLimits,
    /// The open event streams of the whole process (all workers share one).
    pub stream_slots: Arc<StreamSlots>,
    /// Peers whose `X-Forwarded-For` is kept (`VX11_TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// `VX11_PROXY_REDIRECT=default`: backend URLs in `Location`/`Refresh` rewritten.
    pub rewrite_redirects: bool,
    pub metrics: Arc<GatewayMetrics>,
    /// `VX11_WEBSOCKET_*`: a WebSocket tunnel's limits.
    pub websocket: crate::tunnel::TunnelLimits,
    pub shutdown: Shutdown,
    pub tokens_dir: String,
    /// `VX11_CORS_*`: preflights and the `Access-Control-*` headers of answers.
    pub cors: Cors,
    /// `VX11_STREAM_RETRY`: what the outage stream asks EventSource to wait.
    pub stream_retry: Duration,
}

impl Gateway {
    /// `stream_slots`: made once per process ([`StreamSlots::new`] of
    /// `config.service.streams`) and given to every worker's gateway.
    pub fn new(
        config: &Config,
        store: Arc<TokenStore>,
        metrics: Arc<GatewayMetrics>,
        shutdown: Shutdown,
        stream_slots: Arc<StreamSlots>,
    ) -> Self {
        Self {
            store,
            modules: config.modules.clone(),
            mode: config.service.policy_mode,
            upstreams: Upstreams::new(
                config.upstream_connect_timeout,
                config.upstream_timeout,
                config.service.streams.buffer_bytes,
                &config.proxy,
            ),
            upstream_idle_timeout: config.upstream_idle_timeout,
            max_body_bytes: config.max_body_bytes,
            streams: config.service.streams.clone(),
            stream_slots,
            trusted_proxies: config.trusted_proxies.clone(),
            rewrite_redirects: config.proxy.rewrite_redirects,
            metrics,
            websocket: config.websocket,
            shutdown,
            tokens_dir: config.service.tokens_dir.display().to_string(),
            cors: config.cors.clone(),
            stream_retry: config.stream_retry,
        }
    }
}
