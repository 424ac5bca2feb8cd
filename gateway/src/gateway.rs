//! What every request of a worker shares: the token set, the modules, the backends'
//! clients, the limits, the metrics and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use vx11_service::Shutdown;
use vx11_tokenset::TokenStore;

use crate::config::Config;
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
    pub metrics: Arc<GatewayMetrics>,
    pub shutdown: Shutdown,
    pub tokens_dir: String,
}

impl Gateway {
    pub fn new(
        config: &Config,
        store: Arc<TokenStore>,
        metrics: Arc<GatewayMetrics>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            store,
            modules: config.modules.clone(),
            mode: config.service.policy_mode,
            upstreams: Upstreams::new(config.upstream_connect_timeout, config.upstream_timeout),
            upstream_idle_timeout: config.upstream_idle_timeout,
            max_body_bytes: config.max_body_bytes,
            metrics,
            shutdown,
            tokens_dir: config.service.tokens_dir.display().to_string(),
        }
    }
}
