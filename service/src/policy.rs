//! `VX11_POLICY_MODE`: which modules are on, and the answer for one that is off. The
//! gateway enforces it; the backend reports it. The whole policy is in this file.

use std::fmt;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The module always routed, to `VX11_OPERATOR_BACKEND_URL`.
pub const OPERATOR_MODULE: &str = "operator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Only `operator` and `madre` are on.
    SoloMadre,
    /// Every configured module is on.
    Full,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::SoloMadre => "solo_madre",
            PolicyMode::Full => "full",
        }
    }

    /// Whether `module` is on under this mode.
    pub fn allows(self, module: &str) -> bool {
        match self {
            PolicyMode::Full => true,
            PolicyMode::SoloMadre => module == OPERATOR_MODULE || module == "madre",
        }
    }
}

impl fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to an authenticated request for a module that `mode` switches off: 200,
/// never 401 or 5xx, for a policy decision.
pub fn off_by_policy(mode: PolicyMode, module: &str) -> Response {
    Json(json!({
        "status": "OFF_BY_POLICY",
        "module": module,
        "mode": mode.as_str(),
        "readonly": true,
    }))
    .into_response()
}
