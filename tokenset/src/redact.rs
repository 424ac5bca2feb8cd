//! Redaction of tokens from URIs and query strings, for every log line and span.
//!
//! The rule: whatever [`crate::presented_token`] would read as a token is redacted, and
//! more. A parameter is secret when its key, *decoded as a permissive parser would decode
//! it*, names a credential: `+` read as a space, percent-escapes decoded (repeatedly, so a
//! double-encoded `tok%2565n` is caught too), surrounding whitespace trimmed, case ignored.
//! Pairs are split on `&` as the extraction does, and their parts again on `;` (some
//! frameworks read `;` as a separator too).

use std::borrow::Cow;

use http::Uri;

/// Replaces what stands where a token was.
pub const REDACTED: &str = "REDACTED";

/// Decoded keys holding any of these (case ignored) have their values redacted: `token`
/// covers `token`, `access_token`, `x-vx11-token`, `id_token` and the like.
const SECRET_KEY_PARTS: [&str; 7] = [
    "token",
    "secret",
    "password",
    "authorization",
    "apikey",
    "api_key",
    "api-key",
];

/// Rounds of decoding a key goes through; a key still changing after that many rounds is
/// treated as secret (nobody double-encodes a harmless key four times).
const DECODE_ROUNDS: usize = 4;

/// The query string with the value of every secret parameter (see the module docs)
/// replaced by `REDACTED`.
pub fn redact_query(query: &str) -> Cow<'_, str> {
    if !query.split('&').any(needs_redaction) {
        return Cow::Borrowed(query);
    }
    let pairs: Vec<Cow<'_, str>> = query.split('&').map(redact_pair).collect();
    Cow::Owned(pairs.join("&"))
}

/// Whether a `&`-separated pair, or a `;`-separated part of it, holds a secret.
fn needs_redaction(pair: &str) -> bool {
    is_secret(pair) || (pair.contains(';') && pair.split(';').any(is_secret))
}

/// A `&`-separated pair, redacted. The extraction splits on `&` only, so a secret pair's
/// whole value goes (a `;` in it included); then `;`-separated parts are looked at too.
fn redact_pair(pair: &str) -> Cow<'_, str> {
    if let Some(redacted) = redacted_value(pair) {
        return Cow::Owned(redacted);
    }
    if !needs_redaction(pair) {
        return Cow::Borrowed(pair);
    }
    let parts: Vec<Cow<'_, str>> = pair
        .split(';')
        .map(|part| redacted_value(part).map_or(Cow::Borrowed(part), Cow::Owned))
        .collect();
    Cow::Owned(parts.join(";"))
}

/// `key=REDACTED` when `pair` is secret.
fn redacted_value(pair: &str) -> Option<String> {
    let (key, _) = pair.split_once('=')?;
    is_secret(pair).then(|| format!("{key}={REDACTED}"))
}

/// Path and query of a URI, safe to log.
pub fn redact_uri(uri: &Uri) -> Cow<'_, str> {
    redact_path_and_query(uri.path(), uri.query())
}

/// A request target's path and query, safe to log (as [`redact_uri`]).
pub fn redact_path_and_query<'a>(path: &'a str, query: Option<&str>) -> Cow<'a, str> {
    match query {
        None => Cow::Borrowed(path),
        Some(query) => Cow::Owned(format!("{path}?{}", redact_query(query))),
    }
}

/// Whether a pair's value must not be logged. A pair without `=` has no value to hide.
fn is_secret(pair: &str) -> bool {
    let Some((key, _)) = pair.split_once('=') else {
        return false;
    };
    match decoded_key(key) {
        Some(key) => SECRET_KEY_PARTS.iter().any(|part| key.contains(part)),
        None => true,
    }
}

/// The key as the most permissive parser reads it, lower-cased; `None` when it still
/// decodes further after [`DECODE_ROUNDS`].
fn decoded_key(key: &str) -> Option<String> {
    let mut current = key.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let plus_as_space = current.replace('+', " ");
        let next = percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            return Some(squeeze(&next));
        }
        current = next;
    }
    let stable = percent_encoding::percent_decode_str(&current.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned();
    (stable == current).then(|| squeeze(&current))
}

/// Lower case without whitespace or control characters (`to ken`, `token\0`).
fn squeeze(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_token_parameter() {
        assert_eq!(
            redact_query("follow=true&token=vx11_secret&TOKEN=x&access_token=y&page=z"),
            "follow=true&token=REDACTED&TOKEN=REDACTED&access_token=REDACTED&page=z"
        );
        assert!(matches!(redact_query("follow=true"), Cow::Borrowed(_)));
    }

    #[test]
    fn encoded_keys_are_decoded_before_matching() {
        for key in [
            "tok%65n",
            "TOK%45N",
            "%74%6f%6b%65%6e",
            "tok%2565n",
            "tok%252565n",
            "to+ken",
            "token+",
            "+token",
            "to%20ken",
            "token%00",
            "to%0Aken",
            "x-vx11-token",
            "access%5Ftoken",
            "client_secret",
            "api_key",
            "Authorization",
        ] {
            let query = format!("a=1&{key}=vx11_leaked_value_here&b=2");
            let redacted = redact_query(&query);
            assert!(
                !redacted.contains("vx11_leaked_value_here"),
                "{key}: {redacted}"
            );
            assert!(redacted.contains(&format!("{key}=REDACTED")), "{redacted}");
            assert!(redacted.starts_with("a=1&") && redacted.ends_with("&b=2"));
        }
    }

    #[test]
    fn keys_that_keep_decoding_are_secret() {
        // Encoded five times over: more rounds than the decoder runs.
        let key = "%2525252574oken";
        let query = format!("{key}=vx11_leaked_value_here");
        assert_eq!(redact_query(&query), format!("{key}=REDACTED"));
    }

    #[test]
    fn semicolons_separate_pairs_too() {
        assert_eq!(
            redact_query("a=1;token=vx11_secret&b=2;"),
            "a=1;token=REDACTED&b=2;"
        );
        // The extraction reads `vx11_secret;part2` as the token: all of it goes.
        assert_eq!(
            redact_query("token=vx11_secret;part2&b=2"),
            "token=REDACTED&b=2"
        );
    }

    #[test]
    fn values_without_keys_and_harmless_keys_stay() {
        assert!(matches!(
            redact_query("follow=true&since=12&token&=x&&"),
            Cow::Borrowed(_)
        ));
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
