//! The token check of a request, as an HTTP answer.

use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};

use vx11_tokenset::{
    Carrier, Carriers, Fingerprint, TOKEN_HEADER, TokenDigest, TokenStore, Verdict,
    presented_token_in,
};

use crate::{ApiError, ErrorCode, rfc3339};

/// Who passed the check: safe to log (name and fingerprint only).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub name: Arc<str>,
    pub fingerprint: Fingerprint,
    pub digest: TokenDigest,
    pub carrier: Carrier,
    /// When the matched entry stops being accepted, if it does.
    pub expires_at: Option<DateTime<Utc>>,
}

const REALM: &str = "Bearer realm=\"vx11\"";

/// Checks the token a request carries against the current set, at this instant.
pub fn authenticate(
    store: &TokenStore,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Authenticated, ApiError> {
    authenticate_carriers(
        store,
        Carriers {
            token_header: headers.get(TOKEN_HEADER).map(|v| v.as_bytes()),
            authorization: headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
            query,
        },
    )
}

/// [`authenticate`] of a request read without a header map.
pub fn authenticate_carriers(
    store: &TokenStore,
    carriers: Carriers<'_>,
) -> Result<Authenticated, ApiError> {
    let presented = match presented_token_in(carriers) {
        Ok(Some(token)) => token,
        Ok(None) => return Err(missing()),
        Err(malformed) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedToken,
                malformed.to_string(),
            ));
        }
    };
    let digest = presented.digest();
    let carrier = presented.carrier;
    let snapshot = store.snapshot();
    match snapshot.set.check_digest(&digest, Utc::now()) {
        Verdict::Accepted(entry) => Ok(Authenticated {
            name: entry.name.clone(),
            fingerprint: entry.fingerprint,
            digest,
            carrier,
            expires_at: entry.expires_at,
        }),
        Verdict::Expired(entry) => Err(unauthorized(
            ErrorCode::ExpiredToken,
            format!(
                "token `{}` ({}) expired at {}; read the current value from the client Secret",
                entry.name,
                entry.fingerprint,
                rfc3339(entry.expires_at),
            ),
        )),
        Verdict::NotYetValid(entry) => Err(unauthorized(
            ErrorCode::InvalidToken,
            format!(
                "token `{}` ({}) is not valid before {}",
                entry.name,
                entry.fingerprint,
                rfc3339(entry.not_before),
            ),
        )),
        Verdict::Missing => Err(missing()),
        Verdict::Invalid if snapshot.set.is_empty() => Err(unauthorized(
            ErrorCode::InvalidToken,
            "this service has no tokens loaded yet, so no token can pass; see its /ready".into(),
        )),
        Verdict::Invalid => Err(unauthorized(
            ErrorCode::InvalidToken,
            format!(
                "token {} is not in the current token set; if it was rotated, read the current value from the client Secret",
                digest.fingerprint()
            ),
        )),
    }
}

fn missing() -> ApiError {
    ApiError {
        challenge: Some(HeaderValue::from_static(REALM)),
        ..ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::MissingToken,
            "this route needs a token: send it as the X-VX11-Token header, as Authorization: Bearer <token>, or as ?token= (for EventSource)",
        )
    }
}

fn unauthorized(code: ErrorCode, detail: String) -> ApiError {
    let challenge = format!("{REALM}, error=\"invalid_token\", error_description=\"{code}\"");
    ApiError {
        challenge: HeaderValue::from_str(&challenge).ok(),
        ..ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vx11_tokenset::{Origin, SetEntry, TokenSet};

    fn store_with(token: &str, expires_at: Option<DateTime<Utc>>) -> TokenStore {
        let store = TokenStore::new();
        let mut entry = SetEntry::new(
            "operator",
            TokenDigest::of(token.as_bytes()),
            Origin::TokenFile,
        );
        entry.expires_at = expires_at;
        store.install(TokenSet::new(vec![entry]), Some(1));
        store
    }

    fn header(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-vx11-token", HeaderValue::from_str(token).unwrap());
        h
    }

    #[test]
    fn codes() {
        let token = "vx11-operator-test-token";
        let store = store_with(token, None);
        let ok = authenticate(&store, &header(token), None).unwrap();
        assert_eq!(&*ok.name, "operator");
        assert_eq!(ok.carrier, Carrier::Header);

        let err = authenticate(&store, &HeaderMap::new(), None).unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (StatusCode::UNAUTHORIZED, "missing_token")
        );
        assert_eq!(err.challenge.unwrap(), REALM);

        let err = authenticate(&store, &header("vx11-some-other-token"), None).unwrap_err();
        assert_eq!(err.code, "invalid_token");
        assert!(!err.detail.contains("vx11-some-other-token"));

        let err = authenticate(&store, &HeaderMap::new(), Some("token=%zz")).unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (StatusCode::BAD_REQUEST, "malformed_token")
        );

        let expired = store_with(token, Some(Utc::now() - chrono::Duration::seconds(1)));
        let err =
            authenticate(&expired, &HeaderMap::new(), Some(&format!("token={token}"))).unwrap_err();
        assert_eq!(err.code, "expired_token");
        assert!(!err.detail.contains(token));
    }
}
