//! Property tests of parsing and checking.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use http::HeaderMap;
use proptest::prelude::*;
use vx11_tokenset::{
    LegacyTokens, TokenDigest, TokenEntry, TokenFile, TokenSet, TokenState, TokenValue, Verdict,
    parse_plain, presented_token,
};

/// Valid tokens: 16–64 printable ASCII characters without spaces.
fn token() -> impl Strategy<Value = String> {
    proptest::collection::vec(0x21u8..0x7f, 16..64)
        .prop_map(|bytes| String::from_utf8(bytes).unwrap())
}

fn time() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    proptest::option::of((0i64..4_000_000_000).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()))
}

fn entry() -> impl Strategy<Value = TokenEntry> {
    (
        "[a-z][a-z0-9-]{0,20}",
        any::<[u8; 32]>(),
        any::<bool>(),
        time(),
        time(),
    )
        .prop_map(|(name, digest, retiring, a, b)| {
            let (not_before, expires_at) = match (a, b) {
                (Some(a), Some(b)) if b < a => (Some(b), Some(a)),
                other => other,
            };
            TokenEntry {
                name,
                sha256: TokenDigest::from_bytes(digest),
                state: if retiring {
                    TokenState::Retiring
                } else {
                    TokenState::Active
                },
                not_before,
                expires_at,
            }
        })
}

proptest! {
    #[test]
    fn token_file_round_trips(generation in any::<u64>(), entries in proptest::collection::vec(entry(), 0..20)) {
        let file = TokenFile::new(generation, entries);
        prop_assert_eq!(TokenFile::parse(file.to_json().as_bytes()).unwrap(), file);
    }

    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = TokenFile::parse(&bytes);
        let _ = parse_plain(&bytes);
    }

    #[test]
    fn members_pass_and_strangers_fail(
        members in proptest::collection::hash_set(token(), 1..30),
        stranger in token(),
    ) {
        let now = Utc::now();
        let values: Vec<TokenValue> = members.iter().map(|t| TokenValue::new(t.as_str()).unwrap()).collect();
        let set = TokenSet::from_sources(None, &values, &LegacyTokens::default());
        for member in &members {
            prop_assert!(set.check(member, now).is_accepted());
        }
        prop_assert_eq!(set.check(&stranger, now).is_accepted(), members.contains(&stranger));
    }

    #[test]
    fn window_is_respected(token in token(), start in 0i64..1_000_000, len in 1i64..1_000_000, probe in 0i64..3_000_000) {
        let origin = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let not_before = origin + Duration::seconds(start);
        let expires_at = not_before + Duration::seconds(len);
        let file = TokenFile::new(1, vec![TokenEntry {
            name: "t".into(),
            sha256: TokenDigest::of(token.as_bytes()),
            state: TokenState::Active,
            not_before: Some(not_before),
            expires_at: Some(expires_at),
        }]);
        let set = TokenSet::from_sources(Some(&file), &[], &LegacyTokens::default());
        let at = origin + Duration::seconds(probe);
        let verdict = set.check(&token, at);
        if at < not_before {
            prop_assert!(matches!(verdict, Verdict::NotYetValid(_)));
        } else if at >= expires_at {
            prop_assert!(matches!(verdict, Verdict::Expired(_)));
        } else {
            prop_assert!(verdict.is_accepted());
        }
    }

    #[test]
    fn plain_list_reads_back_what_was_written(tokens in proptest::collection::vec(token(), 0..20)) {
        let text: String = tokens.iter().filter(|t| !t.starts_with('#')).map(|t| format!("{t}\n")).collect();
        let parsed = parse_plain(text.as_bytes()).unwrap();
        let expected: Vec<&String> = tokens.iter().filter(|t| !t.starts_with('#')).collect();
        prop_assert_eq!(parsed.len(), expected.len());
        for (value, original) in parsed.iter().zip(expected) {
            prop_assert_eq!(value.expose(), original.as_str());
        }
    }

    #[test]
    fn query_tokens_survive_percent_encoding(token in token()) {
        let encoded = percent_encoding::utf8_percent_encode(&token, percent_encoding::NON_ALPHANUMERIC).to_string();
        let query = format!("follow=true&token={encoded}");
        let headers = HeaderMap::new();
        let found = presented_token(&headers, Some(&query)).unwrap().unwrap();
        prop_assert_eq!(found.expose(), token.as_str());
    }

    #[test]
    fn fingerprints_and_debug_never_show_the_value(token in token()) {
        let value = TokenValue::new(token.as_str()).unwrap();
        let shown = format!("{value:?} {value} {:?}", value.digest());
        prop_assert!(!shown.contains(&token));
    }
}
