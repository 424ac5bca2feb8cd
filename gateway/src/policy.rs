//! Modules and the policy mode that switches them on or off.

use std::collections::HashMap;
use std::sync::Arc;

use crate::upstream::Upstream;

pub use vx11_tokenset::service::{OPERATOR_MODULE as OPERATOR, PolicyMode};

/// A routed module.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: Arc<str>,
    /// The route label of its requests in logs and metrics, `/<name>/api/*`. Modules are
    /// fixed for the life of the process, so the label is made once and never freed.
    pub route: &'static str,
    pub upstream: Upstream,
    /// Off by policy: answered with `OFF_BY_POLICY`, never proxied.
    pub on: bool,
    /// Its event streams go to the backend over HTTP/2 (h2c), all of a worker's on one
    /// connection, instead of one HTTP/1.1 connection each (`VX11_H2C_STREAMS`).
    pub streams_over_h2c: bool,
}

/// The modules the gateway routes, by name.
#[derive(Debug, Clone)]
pub struct Modules(Arc<HashMap<String, Arc<Module>>>);

impl Modules {
    /// `operator` plus `spec` (`name=url,...`), switched on or off by `mode`.
    pub fn parse(operator: Upstream, spec: &str, mode: PolicyMode) -> Result<Self, String> {
        let mut modules = HashMap::new();
        let mut add = |name: &str, upstream: Upstream| {
            let module = Module {
                name: name.into(),
                route: Box::leak(format!("/{name}/api/*").into_boxed_str()),
                upstream,
                on: mode.allows(name),
                streams_over_h2c: false,
            };
            modules.insert(name.to_owned(), Arc::new(module));
        };
        add(OPERATOR, operator);
        let mut seen = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not name=url"))?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "module name `{name}` must be lower-case letters, digits, `-` or `_`"
                ));
            }
            if name == OPERATOR {
                return Err("`operator` is routed by VX11_OPERATOR_BACKEND_URL; remove it from VX11_MODULES".into());
            }
            if seen.contains(&name) {
                return Err(format!("module `{name}` is listed twice"));
            }
            seen.push(name);
            add(
                name,
                Upstream::parse(url.trim()).map_err(|e| format!("module `{name}`: {e}"))?,
            );
        }
        Ok(Self(Arc::new(modules)))
    }

    /// Sends the event streams of the modules listed in `spec` (`name,...`) over h2c.
    pub fn with_h2c_streams(self, spec: &str) -> Result<Self, String> {
        let mut modules = Arc::unwrap_or_clone(self.0);
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let module = modules.get_mut(name).ok_or_else(|| {
                format!("`{name}` is not a routed module (operator or one in VX11_MODULES)")
            })?;
            let mut changed = Module::clone(module);
            changed.streams_over_h2c = true;
            *module = Arc::new(changed);
        }
        Ok(Self(Arc::new(modules)))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Module>> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator() -> Upstream {
        Upstream::parse("http://127.0.0.1:8011").unwrap()
    }

    #[test]
    fn solo_madre_switches_off_all_but_operator_and_madre() {
        let m = Modules::parse(
            operator(),
            "madre=http://madre:8001, switch=http://switch:8002",
            PolicyMode::SoloMadre,
        )
        .unwrap();
        assert!(m.get("operator").unwrap().on);
        assert!(m.get("madre").unwrap().on);
        assert!(!m.get("switch").unwrap().on);
        assert!(m.get("hermes").is_none());
        assert_eq!(m.names(), ["madre", "operator", "switch"]);
    }

    #[test]
    fn full_switches_all_on() {
        let m = Modules::parse(operator(), "switch=http://switch:8002", PolicyMode::Full).unwrap();
        assert!(m.get("switch").unwrap().on);
    }

    #[test]
    fn bad_specs() {
        for (spec, expected) in [
            ("switch", "not name=url"),
            ("Sw!tch=http://x:1", "must be lower-case"),
            ("operator=http://x:1", "VX11_OPERATOR_BACKEND_URL"),
            ("a=http://x:1,a=http://y:1", "twice"),
            ("a=https://x:1", "module `a`: "),
        ] {
            let err = Modules::parse(operator(), spec, PolicyMode::Full).unwrap_err();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }
}
