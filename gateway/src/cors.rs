//! Cross-origin requests from browsers (CORS, the Fetch standard's §3.2): the settings,
//! the preflights the gateway answers itself, and the `Access-Control-*` headers of real
//! answers.
//!
//! Off by default: with no `VX11_CORS_ALLOWED_ORIGINS` no answer carries a CORS header,
//! so only pages served from the gateway's own origin can read its answers. Preflights
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) never carry a token and
//! never reach a backend: the gateway answers them, 204 when the origin, method and
//! headers are allowed, 403 `cors_refused` otherwise. Any other request is checked and
//! proxied as always; its answer (an error, an event stream, the outage stream included)
//! carries `Access-Control-Allow-Origin` when its `Origin` is allowed.

use std::time::Duration;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use vx11_service::{ApiError, ErrorCode, parse_duration};

/// The CORS settings, each a flag and an environment variable of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct CorsArgs {
    /// Origins whose pages may call the gateway from a browser, comma-separated, each
    /// `scheme://host[:port]` (e.g. `https://console.example.com,http://localhost:3000`),
    /// or `*` for any origin (not with VX11_CORS_ALLOW_CREDENTIALS). Empty: none, no CORS
    /// header is ever sent (same-origin pages only).
    #[arg(long, env = "VX11_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,

    /// Methods a cross-origin page may use, comma-separated.
    #[arg(
        long,
        env = "VX11_CORS_ALLOWED_METHODS",
        default_value = "GET,HEAD,POST,PUT,PATCH,DELETE"
    )]
    pub cors_allowed_methods: String,

    /// Request headers a cross-origin page may send, comma-separated (case does not
    /// matter).
    #[arg(
        long,
        env = "VX11_CORS_ALLOWED_HEADERS",
        default_value = "X-VX11-Token,Authorization,Content-Type,Last-Event-ID"
    )]
    pub cors_allowed_headers: String,

    /// Let pages send cookies and HTTP authentication with their requests
    /// (`Access-Control-Allow-Credentials: true`); not with the origin `*`.
    #[arg(long, env = "VX11_CORS_ALLOW_CREDENTIALS", default_value_t = false, action = clap::ArgAction::Set)]
    pub cors_allow_credentials: bool,

    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`, in
    /// whole seconds; browsers cap it, Chromium at 2 h).
    #[arg(long, env = "VX11_CORS_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub cors_max_age: Duration,

    /// Response headers a cross-origin page may read beyond the CORS-safelisted ones,
    /// comma-separated (`Access-Control-Expose-Headers`). Empty: none.
    #[arg(long, env = "VX11_CORS_EXPOSE_HEADERS", default_value = "")]
    pub cors_expose_headers: String,
}

/// A CORS setting that cannot be used; names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error("VX11_CORS_ALLOWED_ORIGINS: {0}")]
    Origin(String),
    #[error(
        "VX11_CORS_ALLOWED_ORIGINS is `*` and VX11_CORS_ALLOW_CREDENTIALS is on: browsers refuse credentials with a wildcard origin; list the origins instead, or turn credentials off"
    )]
    WildcardWithCredentials,
    #[error("VX11_CORS_ALLOWED_METHODS: `{0}` is not an HTTP method")]
    Method(String),
    #[error("VX11_CORS_ALLOWED_HEADERS: `{0}` is not a header name")]
    Header(String),
    #[error("VX11_CORS_EXPOSE_HEADERS: `{0}` is not a header name")]
    ExposeHeader(String),
}

/// Which origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// No CORS at all (the default).
    None,
    Any,
    /// Serialized origins (`scheme://host[:port]`, lowercase, no default port).
    Listed(Vec<String>),
}

/// The checked CORS settings, and the header values every answer reuses.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    methods: Vec<Method>,
    /// Lowercase names.
    headers: Vec<HeaderName>,
    credentials: bool,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
    expose_headers: Option<HeaderValue>,
}

/// `Access-Control-Request-Method`.
const REQUEST_METHOD: HeaderName = header::ACCESS_CONTROL_REQUEST_METHOD;
/// What a preflight's answer varies on.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

impl Cors {
    /// No CORS: what the defaults give.
    pub fn off() -> Self {
        Self {
            origins: Origins::None,
            methods: Vec::new(),
            headers: Vec::new(),
            credentials: false,
            allow_methods: HeaderValue::from_static(""),
            allow_headers: HeaderValue::from_static(""),
            max_age: HeaderValue::from_static("0"),
            expose_headers: None,
        }
    }

