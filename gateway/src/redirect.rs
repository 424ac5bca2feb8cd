//! `Location` and `Refresh` in a backend's response, as nginx's `proxy_redirect default`
//! treats them: an absolute URL that points at the module's backend
//! (`http://<backend host:port>/…`) would send the client around the gateway, to an address
//! it cannot reach; it is rewritten to the gateway as the client reached it (the request's
//! scheme and `Host`). Paths pass through the gateway unchanged, so only the scheme and
//! authority change. Relative URLs and URLs of other hosts are left alone, and so is
//! `Content-Location` (it names the representation, and clients do not follow it).
//! `VX11_PROXY_REDIRECT=off` turns this off.

use axum::http::header::{self, Entry, HeaderMap, HeaderValue};
use hyper::http::uri::Authority;
use vx11_service::ClientScheme;

/// Rewrites `headers`' `Location` and `Refresh` from `backend` to `scheme://host`.
pub fn rewrite_redirects(
    headers: &mut HeaderMap,
    backend: &Authority,
    scheme: ClientScheme,
    host: &HeaderValue,
) {
    let Ok(host) = host.to_str() else {
        return;
    };
    let from = format!("http://{}", backend.as_str());
    let to = format!("{}://{host}", scheme.as_str());
    for name in [header::LOCATION, header::REFRESH] {
        let Entry::Occupied(mut entry) = headers.entry(&name) else {
            continue;
        };
        for value in entry.iter_mut() {
            if let Some(rewritten) = rewritten(value, &name, &from, &to) {
                *value = rewritten;
            }
        }
    }
}

/// `value` with its URL's `from` replaced by `to`, if its URL starts with `from` (case
/// aside) followed by the end, `/`, `?` or `#`.
fn rewritten(
    value: &HeaderValue,
    name: &header::HeaderName,
    from: &str,
    to: &str,
) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    // `Refresh: 5; url=http://…`: the URL is after `url=`.
    let at = if *name == header::REFRESH {
        let lower = text.to_ascii_lowercase();
        let url = lower.find("url=")? + "url=".len();
        url + text[url..].len() - text[url..].trim_start_matches(['\'', '"']).len()
    } else {
        0
    };
    let url = &text[at..];
    let head = url.get(..from.len())?;
    if !head.eq_ignore_ascii_case(from) {
        return None;
    }
    let rest = &url[from.len()..];
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return None;
    }
    HeaderValue::from_str(&format!("{}{to}{rest}", &text[..at])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(name: &str, value: &str, scheme: ClientScheme) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        rewrite_redirects(
            &mut headers,
            &Authority::from_static("10.0.0.5:8080"),
            scheme,
            &HeaderValue::from_static("vx11.example.com"),
        );
        headers[name].to_str().unwrap().to_owned()
    }

    #[test]
    fn backend_urls_point_at_the_gateway_and_others_are_kept() {
        let http = ClientScheme::Http;
        for (value, expected) in [
            (
                "http://10.0.0.5:8080/m/api/x?y=1",
                "http://vx11.example.com/m/api/x?y=1",
            ),
            ("HTTP://10.0.0.5:8080", "http://vx11.example.com"),
            ("http://10.0.0.5:8080#f", "http://vx11.example.com#f"),
            ("/m/api/relative", "/m/api/relative"),
            ("http://10.0.0.5:80801/x", "http://10.0.0.5:80801/x"),
            ("http://other:8080/x", "http://other:8080/x"),
            ("https://10.0.0.5:8080/x", "https://10.0.0.5:8080/x"),
        ] {
            assert_eq!(rewrite("location", value, http), expected, "{value}");
        }
        assert_eq!(
            rewrite("location", "http://10.0.0.5:8080/x", ClientScheme::Https),
            "https://vx11.example.com/x"
        );
        assert_eq!(
            rewrite("refresh", "5; URL=http://10.0.0.5:8080/x", http),
            "5; URL=http://vx11.example.com/x"
        );
        assert_eq!(
            rewrite("refresh", "0;url='http://10.0.0.5:8080/x'", http),
            "0;url='http://vx11.example.com/x'"
        );
        assert_eq!(rewrite("refresh", "5", http), "5");
        assert_eq!(
            rewrite("content-location", "http://10.0.0.5:8080/x", http),
            "http://10.0.0.5:8080/x"
        );
    }
}
