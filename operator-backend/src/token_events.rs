//! A `tokens` event each time a token set is installed: generation, names, fingerprints and
//! states; never a value (the backend only holds digests anyway).

use std::sync::Arc;

use serde_json::{Value, json};
use vx11_service::Shutdown;
use vx11_tokenset::{Origin, Snapshot, TokenStore};

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
            events.publish(EventKind::Tokens, &tokens_event(&snapshot));
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.triggered() => return,
        }
    }
}

pub fn tokens_event(snapshot: &Snapshot) -> Value {
    let mut entries: Vec<_> = snapshot.set.entries().iter().collect();
    entries.sort_by(|a, b| (&a.name, a.state.as_str()).cmp(&(&b.name, b.state.as_str())));
    let tokens: Vec<Value> = entries
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
        "count": tokens.len(),
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
        let events = EventLog::starting_at(10, 1);
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
        let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
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

        store.install(TokenSet::new(vec![]), Some(2));
        let next = tokio::time::timeout(Duration::from_secs(5), sub.next())
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
}