    pub fn from_args(args: &CorsArgs) -> Result<Self, CorsError> {
        let origins = parse_origins(&args.cors_allowed_origins)?;
        if origins == Origins::Any && args.cors_allow_credentials {
            return Err(CorsError::WildcardWithCredentials);
        }
        let methods = list(&args.cors_allowed_methods)
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| CorsError::Method(m.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let headers = header_names(&args.cors_allowed_headers, CorsError::Header)?;
        let exposed = header_names(&args.cors_expose_headers, CorsError::ExposeHeader)?;
        let allow_methods = joined(methods.iter().map(Method::as_str));
        let allow_headers = joined(headers.iter().map(HeaderName::as_str));
        let expose_headers =
            (!exposed.is_empty()).then(|| joined(exposed.iter().map(HeaderName::as_str)));
        Ok(Self {
            origins,
            methods,
            headers,
            credentials: args.cors_allow_credentials,
            allow_methods,
            allow_headers,
            max_age: HeaderValue::from(args.cors_max_age.as_secs()),
            expose_headers,
        })
    }

    /// Whether any origin is allowed (else the gateway sends no CORS header).
    pub fn is_on(&self) -> bool {
        self.origins != Origins::None
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`
    /// (an `OPTIONS` without them is an ordinary request).
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(REQUEST_METHOD)
    }

    /// The answer to a preflight: 204 with the `Access-Control-*` headers, or 403
    /// `cors_refused` without any, saying what is not allowed and which setting allows it.
    pub fn preflight(&self, headers: &HeaderMap) -> Response {
        match self.check_preflight(headers) {
            Ok(origin) => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                let out = response.headers_mut();
                out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                out.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    self.allow_methods.clone(),
                );
                if !self.headers.is_empty() {
                    out.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        self.allow_headers.clone(),
                    );
                }
                out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
                if self.credentials {
                    out.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
                out.append(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
                response
            }
            Err(detail) => {
                let mut response =
                    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::CorsRefused, detail)
                        .into_response();
                if self.is_on() {
                    response
                        .headers_mut()
                        .append(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
                }
                response
            }
        }
    }

    fn check_preflight(&self, headers: &HeaderMap) -> Result<HeaderValue, String> {
        if !self.is_on() {
            return Err(
                "this gateway allows no cross-origin requests; set VX11_CORS_ALLOWED_ORIGINS (chart: gateway.cors.allowedOrigins) to the page's origin, or serve the page from the gateway's origin".into(),
            );
        }
        let origin = self.allowed_origin(headers).ok_or_else(|| {
            format!(
                "origin `{}` is not allowed; add it to VX11_CORS_ALLOWED_ORIGINS (chart: gateway.cors.allowedOrigins)",
                printable(headers.get(header::ORIGIN))
            )
        })?;
        let method = headers
            .get(REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        if !method.is_some_and(|m| self.methods.contains(&m)) {
            return Err(format!(
                "method `{}` is not allowed; allowed: {} (VX11_CORS_ALLOWED_METHODS)",
                printable(headers.get(REQUEST_METHOD)),
                printable(Some(&self.allow_methods)),
            ));
        }
        for value in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            let Ok(value) = value.to_str() else {
                return Err("Access-Control-Request-Headers is not readable".into());
            };
            for name in list(value) {
                let allowed = HeaderName::from_bytes(name.as_bytes())
                    .is_ok_and(|name| self.headers.contains(&name));
                if !allowed {
                    return Err(format!(
                        "request header `{name}` is not allowed; allowed: {} (VX11_CORS_ALLOWED_HEADERS)",
                        printable(Some(&self.allow_headers)),
                    ));
                }
            }
        }
        Ok(origin)
    }

    /// The request's `Origin`, when it is allowed: the value to echo in
    /// `Access-Control-Allow-Origin`.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let origin = origins.next()?;
        if origins.next().is_some() {
            return None;
        }
        let text = origin.to_str().ok()?;
        let allowed = match &self.origins {
            Origins::None => false,
            // The opaque origin `null` (sandboxed frames, `file:`) is never a page to trust.
            Origins::Any => text != "null",
            Origins::Listed(listed) => listed.iter().any(|o| o == text),
        };
        allowed.then(|| origin.clone())
    }

    /// Adds the `Access-Control-*` headers of a real answer for a request whose `Origin`
    /// was `origin` (from [`Cors::allowed_origin`]; `None`: not allowed or absent). Any
    /// the backend set are replaced, so a browser never sees two.
    pub fn decorate(&self, response: &mut Response, origin: Option<HeaderValue>) {
        if !self.is_on() {
            return;
        }
        let out = response.headers_mut();
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            out.remove(name);
        }
        // Answers differ by Origin: a cache must not give one origin's to another.
        out.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else { return };
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(exposed) = &self.expose_headers {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }
}

fn parse_origins(text: &str) -> Result<Origins, CorsError> {
    let entries: Vec<&str> = list(text).collect();
    if entries.is_empty() {
        return Ok(Origins::None);
    }
    if entries.contains(&"*") {
        return if entries.len() == 1 {
            Ok(Origins::Any)
        } else {
            Err(CorsError::Origin(
                "`*` allows every origin: give it alone, or list origins without it".into(),
            ))
        };
    }
    let mut origins = Vec::with_capacity(entries.len());
    for entry in entries {
        let origin = serialize_origin(entry).map_err(CorsError::Origin)?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(Origins::Listed(origins))
}

/// An origin as browsers send it in `Origin` (Fetch: the serialization of a tuple
/// origin): `scheme://host[:port]`, scheme and host lowercase, the scheme's default port
/// left out.
pub fn serialize_origin(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "`{text}` is not an origin ({why}); write it as scheme://host[:port], e.g. https://console.example.com"
        )
    };
    if text == "null" {
        return Err(bad(
            "`null` is the opaque origin of sandboxed and file: pages, which cannot be trusted",
        ));
    }
    let uri: Uri = text.parse().map_err(|_| bad("it does not parse"))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| bad("no scheme"))?
        .to_ascii_lowercase();
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("it has user information"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") || text.ends_with('/') {
        return Err(bad("it has a path; an origin ends after the host and port"));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    Ok(match authority.port_u16() {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// The non-empty, trimmed items of a comma-separated list.
fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn header_names(text: &str, error: fn(String) -> CorsError) -> Result<Vec<HeaderName>, CorsError> {
    let mut names: Vec<HeaderName> = Vec::new();
    for name in list(text) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| error(name.to_string()))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text = items.collect::<Vec<_>>().join(", ");
    // Methods and header names are tokens: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A header value for a refusal's detail (`-` when absent, escaped when not text).
fn printable(value: Option<&HeaderValue>) -> String {
    match value {
        None => "-".into(),
        Some(value) => String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(200)
            .flat_map(char::escape_debug)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        cors: CorsArgs,
    }

    fn cors(flags: &[&str]) -> Result<Cors, CorsError> {
        let flags = Flags::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))
            .map_err(|e| CorsError::Origin(e.to_string()))?;
        Cors::from_args(&flags.cors)
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    const PAGE: &str = "http://127.0.0.1:3000";

    #[test]
    fn origins_are_serialized_as_browsers_send_them() {
        for (given, serialized) in [
            ("http://Example.COM", "http://example.com"),
            ("HTTPS://example.com:443", "https://example.com"),
            ("http://example.com:80", "http://example.com"),
            ("http://example.com:8080", "http://example.com:8080"),
            ("https://example.com:80", "https://example.com:80"),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ] {
            assert_eq!(serialize_origin(given).unwrap(), serialized, "{given}");
        }
        for bad in [
            "example.com",
            "http://example.com/",
            "http://example.com/app",
            "http://example.com?x=1",
            "http://user@example.com",
            "null",
            "http://",
        ] {
            let err = serialize_origin(bad).unwrap_err();
            assert!(err.contains("scheme://host[:port]"), "{bad}: {err}");
        }
    }

    #[test]
    fn off_by_default_and_no_header_is_ever_added() {
        let cors = cors(&[]).unwrap();
        assert!(!cors.is_on());
        let headers = request(&[("origin", PAGE)]);
        assert_eq!(cors.allowed_origin(&headers), None);
        let mut response = StatusCode::OK.into_response();
        cors.decorate(&mut response, None);
        assert!(response.headers().is_empty(), "{:?}", response.headers());
        let refused = cors.preflight(&request(&[
            ("origin", PAGE),
            ("access-control-request-method", "GET"),
        ]));
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(no_allow_headers(refused.headers()));
    }

    fn no_allow_headers(headers: &HeaderMap) -> bool {
        !headers
            .keys()
            .any(|k| k.as_str().starts_with("access-control-allow"))
    }

    #[test]
    fn a_listed_origin_is_compared_exactly_after_normalization() {
        let cors = cors(&[
            "--cors-allowed-origins",
            "http://LOCALHOST:3000, https://a.example",
        ])
        .unwrap();
        for allowed in ["http://localhost:3000", "https://a.example"] {
            let headers = request(&[("origin", allowed)]);
            assert_eq!(cors.allowed_origin(&headers).unwrap(), allowed);
        }
        for refused in [
            "http://localhost:3001",
            "http://LOCALHOST:3000",
            "https://a.example:443",
            "http://a.example",
            "https://a.example.evil",
            "null",
        ] {
            let headers = request(&[("origin", refused)]);
            assert_eq!(cors.allowed_origin(&headers), None, "{refused}");
        }
        let two = request(&[
            ("origin", "https://a.example"),
            ("origin", "https://a.example"),
        ]);
        assert_eq!(cors.allowed_origin(&two), None);
    }

    #[tokio::test]
    async fn preflights_are_answered_or_refused_with_the_setting_named() {
        let cors = cors(&["--cors-allowed-origins", PAGE]).unwrap();
        let ok = cors.preflight(&request(&[
            ("origin", PAGE),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,x-vx11-token",
            ),
        ]));
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let h = ok.headers();
        assert_eq!(h["access-control-allow-origin"], PAGE);
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, HEAD, POST, PUT, PATCH, DELETE"
        );
        assert_eq!(
            h["access-control-allow-headers"],
            "x-vx11-token, authorization, content-type, last-event-id"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert!(h["vary"].to_str().unwrap().contains("Origin"));

        for (pairs, named) in [
            (
                vec![
                    ("origin", "http://evil.example"),
                    ("access-control-request-method", "GET"),
                ],
                "VX11_CORS_ALLOWED_ORIGINS",
            ),
            (
                vec![
                    ("origin", PAGE),
                    ("access-control-request-method", "PROPFIND"),
                ],
                "VX11_CORS_ALLOWED_METHODS",
            ),
            (
                vec![
                    ("origin", PAGE),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-vx11-token,x-other"),
                ],
                "VX11_CORS_ALLOWED_HEADERS",
            ),
        ] {
            let refused = cors.preflight(&request(&pairs));
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{pairs:?}");
            assert!(no_allow_headers(refused.headers()), "{pairs:?}");
            let body = axum::body::to_bytes(refused.into_body(), 4096)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], "cors_refused");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains(named), "{pairs:?}: {detail}");
        }
    }

    #[test]
    fn real_answers_carry_the_echoed_origin_and_replace_the_backends() {
        let cors = cors(&[
            "--cors-allowed-origins",
            PAGE,
            "--cors-allow-credentials",
            "true",
            "--cors-expose-headers",
            "X-Request-Id",
        ])
        .unwrap();
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response
            .headers_mut()
            .insert("access-control-allow-origin", HeaderValue::from_static("*"));
        let origin = cors.allowed_origin(&request(&[("origin", PAGE)]));
        cors.decorate(&mut response, origin);
        let h = response.headers();
        assert_eq!(h.get_all("access-control-allow-origin").iter().count(), 1);
        assert_eq!(h["access-control-allow-origin"], PAGE);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert_eq!(h["vary"], "Origin");

        let mut other = StatusCode::OK.into_response();
        cors.decorate(&mut other, None);
        assert!(no_allow_headers(other.headers()));
        assert_eq!(other.headers()["vary"], "Origin");
    }

    #[test]
    fn a_wildcard_allows_any_origin_but_not_with_credentials() {
        let any = cors(&["--cors-allowed-origins", "*"]).unwrap();
        let headers = request(&[("origin", "https://anywhere.example")]);
        assert_eq!(
            any.allowed_origin(&headers).unwrap(),
            "https://anywhere.example"
        );
        assert_eq!(any.allowed_origin(&request(&[("origin", "null")])), None);
        let err = cors(&[
            "--cors-allowed-origins",
            "*",
            "--cors-allow-credentials",
            "true",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("VX11_CORS_ALLOWED_ORIGINS")
                && err.contains("VX11_CORS_ALLOW_CREDENTIALS"),
            "{err}"
        );
        let err = cors(&["--cors-allowed-origins", "*,http://a.example"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VX11_CORS_ALLOWED_ORIGINS"), "{err}");
    }

    #[test]
    fn bad_methods_and_headers_name_their_setting() {
        let err = cors(&["--cors-allowed-methods", "GET,PO ST"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VX11_CORS_ALLOWED_METHODS"), "{err}");
        let err = cors(&["--cors-allowed-headers", "x:y"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VX11_CORS_ALLOWED_HEADERS"), "{err}");
        let err = cors(&["--cors-expose-headers", "a b"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VX11_CORS_EXPOSE_HEADERS"), "{err}");
        let err = cors(&["--cors-allowed-origins", "console.example.com"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VX11_CORS_ALLOWED_ORIGINS"), "{err}");
    }

    #[test]
    fn only_options_with_origin_and_request_method_is_a_preflight() {
        let full = request(&[("origin", PAGE), ("access-control-request-method", "GET")]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &full));
        assert!(!Cors::is_preflight(&Method::GET, &full));
        assert!(!Cors::is_preflight(
            &Method::OPTIONS,
            &request(&[("origin", PAGE)])
        ));
        assert!(!Cors::is_preflight(
            &Method::OPTIONS,
            &request(&[("access-control-request-method", "GET")])
        ));
    }
}
