//! A `tokens` event each time a token set is installed: generation, counts by state, and
//! the names, fingerprints and states of a bounded number of entries; never a value (the
//! backend only holds digests anyway).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use vx11_service::Shutdown;
use vx11_tokenset::{Origin, SetEntry, Snapshot, TokenStore};

use crate::events::{EventKind, EventLog};

/// Publishes the set being served (if one is loaded), then every newly installed one,
/// until shutdown. Sets installed in quick succession may be reported once, as the newest.
pub async fn publish_token_changes(
    store: Arc<TokenStore>,
    events: Arc<EventLog>,
    shutdown: Shutdown,
) {
    let mut changes = store.subscribe();
    let mut published_serial = 0;
    loop {
        changes.borrow_and_update();
        let snapshot = store.snapshot();
        if snapshot.serial != published_serial {
            published_serial = snapshot.serial;
            if let Err(refused) = events.publish(EventKind::Tokens, &tokens_event(&snapshot)) {
                // Not expected: the event lists a bounded number of entries of bounded size.
                tracing::warn!(%refused, "the tokens event was not published");
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.triggered() => return,
        }
    }
}

/// Entries a `tokens` event lists at most; the others are only counted.
pub const LISTED_TOKENS: usize = 50;

/// The `tokens` event of `snapshot`, bounded whatever the size of the set: `count` (all
/// entries), `states` (entries by state), and `tokens`, the first [`LISTED_TOKENS`] entries
/// by name and state, each with its name, fingerprint, state, source and validity (never a
/// value); `listed` says how many are in `tokens`, `omitted` how many are not. A set of
/// 300 000 plain tokens makes an event of a few KiB, not of 39 MB.
pub fn tokens_event(snapshot: &Snapshot) -> Value {
    let all = snapshot.set.entries();
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    for entry in all {
        *states.entry(entry.state.as_str()).or_default() += 1;
    }
    let key = |entry: &SetEntry| (entry.name.clone(), entry.state.as_str());
    let mut listed: Vec<&SetEntry> = all.iter().collect();
    // The first entries by (name, state) without sorting the whole set.
    if listed.len() > LISTED_TOKENS {
        listed.select_nth_unstable_by_key(LISTED_TOKENS, |entry| key(entry));
        listed.truncate(LISTED_TOKENS);
    }
    listed.sort_by_key(|entry| key(entry));
    let tokens: Vec<Value> = listed
        .into_iter()
        .map(|entry| {
            json!({
                "name": &*entry.name,
                "fingerprint": entry.fingerprint.to_string(),
                "state": entry.state.as_str(),
                "source": match entry.origin {
                    Origin::TokenFile => "tokens.json",
                    Origin::PlainList => "tokens",
                    Origin::Environment => "environment",
                },
                "notBefore": entry.not_before,
                "expiresAt": entry.expires_at,
            })
        })
        .collect();
    json!({
        "generation": snapshot.generation,
        "count": all.len(),
        "states": states,
        "listed": tokens.len(),
        "omitted": all.len() - tokens.len(),
        "loadedAt": snapshot.loaded_at,
        "tokens": tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vx11_tokenset::{SetEntry, TokenDigest, TokenSet};

    #[tokio::test]
    async fn a_tokens_event_for_the_loaded_set_and_each_new_one() {
        let store = Arc::new(TokenStore::new());
        let events = EventLog::starting_at(crate::events::HistoryLimits::DEFAULT, 1);
        let shutdown = Shutdown::new();
        let digest = TokenDigest::of(b"vx11-operator-test-token");
        store.install(
            TokenSet::new(vec![SetEntry::new("operator", digest, Origin::TokenFile)]),
            Some(1),
        );
        let task = tokio::spawn(publish_token_changes(
            store.clone(),
            events.clone(),
            shutdown.clone(),
        ));
        let mut sub = events.subscribe(None);
        let first = tokio::time::timeout(Duration::from_secs(5), sub.next(usize::MAX))
            .await
            .unwrap();
        let data: Value = serde_json::from_slice(&first[0].data).unwrap();
        assert_eq!(first[0].kind, EventKind::Tokens);
        assert_eq!(data["generation"], 1);
        assert_eq!(data["tokens"][0]["name"], "operator");
        assert_eq!(
            data["tokens"][0]["fingerprint"],
            digest.fingerprint().to_string()
        );
        assert_eq!(data["tokens"][0]["state"], "active");
        assert_eq!(data["states"], json!({"active": 1}));
        assert_eq!(
            (data["listed"].as_u64(), data["omitted"].as_u64()),
            (Some(1), Some(0))
        );

        store.install(TokenSet::new(vec![]), Some(2));
        let next = tokio::time::timeout(Duration::from_secs(5), sub.next(usize::MAX))
            .await
            .unwrap();
        let data: Value = serde_json::from_slice(&next[0].data).unwrap();
        assert_eq!(
            (data["generation"].as_u64(), data["count"].as_u64()),
            (Some(2), Some(0))
        );

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_large_set_is_summarised_with_counts_and_a_bounded_list() {
        let mut entries: Vec<SetEntry> = (0..300_000u32)
            .map(|i| {
                SetEntry::new(
                    format!("tokens:{}", i + 1),
                    TokenDigest::of(format!("vx11-plain-token-{i:08}").as_bytes()),
                    Origin::PlainList,
                )
            })
            .collect();
        let mut retiring = SetEntry::new(
            "aaa",
            TokenDigest::of(b"vx11-retiring-token-0"),
            Origin::TokenFile,
        );
        retiring.state = vx11_tokenset::TokenState::Retiring;
        entries.push(retiring);
        let store = TokenStore::new();
        store.install(TokenSet::new(entries), Some(3));
        let event = tokens_event(&store.snapshot());
        let text = event.to_string();
        assert!(text.len() < 16 * 1024, "{} bytes", text.len());
        assert_eq!(event["count"], 300_001);
        assert_eq!(event["states"], json!({"active": 300_000, "retiring": 1}));
        assert_eq!(event["listed"], LISTED_TOKENS);
        assert_eq!(event["omitted"], 300_001 - LISTED_TOKENS);
        let listed = event["tokens"].as_array().unwrap();
        assert_eq!(listed.len(), LISTED_TOKENS);
        // The first by name, in order; names and fingerprints, never a value.
        assert_eq!(listed[0]["name"], "aaa");
        assert_eq!(listed[0]["state"], "retiring");
        assert_eq!(listed[1]["name"], "tokens:1");
        assert_eq!(listed[2]["name"], "tokens:10");
        assert!(
            listed[1]["fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        assert!(!text.contains("vx11-plain-token-"));
    }
}
