//! `VX11_POLICY_MODE`: which modules are on. The gateway enforces it; the backend reports it.

use std::fmt;

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
