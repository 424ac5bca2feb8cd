//! vx11-gateway: the single public entrypoint. It checks the token of every
//! `/<module>/api/*` request against the hot-reloaded token set and streams the request,
//! unchanged, to the module's backend.
//!
//! A request's way, one file per step, each importing only the next:
//! [`dispatch`] (module API or the router) → [`check`] (token, access line, policy) →
//! [`proxy`] (the request and response heads) → [`upstream`] (the backend clients) →
//! [`body`] (the response body streamed back). Around them: [`gateway`] (what requests
//! share), [`modules`] (the routing table), [`config`], [`metrics`], [`workers`]. What
//! the proxy refuses or rewrites: [`safe_path`], [`head`] (`Host`, HTTP/2 header list
//! size), [`forwarded`] (`X-Forwarded-For`); what it bounds: [`client_body`] (the request
//! body), [`pacing`] (an event stream's bytes in flight to its client). WebSocket upgrades:
//! [`websocket`] (the upgrade and the tunnel's life), [`tunnel`] (its bytes),
//! [`frame_guard`] (its frame sizes). For browsers: [`cors`] (preflights and
//! `Access-Control-*`), [`outage`] (an event stream's answer while its backend is down).

pub mod already_sent;
pub mod body;
pub mod check;
pub mod client_body;
pub mod config;
pub mod connect;
pub mod cors;
pub mod dispatch;
pub mod express;
pub mod forwarded;
pub mod frame_guard;
pub mod gateway;
pub mod h2c_fallback;
pub mod head;
pub mod metrics;
pub mod modules;
pub mod outage;
pub mod pacing;
pub mod proxy;
pub mod proxy_settings;
pub mod redirect;
pub mod response_limits;
pub mod safe_path;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod websocket;
pub mod worker_cpus;
pub mod workers;

pub use dispatch::app;
pub use gateway::Gateway;
pub use upstream::UpstreamClient;
