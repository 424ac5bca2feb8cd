//! The first step of a request: `/<module>/api[/…]`, nearly every request, goes to the
//! token check ([`crate::check`]) and on to the proxy; the rest (`/health`, `/ready`, 404)
//! goes through the axum router. The hot path skips axum's routing and middleware layers:
//! each layer boxed a future and cloned a service per request, a few µs of the gateway's
//! CPU per proxied request (`docs/BENCHMARKS.md`).
//!
//! A request's way: dispatch → check → proxy → upstream → body, and back only as the
//! response. CORS preflights stop here (answered by [`crate::cors`], logged and counted by
//! [`check::preflight`]); with CORS on, every answer gets its `Access-Control-*` headers
//! here on the way back.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use tower::Service;
use vx11_service::{ApiError, access_log, health_routes};

use crate::check::{self, Target};
use crate::cors::Cors;
use crate::gateway::Gateway;

/// The gateway's routes: `/health`, `/ready`, `/<module>/api[/*]` behind the token check,
/// JSON 404 for the rest; every request logged and counted.
pub fn app(gateway: Arc<Gateway>) -> GatewayService {
    let other = Router::new()
        .merge(health_routes(
            gateway.store.clone(),
            gateway.tokens_dir.clone(),
        ))
        .fallback(|| async { ApiError::not_found().into_response() })
        .layer(from_fn_with_state(gateway.metrics.http.clone(), access_log));
    GatewayService::new(gateway, other)
}

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
        let target =
            module_of(request.uri().path()).map(|name| match self.gateway.modules.get(name) {
                Some(module) => Target::Module(module.clone()),
                None => Target::Unknown(name.into()),
            });
        // CORS preflights are the gateway's, whatever the path: no token, no backend.
        if Cors::is_preflight(request.method(), request.headers()) {
            return Box::pin(check::preflight(self.gateway.clone(), target, request));
        }
        // `None`: CORS is off; `Some(None)`: no allowed `Origin`.
        let cors = &self.gateway.cors;
        let origin = cors.is_on().then(|| cors.allowed_origin(request.headers()));
        let answer: Self::Future = match target {
            Some(target) => Box::pin(check::module_api(self.gateway.clone(), target, request)),
            None => Box::pin(self.other.call(request)),
        };
        let Some(origin) = origin else {
            return answer;
        };
        let gateway = self.gateway.clone();
        Box::pin(async move {
            let mut response = answer.await?;
            gateway.cors.decorate(&mut response, origin);
            Ok(response)
        })
    }
}

/// `/<module>/api` or `/<module>/api/…`: the module's name.
pub fn module_of(path: &str) -> Option<&str> {
    let (module, rest) = path.strip_prefix('/')?.split_once('/')?;
    let after_api = rest.strip_prefix("api")?;
    (!module.is_empty() && (after_api.is_empty() || after_api.starts_with('/'))).then_some(module)
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
