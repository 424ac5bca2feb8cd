//! Redaction of tokens from URIs and query strings, for every log line and span.

use std::borrow::Cow;

use http::Uri;

/// Replaces what stands where a token was.
pub const REDACTED: &str = "REDACTED";

/// Query parameters whose values are never logged.
const SECRET_PARAMS: [&str; 2] = ["token", "access_token"];

/// The query string with the value of every `token` (and `access_token`) parameter
/// replaced by `REDACTED`.
pub fn redact_query(query: &str) -> Cow<'_, str> {
    let is_secret = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s))
    };
    if !query.split('&').any(is_secret) {
        return Cow::Borrowed(query);
    }
    let redacted: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret(pair) => Cow::Owned(format!("{key}={REDACTED}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(redacted.join("&"))
}

/// Path and query of a URI, safe to log.
pub fn redact_uri(uri: &Uri) -> Cow<'_, str> {
    match uri.query() {
        None => Cow::Borrowed(uri.path()),
        Some(query) => Cow::Owned(format!("{}?{}", uri.path(), redact_query(query))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_token_parameter() {
        assert_eq!(
            redact_query("follow=true&token=vx11_secret&TOKEN=x&access_token=y&tokenish=z"),
            "follow=true&token=REDACTED&TOKEN=REDACTED&access_token=REDACTED&tokenish=z"
        );
        assert!(matches!(redact_query("follow=true"), Cow::Borrowed(_)));
    }

    #[test]
    fn redacts_uris() {
        let uri: Uri = "/operator/api/events/stream?token=vx11_secret&follow=true"
            .parse()
            .unwrap();
        assert_eq!(
            redact_uri(&uri),
            "/operator/api/events/stream?token=REDACTED&follow=true"
        );
        let plain: Uri = "/health".parse().unwrap();
        assert_eq!(redact_uri(&plain), "/health");
    }
}
