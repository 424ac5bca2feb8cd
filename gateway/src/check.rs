//! The second step of `/<module>/api/*`: the token check, then the policy's decision for
//! the module (proxied, off by policy, or not routed), inside the request's access line
//! and metrics. Check and access line are vx11-service's, the same the backend's layers
//! run, called inline here.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vx11_service::{
    ApiError, Authenticated, ErrorCode, off_by_policy, with_access_line, with_token_check,
};

use crate::gateway::Gateway;
use crate::modules::Module;
use crate::proxy;

/// The route label of a request to a module that is not routed (bounded, unlike the path).
const UNKNOWN_MODULE_ROUTE: &str = "/{module}/api/*";

/// The route label of a CORS preflight to a path outside `/<module>/api/*`.
const PREFLIGHT_ROUTE: &str = "preflight";

/// What `/<name>/api/*` names, as dispatch found it.
#[derive(Debug)]
pub enum Target {
    Module(Arc<Module>),
    /// No module `name` is routed.
    Unknown(Box<str>),
}

/// The token check, then the module's answer; counted and logged like every other route.
pub async fn module_api(
    gateway: Arc<Gateway>,
    target: Target,
    request: Request,
) -> Result<Response, Infallible> {
    let route = match &target {
        Target::Module(module) => module.route,
        Target::Unknown(_) => UNKNOWN_MODULE_ROUTE,
    };
    let shared: &Gateway = &gateway;
    let mut response = with_access_line(
        &shared.metrics.http,
        Cow::Borrowed(route),
        request,
        move |request| {
            with_token_check(&shared.store, request, move |request, who| {
                answer(shared, target, request, who)
            })
        },
    )
    .await;
    // Responses are built here; nothing downstream reads extensions.
    response.extensions_mut().clear();
    Ok(response)
}

/// A CORS preflight ([`crate::cors`]): answered here, without a token and without any
/// backend; counted and logged under the module's route (`target`), or `preflight` for a
/// path that names no module.
pub async fn preflight(
    gateway: Arc<Gateway>,
    target: Option<Target>,
    request: Request,
) -> Result<Response, Infallible> {
    let route = match &target {
        Some(Target::Module(module)) => module.route,
        Some(Target::Unknown(_)) => UNKNOWN_MODULE_ROUTE,
        None => PREFLIGHT_ROUTE,
    };
    let shared: &Gateway = &gateway;
    let mut response = with_access_line(
        &shared.metrics.http,
        Cow::Borrowed(route),
        request,
        move |request| async move { shared.cors.preflight(request.headers()) },
    )
    .await;
    response.extensions_mut().clear();
    Ok(response)
}

/// For a caller whose token passed.
async fn answer(
    gateway: &Gateway,
    target: Target,
    request: Request,
    who: Authenticated,
) -> Response {
    match target {
        Target::Module(module) if module.on => {
            proxy::forward(gateway, &module, request, &who).await
        }
        Target::Module(module) => off_by_policy(gateway.mode, &module.name),
        Target::Unknown(name) => unknown_module(gateway, &name),
    }
}

/// 404 for `/<name>/api/*` when no module `name` is routed.
fn unknown_module(gateway: &Gateway, name: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownModule,
        format!(
            "no module `{name}`; this gateway routes: {}",
            gateway.modules.names().join(", ")
        ),
    )
    .into_response()
}
