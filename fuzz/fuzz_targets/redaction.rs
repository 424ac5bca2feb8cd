//! Redaction of query strings: whatever the extraction reads as a token is gone from the
//! redacted query, which the extraction then reads as `REDACTED` or nothing.
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use vx11_tokenset::{REDACTED, presented_token, query_param_token, redact_query};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let redacted = redact_query(query);
    let headers = HeaderMap::new();
    if let Ok(Some(token)) = presented_token(&headers, Some(&redacted)) {
        assert_eq!(token.expose(), REDACTED, "a token survived: {redacted}");
    }
    // The pair the token was read from keeps nothing of it. Each `&`-piece of the
    // redacted query (the extraction splits on `&` only) holding a part of the raw value
    // holds it only in its redacted parts, or is a pair of the original query whose key
    // names no token (the client wrote the value there as well).
    let Some(raw) = query_param_token(query).filter(|raw| !raw.is_empty()) else {
        return;
    };
    let harmless: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            pair.split_once('=')
                .is_none_or(|(key, _)| !key.to_ascii_lowercase().contains("token"))
        })
        .collect();
    let redacted_suffix = format!("={REDACTED}");
    for part in raw.split(';').filter(|part| part.len() >= 8 || *part == raw) {
        for piece in redacted.split('&') {
            if harmless.contains(&piece) {
                continue;
            }
            let unredacted: Vec<&str> = piece
                .split(';')
                .filter(|p| !p.ends_with(&redacted_suffix))
                .collect();
            assert!(
                !unredacted.join(";").contains(part),
                "{part:?} of the token survived in {piece:?}: {redacted}"
            );
        }
    }
});
