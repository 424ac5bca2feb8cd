//! The gateway's Prometheus metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vx11_service::{HttpMetrics, TokenMetrics};
use vx11_tokenset::TokenStore;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabel {
    pub module: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub module: String,
    pub kind: &'static str,
}

/// Why an event stream was refused: `too_many_streams` or `too_many_streams_for_token`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: &'static str,
}

/// Why a WebSocket tunnel ended: `closed`, `idle`, `too_large`, `shutdown`,
/// `token_revoked` or `error`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelEndLabel {
    pub reason: &'static str,
}

type HistogramFamily = Family<ModuleLabel, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct GatewayMetrics {
    pub http: Arc<HttpMetrics>,
    /// Time from sending a request to a backend until its response headers arrive.
    pub upstream_seconds: HistogramFamily,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_streams: Gauge,
    /// Event streams ended because their client read nothing for the stall timeout.
    pub stalled_streams: Counter,
    /// Event streams refused by the stream caps, by reason.
    pub refused_streams: Family<RefusalLabel, Counter>,
    pub open_tunnels: Gauge,
    /// WebSocket tunnels ended, by reason.
    pub ended_tunnels: Family<TunnelEndLabel, Counter>,
    /// Requests the express lane met, by what became of them (`crate::express`).
    pub express: Family<ExpressLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpressLabel {
    /// `answered`; `handed_over` (the full path took the request and its connection);
    /// `response_handed_over` (the lane sent it, the full path took its response).
    pub outcome: &'static str,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry, store: Arc<TokenStore>) -> Arc<Self> {
        let metrics = Self {
            http: HttpMetrics::register(registry, "vx11_gateway"),
            upstream_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0002, 2.0, 16))
            }),
            upstream_errors: Family::default(),
            open_streams: Gauge::default(),
            stalled_streams: Counter::default(),
            refused_streams: Family::default(),
            open_tunnels: Gauge::default(),
            ended_tunnels: Family::default(),
            express: Family::default(),
        };
        registry.register(
            "vx11_gateway_upstream_duration_seconds",
            "Time until a backend's response headers arrive, by module",
            metrics.upstream_seconds.clone(),
        );
        registry.register(
            "vx11_gateway_upstream_errors",
            "Requests a backend did not answer, by module and kind (unavailable, timeout, response_too_large)",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "vx11_gateway_open_streams",
            "Event streams (SSE) open through the gateway",
            metrics.open_streams.clone(),
        );
        registry.register(
            "vx11_gateway_stalled_streams",
            "Event streams ended because their client read nothing for VX11_STREAM_STALL_TIMEOUT",
            metrics.stalled_streams.clone(),
        );
        registry.register(
            "vx11_gateway_refused_streams",
            "Event streams refused by VX11_MAX_STREAMS (too_many_streams) or VX11_MAX_STREAMS_PER_TOKEN (too_many_streams_for_token)",
            metrics.refused_streams.clone(),
        );
        registry.register(
            "vx11_gateway_websocket_tunnels_open",
            "WebSocket tunnels open through the gateway",
            metrics.open_tunnels.clone(),
        );
        registry.register(
            "vx11_gateway_websocket_tunnels_ended",
            "WebSocket tunnels ended, by reason (closed, idle, too_large, shutdown, token_revoked, error)",
            metrics.ended_tunnels.clone(),
        );
        registry.register(
            "vx11_gateway_express_requests",
            "Requests the express lane met, by outcome (answered; handed_over: to the full path with their connection; response_handed_over: sent by the lane, the response read and answered by the full path)",
            metrics.express.clone(),
        );
        registry.register_collector(Box::new(TokenMetrics(store)));
        Arc::new(metrics)
    }
}
