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
    // Redaction only replaces values: pair for pair (split on `&`, as the extraction
    // does) the redacted query is the original, or the pair's key with `=REDACTED`, or its
    // `;`-parts each kept or so replaced. And the pair the extraction reads the token from
    // is `token=REDACTED`, nothing of the value left.
    let originals: Vec<&str> = query.split('&').collect();
    let pieces: Vec<&str> = redacted.split('&').collect();
    assert_eq!(
        pieces.len(),
        originals.len(),
        "pairs added or lost: {redacted}"
    );
    let replaced = |original: &str, piece: &str| {
        original
            .split_once('=')
            .is_some_and(|(key, _)| piece == format!("{key}={REDACTED}"))
    };
    for (original, piece) in originals.iter().zip(&pieces) {
        if original == piece || replaced(original, piece) {
            continue;
        }
        let (subs, redacted_subs): (Vec<&str>, Vec<&str>) =
            (original.split(';').collect(), piece.split(';').collect());
        assert_eq!(subs.len(), redacted_subs.len(), "{original:?} -> {piece:?}");
        for (sub, redacted_sub) in subs.iter().zip(&redacted_subs) {
            assert!(
                sub == redacted_sub || replaced(sub, redacted_sub),
                "{original:?} -> {piece:?}"
            );
        }
    }
    let extracted = originals
        .iter()
        .position(|pair| pair.split_once('=').unwrap_or((pair, "")).0 == "token");
    if let Some(at) = extracted
        && query_param_token(query).is_some_and(|raw| !raw.is_empty())
    {
        assert_eq!(pieces[at], format!("token={REDACTED}"), "{redacted}");
    }
});
