//! What a request meets first. `/<module>/api[/…]`, nearly every request, goes straight to
//! the token check and the proxy, with its access line and metrics written inline; the
//! rest (`/health`, `/ready`, 404) goes through the axum router. The hot path skips axum's
//! routing and middleware layers: each layer boxed a future and cloned a service per
//! request, a few µs of the gateway's CPU per proxied request (`docs/BENCHMARKS.md`).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::Service;
use vx11_tokenset::service::{RequestRecord, authenticate};

use crate::Gateway;
use crate::policy::Module;
use crate::proxy;

/// The route label of a request to a module that is not routed (bounded, unlike the path).
const UNKNOWN_MODULE_ROUTE: &str = "/{module}/api/*";

/// The gateway as one service: the module API inline, everything else by `other`.
#[derive(Clone)]
pub struct GatewayService {
    gateway: Arc<Gateway>,
    other: Router,
}

impl GatewayService {
    pub fn new(gateway: Arc<Gateway>, other: Router) -> Self {
        Self { gateway, other }
    }
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayService")
    }
}

impl Service<Request> for GatewayService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match module_of(request.uri().path()) {
            Some(name) => {
                let module = self.gateway.modules.get(name).cloned();
                Box::pin(module_api(self.gateway.clone(), module, request))
            }
            None => Box::pin(self.other.call(request)),
        }
    }
}

/// `/<module>/api` or `/<module>/api/…`: the module's name.
pub fn module_of(path: &str) -> Option<&str> {
    let (module, rest) = path.strip_prefix('/')?.split_once('/')?;
    let after_api = rest.strip_prefix("api")?;
    (!module.is_empty() && (after_api.is_empty() || after_api.starts_with('/'))).then_some(module)
}

/// The token check, then the module (proxied, off by policy, or `None`: not routed);
/// counted and logged like every other route.
async fn module_api(
    gateway: Arc<Gateway>,
    module: Option<Arc<Module>>,
    request: Request,
) -> Result<Response, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = match authenticate(&gateway.store, request.headers(), uri.query()) {
        Ok(who) => {
            let mut response = match &module {
                Some(module) => proxy::to_module(&gateway, module, request).await,
                None => proxy::unknown_module(&gateway, uri.path()),
            };
            response.extensions_mut().insert(who);
            response
        }
        Err(error) => error.into_response(),
    };
    let route = module.map_or(UNKNOWN_MODULE_ROUTE, |m| m.route);
    gateway.metrics.http.record(RequestRecord {
        started,
        method: &method,
        uri: &uri,
        route: Cow::Borrowed(route),
        response: &response,
    });
    // Responses are built here; nothing downstream reads extensions.
    response.extensions_mut().clear();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::module_of;

    #[test]
    fn module_paths_are_recognised_and_nothing_else() {
        assert_eq!(module_of("/operator/api"), Some("operator"));
        assert_eq!(module_of("/operator/api/"), Some("operator"));
        assert_eq!(module_of("/operator/api/events/stream"), Some("operator"));
        assert_eq!(module_of("/madre/api/x"), Some("madre"));
        for other in [
            "/",
            "/health",
            "/ready",
            "/operator",
            "/operator/",
            "/operator/apix",
            "/operator/apis/x",
            "//api/x",
            "/operator/v1/api",
        ] {
            assert_eq!(module_of(other), None, "{other}");
        }
    }
}
