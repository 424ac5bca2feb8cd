//! Finding the token in an HTTP request: header `X-VX11-Token`, then
//! `Authorization: Bearer …`, then the query parameter `token` (browsers' EventSource cannot
//! send headers). The first one present wins.

use std::borrow::Cow;
use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::digest::TokenDigest;

pub const TOKEN_HEADER: &str = "x-vx11-token";
pub const TOKEN_QUERY_PARAM: &str = "token";

/// How the caller presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    Header,
    Bearer,
    Query,
}

impl Carrier {
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Header => "header",
            Carrier::Bearer => "bearer",
            Carrier::Query => "query",
        }
    }
}

/// A token as the caller sent it. `Debug` shows the carrier and fingerprint only.
pub struct PresentedToken<'a> {
    value: Cow<'a, str>,
    pub carrier: Carrier,
}

impl PresentedToken<'_> {
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.value.as_bytes())
    }
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("carrier", &self.carrier)
            .field("fingerprint", &self.digest().fingerprint())
            .finish()
    }
}

/// A token was sent in a form that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedToken {
    #[error("the X-VX11-Token header holds characters other than visible ASCII")]
    Header,
    #[error("the Authorization header holds characters other than visible ASCII")]
    Authorization,
    #[error(
        "the `token` query parameter has a `%` not followed by two hex digits; percent-encode the token"
    )]
    PercentEncoding,
    #[error("the `token` query parameter does not decode to text")]
    QueryNotText,
}

/// The token a request carries, if any.
pub fn presented_token<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<PresentedToken<'a>>, MalformedToken> {
    presented_token_in(Carriers {
        token_header: headers.get(TOKEN_HEADER).map(|v| v.as_bytes()),
        authorization: headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        query,
    })
}

/// Where a request may carry its token, as raw bytes: the first `X-VX11-Token` and the
/// first `Authorization` header's values, and the query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carriers<'a> {
    pub token_header: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub query: Option<&'a str>,
}

/// [`presented_token`] of a request read without a header map.
pub fn presented_token_in(
    carriers: Carriers<'_>,
) -> Result<Option<PresentedToken<'_>>, MalformedToken> {
    if let Some(value) = carriers.token_header {
        let value = visible_ascii(value).ok_or(MalformedToken::Header)?.trim();
        if !value.is_empty() {
            return Ok(Some(PresentedToken {
                value: Cow::Borrowed(value),
                carrier: Carrier::Header,
            }));
        }
    }
    if let Some(value) = carriers.authorization {
        let value = visible_ascii(value).ok_or(MalformedToken::Authorization)?;
        if let Some(token) = bearer(value) {
            return Ok(Some(PresentedToken {
                value: Cow::Borrowed(token),
                carrier: Carrier::Bearer,
            }));
        }
    }
    if let Some(raw) = carriers.query.and_then(query_param_token) {
        let value = percent_decode_strict(raw)?;
        if !value.is_empty() {
            return Ok(Some(PresentedToken {
                value,
                carrier: Carrier::Query,
            }));
        }
    }
    Ok(None)
}

/// A header value as text when it is all visible ASCII or tabs (as `HeaderValue::to_str`).
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The raw value of the first `token=` pair of a query string.
pub fn query_param_token(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == TOKEN_QUERY_PARAM).then_some(value)
    })
}

/// Percent-decodes, refusing malformed escapes instead of passing them through. `+` stays
/// `+`: tokens never hold spaces, and base64 tokens sent unencoded keep working.
fn percent_decode_strict(raw: &str) -> Result<Cow<'_, str>, MalformedToken> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let valid = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !valid {
            return Err(MalformedToken::PercentEncoding);
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| MalformedToken::QueryNotText)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn found(h: &HeaderMap, q: Option<&str>) -> Option<(String, Carrier)> {
        presented_token(h, q)
            .unwrap()
            .map(|t| (t.expose().to_owned(), t.carrier))
    }

    #[test]
    fn order_is_header_bearer_query() {
        let all = headers(&[
            ("x-vx11-token", "from-header-0000000"),
            ("authorization", "Bearer from-bearer-0000000"),
        ]);
        let q = Some("follow=true&token=from-query-00000000");
        assert_eq!(
            found(&all, q),
            Some(("from-header-0000000".into(), Carrier::Header))
        );
        let bearer_only = headers(&[("authorization", "bearer   from-bearer-0000000 ")]);
        assert_eq!(
            found(&bearer_only, q),
            Some(("from-bearer-0000000".into(), Carrier::Bearer))
        );
        assert_eq!(
            found(&HeaderMap::new(), q),
            Some(("from-query-00000000".into(), Carrier::Query))
        );
        assert_eq!(found(&HeaderMap::new(), Some("follow=true")), None);
        assert_eq!(found(&HeaderMap::new(), None), None);
    }

    #[test]
    fn other_schemes_and_empty_values_are_not_tokens() {
        let h = headers(&[
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("x-vx11-token", ""),
        ]);
        assert_eq!(found(&h, Some("token=")), None);
    }

    #[test]
    fn query_is_percent_decoded_strictly() {
        let h = HeaderMap::new();
        assert_eq!(
            found(&h, Some("token=vx11_a%2Fb%3D%3D+c")).unwrap().0,
            "vx11_a/b==+c"
        );
        assert_eq!(
            presented_token(&h, Some("token=abc%zzdef")).unwrap_err(),
            MalformedToken::PercentEncoding
        );
        assert_eq!(
            presented_token(&h, Some("token=abc%4")).unwrap_err(),
            MalformedToken::PercentEncoding
        );
        assert_eq!(
            presented_token(&h, Some("token=%ff%fe")).unwrap_err(),
            MalformedToken::QueryNotText
        );
    }

    #[test]
    fn non_ascii_header_is_malformed() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-vx11-token",
            HeaderValue::from_bytes(b"caf\xc3\xa9-token-0000000").unwrap(),
        );
        assert_eq!(
            presented_token(&h, None).unwrap_err(),
            MalformedToken::Header
        );
    }

    #[test]
    fn debug_hides_the_value() {
        let h = headers(&[("x-vx11-token", "vx11-operator-test-token")]);
        let token = presented_token(&h, None).unwrap().unwrap();
        let shown = format!("{token:?}");
        assert!(shown.contains("sha256:") && !shown.contains("operator-test"));
    }
}
