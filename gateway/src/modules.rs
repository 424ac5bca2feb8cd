//! The modules the gateway routes, by name, each with its backend's base URL and whether
//! the policy mode ([`vx11_service::PolicyMode`]) switches it on.

use foldhash::HashMap;
use std::sync::Arc;

use hyper::Uri;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
pub use vx11_service::{OPERATOR_MODULE as OPERATOR, PolicyMode};

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
        let mut modules = HashMap::default();
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

/// Where a module's requests go: scheme and authority; the request's own path and query
/// are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub url: String,
    authority: Authority,
    /// The `Host` a request to it carries: the host, and the port unless it is 80 (as
    /// hyper's client writes it).
    host_header: String,
}

impl Upstream {
    /// Accepts `http://host[:port]` (a trailing `/` is fine); in-cluster traffic is plain
    /// HTTP behind the NetworkPolicy.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("`{url}` is not a URL; expected http://host:port"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("`{url}`: only http:// backends are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no host; expected http://host:port"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{url}` has a path or query; give only http://host:port (requests keep their own path)"
            ));
        }
        let host_header = match authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            authority,
            host_header,
        })
    }

    /// The backend URI for a request's path and query.
    pub fn uri_for(
        &self,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<Uri, hyper::http::Error> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query.map_or("/", PathAndQuery::as_str))
            .build()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The `Host` header of a request to this backend.
    pub fn host_header(&self) -> &str {
        &self.host_header
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

    #[test]
    fn parses_and_joins() {
        let up = Upstream::parse("http://vx11-operator-backend:8011/").unwrap();
        let pq: PathAndQuery = "/operator/api/events/stream?token=x&follow=true"
            .parse()
            .unwrap();
        assert_eq!(
            up.uri_for(Some(&pq)).unwrap().to_string(),
            "http://vx11-operator-backend:8011/operator/api/events/stream?token=x&follow=true"
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        assert!(
            Upstream::parse("https://x:1")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(
            Upstream::parse("http://x:1/base")
                .unwrap_err()
                .contains("path")
        );
        assert!(
            Upstream::parse("not a url")
                .unwrap_err()
                .contains("not a URL")
        );
    }
}
