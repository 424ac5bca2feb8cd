//! Tokens from the environment variables of the Docker Compose deployment, added to the set
//! so that its clients keep working.

use crate::value::{InvalidToken, TokenValue};

/// The variables read, in this order.
pub const LEGACY_TOKEN_VARS: [&str; 3] = [
    "VX11_TENTACULO_LINK_TOKEN",
    "VX11_GATEWAY_TOKEN",
    "VX11_OPERATOR_TOKEN",
];

/// The legacy tokens that are set (an empty variable counts as unset).
#[derive(Debug, Clone, Default)]
pub struct LegacyTokens(Vec<(&'static str, TokenValue)>);

impl LegacyTokens {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, LegacyTokenError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`, so tests and config code can pass a plain map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LegacyTokenError> {
        let mut tokens = Vec::new();
        for var in LEGACY_TOKEN_VARS {
            let Some(value) = lookup(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let token =
                TokenValue::new(value).map_err(|reason| LegacyTokenError { var, reason })?;
            tokens.push((var, token));
        }
        Ok(Self(tokens))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, TokenValue)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var} is set but is not a valid token: {reason}; fix the value or unset the variable")]
pub struct LegacyTokenError {
    pub var: &'static str,
    pub reason: InvalidToken,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_set_variables_and_skips_empty_ones() {
        let env = HashMap::from([
            ("VX11_GATEWAY_TOKEN", "vx11-gateway-test-token"),
            ("VX11_OPERATOR_TOKEN", ""),
        ]);
        let legacy = LegacyTokens::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        let names: Vec<_> = legacy.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["VX11_GATEWAY_TOKEN"]);
    }

    #[test]
    fn invalid_value_names_the_variable_only() {
        let err = LegacyTokens::from_lookup(|k| {
            (k == "VX11_TENTACULO_LINK_TOKEN").then(|| "vx11-test-token".to_string())
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("VX11_TENTACULO_LINK_TOKEN is set but"),
            "{text}"
        );
        assert!(!text.contains("vx11-test-token"));
    }
}
