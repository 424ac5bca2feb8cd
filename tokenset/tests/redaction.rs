//! Property tests of redaction: whatever the extraction reads as a token, in whatever
//! spelling of its key, is gone from the redacted query.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::HeaderMap;
use proptest::prelude::*;
use vx11_tokenset::{REDACTED, presented_token, redact_query};

/// A token value that cannot occur by chance elsewhere in the generated queries (other
/// keys and values are lower-case letters only).
fn secret_value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~.-]{16,40}".prop_map(|tail| format!("vx11S{tail}"))
}

/// `text` with each byte percent-encoded or not, at random.
fn maybe_encoded(text: String) -> impl Strategy<Value = String> {
    let len = text.len();
    proptest::collection::vec(any::<bool>(), len).prop_map(move |mask| {
        text.bytes()
            .zip(mask)
            .map(|(b, encode)| {
                if encode {
                    format!("%{b:02X}")
                } else {
                    char::from(b).to_string()
                }
            })
            .collect()
    })
}

/// The key `token` as an attacker might spell it: any case, bytes percent-encoded once or
/// twice, `+` (a space to form decoders) around it.
fn token_key() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((any::<bool>(), 0u8..3), 5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(spelling, plus_before, plus_after)| {
            let mut key = String::new();
            if plus_before {
                key.push('+');
            }
            for ((upper, encoding), c) in spelling.into_iter().zip("token".chars()) {
                let c = if upper { c.to_ascii_uppercase() } else { c };
                match encoding {
                    0 => key.push(c),
                    1 => key.push_str(&format!("%{:02X}", c as u8)),
                    _ => key.push_str(&format!("%25{:02X}", c as u8)),
                }
            }
            if plus_after {
                key.push('+');
            }
            key
        })
}

/// A query of harmless pairs with token pairs among them; the token values.
fn query_with_tokens() -> impl Strategy<Value = (String, Vec<String>)> {
    let harmless = proptest::collection::vec(("[a-z]{1,6}", "[a-z]{0,8}"), 0..5);
    let tokens = proptest::collection::vec(
        (
            prop_oneof![Just("token".to_owned()), token_key()],
            secret_value().prop_flat_map(|v| (Just(v.clone()), maybe_encoded(v))),
        ),
        1..3,
    );
    (harmless, tokens, any::<u64>(), any::<bool>()).prop_map(
        |(harmless, tokens, seed, semicolons)| {
            let mut pairs: Vec<String> = harmless
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut values = Vec::new();
            for (i, (key, (value, encoded))) in tokens.into_iter().enumerate() {
                let at = (seed as usize).wrapping_add(i * 7) % (pairs.len() + 1);
                pairs.insert(at, format!("{key}={encoded}"));
                values.push(value);
                values.push(encoded);
            }
            let separator = if semicolons { ";" } else { "&" };
            (pairs.join(separator), values)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn no_token_value_survives_redaction((query, values) in query_with_tokens()) {
        let redacted = redact_query(&query);
        for value in &values {
            prop_assert!(!redacted.contains(value.as_str()), "{} -> {}", query, redacted);
        }
        if let Ok(Some(token)) = presented_token(&HeaderMap::new(), Some(&query)) {
            prop_assert!(!redacted.contains(token.expose()), "{} -> {}", query, redacted);
        }
    }

    #[test]
    fn the_extraction_finds_nothing_but_redacted_in_a_redacted_query(query in "[ -~]{0,80}") {
        let redacted = redact_query(&query);
        if let Ok(Some(token)) = presented_token(&HeaderMap::new(), Some(&redacted)) {
            prop_assert_eq!(token.expose(), REDACTED);
        }
        if let Ok(Some(token)) = presented_token(&HeaderMap::new(), Some(&query)) {
            // The value may occur elsewhere in the query (then the client wrote it there
            // in a harmless parameter too); never in the pair it was read from.
            for pair in redacted.split(['&', ';']) {
                if let Some(("token", value)) = pair.split_once('=') {
                    prop_assert_eq!(value, REDACTED, "{}", token.expose());
                }
            }
        }
    }
}

#[test]
fn a_percent_encoded_key_is_redacted() {
    let query = "follow=true&tok%65n=vx11_a_value_the_extractor_ignores";
    assert_eq!(redact_query(query), "follow=true&tok%65n=REDACTED");
}
