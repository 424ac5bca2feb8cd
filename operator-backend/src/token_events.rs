//! A `tokens` event each time a token set is installed: generation, names, fingerprints and
//! states; never a value (the backend only holds digests anyway).

use std::sync::Arc;

use serde_json::{Value, json};
use vx11_tokenset::service::Shutdown;
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
