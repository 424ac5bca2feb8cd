//! Staged rotation, round after round: stage, wait for the consumers, publish; and every
//! interleaving with requests, the schedule, revocation, expiry, lost plaintexts and a crash
//! at each write (the state read back from the Secrets alone).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Secret;
use vx11_tokenset::{TokenDigest, TokenState, TokenValue};

use super::tests::{World, generated, referenced, spec, t0};
use super::*;
use crate::state::tests_support::owner;
use crate::state::{Observed, client_secret, observe, service_secret, staged_key};

/// A world with consumers: a first value is published at once (nobody serves anything yet
/// is not the case here: the consumers serve generation 1 once it is written), so the set
/// starts published, every consumer on generation 1.
fn world(every: Option<&str>) -> World {
    let mut w = World::new(spec(vec![generated("operator")], every, "10m"));
    w.step(t0());
    w.acknowledged = Acknowledged::UpTo(1);
    w
}

fn digest(plan: &Plan, key: &str) -> Option<TokenDigest> {
    plan.client_values.get(key).map(TokenValue::digest)
}

fn states(w: &World, name: &str) -> Vec<TokenState> {
    w.entries(name).iter().map(|e| e.state).collect()
}

#[test]
fn a_requested_rotation_is_staged_then_published_once_every_consumer_serves_it() {
    let mut w = world(None);
    let old = w.entries("operator")[0].sha256;

    w.rotate = Some("r1".into());
    let at = t0() + TimeDelta::minutes(1);
    let staged = w.step(at);
    assert_eq!(staged.record.generation, 2);
    assert_eq!(
        states(&w, "operator"),
        [TokenState::Active, TokenState::Staged]
    );
    let new = w.entries("operator")[1].sha256;
    assert_eq!(
        digest(&staged, "operator"),
        Some(old),
        "clients keep the old value"
    );
    assert_eq!(digest(&staged, &staged_key("operator")), Some(new));
    assert_eq!(w.entries("operator")[0].expires_at, None, "no grace yet");
    assert!(matches!(
        staged.notes[..],
        [Note::Staged {
            cause: Some(Cause::Requested),
            ..
        }]
    ));
    assert_eq!(staged.rotations().count(), 0);
    assert_eq!(staged.waiting.len(), 1);
    assert_eq!(staged.waiting[0].stage.generation, 2);
    assert_eq!(staged.record.rotate_handled.as_deref(), Some("r1"));

    // A consumer still on generation 1: nothing moves, nothing is written.
    let waiting = w.step(at + TimeDelta::seconds(5));
    assert_eq!(waiting.record, staged.record);
    assert!(waiting.notes.is_empty());
    assert_eq!(digest(&waiting, "operator"), Some(old));

    // Every consumer serves generation 2: published, and only now the old value's grace.
    w.acknowledged = Acknowledged::UpTo(2);
    let published_at = at + TimeDelta::seconds(9);
    let published = w.step(published_at);
    assert_eq!(published.record.generation, 3);
    assert_eq!(digest(&published, "operator"), Some(new));
    assert_eq!(digest(&published, &staged_key("operator")), None);
    assert_eq!(
        states(&w, "operator"),
        [TokenState::Active, TokenState::Retiring]
    );
    assert_eq!(
        w.entries("operator")[1].expires_at,
        Some(published_at + TimeDelta::minutes(10))
    );
    assert_eq!(
        published.rotations().collect::<Vec<_>>(),
        [Cause::Requested]
    );
    assert_eq!(published.propagations, [TimeDelta::seconds(9)]);
    assert_eq!(published.record.last_rotation, Some(published_at));
    assert!(published.waiting.is_empty() && published.record.staged.is_empty());

    // Idle afterwards, even with consumers behind on the publication's generation.
    let idle = w.step(published_at + TimeDelta::seconds(1));
    assert_eq!(idle.record, published.record);
    assert!(idle.notes.is_empty());
}

#[test]
fn without_consumers_or_with_staging_off_a_value_is_published_in_the_plan_that_makes_it() {
    let mut w = world(None);
    w.acknowledged = Acknowledged::Everyone;
    w.rotate = Some("r1".into());
    let plan = w.step(t0() + TimeDelta::minutes(1));
    assert_eq!(
        states(&w, "operator"),
        [TokenState::Active, TokenState::Retiring]
    );
    assert_eq!(plan.rotations().collect::<Vec<_>>(), [Cause::Requested]);
    assert!(
        !plan.notes.iter().any(|n| matches!(n, Note::Staged { .. })),
        "no Staged event for a value published at once"
    );
    assert!(!plan.client_values.contains_key(&staged_key("operator")));
}

#[test]
fn requests_and_the_schedule_during_a_stage_are_folded_into_it() {
    let mut w = world(Some("1h"));
    w.rotate = Some("r1".into());
    let at = t0() + TimeDelta::minutes(1);
    let staged = w.step(at);
    let new = w.entries("operator")[1].sha256;

    // A second request, and the schedule falling due, while staged: same staged value.
    w.rotate = Some("r2".into());
    let again = w.step(t0() + TimeDelta::hours(2));
    assert!(again.notes.is_empty(), "{:?}", again.notes);
    assert_eq!(again.record.tokens, staged.record.tokens);
    assert_eq!(again.record.rotate_handled.as_deref(), Some("r2"));
    assert_eq!(
        staged.next_rotation,
        Some(at + TimeDelta::hours(1)),
        "the schedule follows the staged value"
    );
    assert_eq!(
        again.next_wake, None,
        "no wake-up in the past (a busy loop): publication comes from the consumers"
    );

    w.acknowledged = Acknowledged::UpTo(2);
    let published = w.step(t0() + TimeDelta::hours(2) + TimeDelta::seconds(1));
    assert_eq!(published.rotations().count(), 1, "one rotation, not two");
    assert_eq!(digest(&published, "operator"), Some(new));
    // r2 is handled: nothing further is staged.
    let after = w.step(t0() + TimeDelta::hours(2) + TimeDelta::seconds(2));
    assert!(after.notes.is_empty());
}

#[test]
fn a_token_rotate_annotation_rotates_that_token_only() {
    let mut w = World::new(spec(
        vec![generated("operator"), generated("ci")],
        None,
        "1m",
    ));
    w.step(t0());
    w.acknowledged = Acknowledged::UpTo(1);
    w.token_rotate
        .insert("ci".to_owned(), "2026-11-22T10:01:00Z".to_owned());
    let plan = w.step(t0() + TimeDelta::minutes(1));
    assert_eq!(states(&w, "operator"), [TokenState::Active]);
    assert_eq!(states(&w, "ci"), [TokenState::Active, TokenState::Staged]);
    assert_eq!(
        plan.record
            .token_rotate_handled
            .get("ci")
            .map(String::as_str),
        Some("2026-11-22T10:01:00Z")
    );
    let again = w.step(t0() + TimeDelta::minutes(2));
    assert!(again.notes.is_empty(), "handled once");
}

#[test]
fn revocation_and_expiry_never_wait_for_a_stage() {
    let mut w = world(None);
    w.rotate = Some("r1".into());
    w.step(t0() + TimeDelta::minutes(1));
    let fingerprints: Vec<_> = w
        .entries("operator")
        .iter()
        .map(|e| e.sha256.fingerprint())
        .collect();

    // Revoked while staged: every value, the staged one too, and its plaintext.
    let mut revoked = World::new(spec(Vec::new(), None, "10m"));
    revoked.observed = std::mem::take(&mut w.observed);
    revoked.acknowledged = Acknowledged::UpTo(1);
    let plan = revoked.step(t0() + TimeDelta::minutes(2));
    assert!(plan.record.tokens.is_empty() && plan.record.staged.is_empty());
    assert!(plan.client_values.is_empty());
    assert_eq!(
        plan.notes,
        [Note::Revoked {
            name: "operator".into(),
            fingerprints
        }]
    );

    // Expired while staged: the same, by the clock.
    let mut w = world(None);
    w.rotate = Some("r1".into());
    w.step(t0() + TimeDelta::minutes(1));
    w.spec.tokens[0].expires_at = Some(t0() + TimeDelta::minutes(3));
    let before = w.step(t0() + TimeDelta::minutes(2));
    assert!(
        w.entries("operator")
            .iter()
            .all(|e| e.expires_at == Some(t0() + TimeDelta::minutes(3))),
        "the staged value gets the expiry too"
    );
    assert_eq!(before.waiting.len(), 1);
    let plan = w.step(t0() + TimeDelta::minutes(3));
    assert!(plan.record.tokens.is_empty() && plan.record.staged.is_empty());
    assert!(plan.client_values.is_empty());
    assert!(matches!(plan.notes[..], [Note::Expired { .. }]));
}

#[test]
fn a_first_value_and_a_lost_plaintext_are_staged_while_consumers_exist() {
    // A token added to a set whose pods run: its first value waits for them.
    let mut w = world(None);
    w.spec.tokens.push(generated("ci"));
    let plan = w.step(t0() + TimeDelta::minutes(1));
    assert_eq!(states(&w, "ci"), [TokenState::Staged]);
    assert!(!plan.client_values.contains_key("ci"));
    assert!(matches!(plan.notes[..], [Note::Staged { cause: None, .. }]));
    w.acknowledged = Acknowledged::UpTo(2);
    let plan = w.step(t0() + TimeDelta::minutes(2));
    assert_eq!(states(&w, "ci"), [TokenState::Active]);
    assert!(matches!(plan.notes[..], [Note::Issued { .. }]));
    assert!(plan.client_values.contains_key("ci"));

    // The client plaintext deleted by a person: the old digest keeps serving the clients that
    // hold it, a new value is staged, and the key comes back when it is published.
    w.acknowledged = Acknowledged::UpTo(3);
    w.observed.client_values.remove("operator");
    let plan = w.step(t0() + TimeDelta::minutes(3));
    assert_eq!(
        states(&w, "operator"),
        [TokenState::Active, TokenState::Staged]
    );
    assert!(!plan.client_values.contains_key("operator"));
    assert!(matches!(
        plan.notes[..],
        [Note::Staged {
            cause: Some(Cause::ClientValueLost),
            ..
        }]
    ));
    w.acknowledged = Acknowledged::UpTo(4);
    let plan = w.step(t0() + TimeDelta::minutes(4));
    assert_eq!(
        plan.rotations().collect::<Vec<_>>(),
        [Cause::ClientValueLost]
    );
    assert!(plan.client_values.contains_key("operator"));
}

#[test]
fn a_staged_value_whose_plaintext_is_lost_is_staged_anew() {
    let mut w = world(None);
    w.rotate = Some("r1".into());
    w.step(t0() + TimeDelta::minutes(1));
    let first = w.entries("operator")[1].sha256;
    w.observed.client_values.remove(&staged_key("operator"));
    // Even a consumer that serves the first stage cannot make it publishable: no plaintext.
    w.acknowledged = Acknowledged::UpTo(2);
    let plan = w.step(t0() + TimeDelta::minutes(2));
    let second = w.entries("operator")[1].sha256;
    assert_ne!(first, second);
    assert_eq!(
        states(&w, "operator"),
        [TokenState::Active, TokenState::Staged]
    );
    assert_eq!(digest(&plan, &staged_key("operator")), Some(second));
    assert!(matches!(
        &plan.notes[..],
        [Note::Staged { replaces: None, .. }]
    ));
    assert_eq!(plan.waiting[0].stage.generation, 3);
}

#[test]
fn a_new_secret_ref_value_is_staged_and_a_reverted_one_unstaged() {
    let mut w = World::new(spec(vec![referenced("ci", "ci-token")], None, "10m"));
    let value = |v: &str| Source::Value(v.to_owned());
    w.sources
        .insert("ci".into(), value("user-owned-token-value-0001"));
    w.step(t0());
    w.acknowledged = Acknowledged::UpTo(1);

    w.sources
        .insert("ci".into(), value("user-owned-token-value-0002"));
    let plan = w.step(t0() + TimeDelta::minutes(1));
    assert_eq!(states(&w, "ci"), [TokenState::Active, TokenState::Staged]);
    assert!(plan.client_values.is_empty(), "the user's Secret holds it");
    assert!(matches!(
        plan.notes[..],
        [Note::Staged {
            cause: Some(Cause::SourceChanged),
            ..
        }]
    ));

    // Changed again before publication: the newer value replaces the staged one.
    w.sources
        .insert("ci".into(), value("user-owned-token-value-0003"));
    let plan = w.step(t0() + TimeDelta::minutes(2));
    assert!(matches!(
        plan.notes[..],
        [Note::Staged {
            replaces: Some(_),
            ..
        }]
    ));
    assert_eq!(w.entries("ci").len(), 2);

    // Back to the served value: nothing left to publish.
    w.sources
        .insert("ci".into(), value("user-owned-token-value-0001"));
    let plan = w.step(t0() + TimeDelta::minutes(3));
    assert_eq!(states(&w, "ci"), [TokenState::Active]);
    assert!(plan.waiting.is_empty());

    w.sources
        .insert("ci".into(), value("user-owned-token-value-0004"));
    w.step(t0() + TimeDelta::minutes(4));
    let generation = w.generation();
    w.acknowledged = Acknowledged::UpTo(generation);
    let plan = w.step(t0() + TimeDelta::minutes(5));
    assert_eq!(plan.rotations().collect::<Vec<_>>(), [Cause::SourceChanged]);
    assert_eq!(states(&w, "ci"), [TokenState::Active, TokenState::Retiring]);
}

/// The two Secrets as the controller writes them for `plan`.
fn written(plan: &Plan) -> (Secret, Secret) {
    let ts = owner();
    (
        service_secret(&ts, &plan.record),
        client_secret(&ts, &plan.record, &plan.client_values),
    )
}

fn read_back(service: &Secret, client: &Secret) -> Observed {
    observe(Some(service), Some(client))
}

/// A crash after the client Secret's write and before the service Secret's, at the stage and
/// at the publication: the next reconcile, reading only the two Secrets, finishes the step:
/// no value lost, nothing rotated twice.
#[test]
fn a_crash_between_the_writes_of_a_stage_or_a_publication_finishes_it_once() {
    let mut w = world(None);
    let (service0, _) = written(&w.step(t0() + TimeDelta::seconds(1)));

    // Stage; crash after the client write.
    w.rotate = Some("r1".into());
    let at = t0() + TimeDelta::minutes(1);
    let staged = w.step(at);
    let (_, client1) = written(&staged);
    w.observed = read_back(&service0, &client1);
    let resumed = w.step(at + TimeDelta::seconds(1));
    assert!(resumed.notes.is_empty(), "{:?}", resumed.notes);
    assert_eq!(
        resumed.record, staged.record,
        "the stage is finished as it was"
    );
    assert_eq!(
        resumed.client_values, staged.client_values,
        "both plaintexts kept"
    );
    let (service1, _) = written(&resumed);

    // Publish; crash after the client write.
    w.acknowledged = Acknowledged::UpTo(2);
    let published = w.step(at + TimeDelta::seconds(5));
    let (_, client2) = written(&published);
    w.observed = read_back(&service1, &client2);
    let resumed = w.step(at + TimeDelta::seconds(6));
    assert_eq!(resumed.rotations().count(), 0, "no second rotation");
    assert_eq!(resumed.record, published.record);
    assert_eq!(digest(&resumed, "operator"), digest(&published, "operator"));

    // And with the annotations stripped by a person: `tokens.json` alone still says what is
    // staged, and the stage waits for that file's generation.
    let mut w = world(None);
    w.rotate = Some("r1".into());
    let staged = w.step(at);
    let (mut service, mut client) = written(&staged);
    service.metadata.annotations = None;
    client.metadata.annotations = None;
    w.observed = read_back(&service, &client);
    let resumed = w.step(at + TimeDelta::seconds(1));
    assert_eq!(resumed.record.tokens, staged.record.tokens);
    assert_eq!(
        resumed.waiting[0].stage.generation,
        staged.record.generation
    );
    w.acknowledged = Acknowledged::UpTo(staged.record.generation);
    let published = w.step(at + TimeDelta::seconds(2));
    assert_eq!(
        published.rotations().collect::<Vec<_>>(),
        [Cause::Unrecorded]
    );
    assert_eq!(
        states(&w, "operator"),
        [TokenState::Active, TokenState::Retiring]
    );
}

#[test]
fn no_plan_output_holds_a_value_outside_the_client_values() {
    let mut w = world(None);
    w.rotate = Some("r1".into());
    let plan = w.step(t0() + TimeDelta::minutes(1));
    let debug = format!("{:?} {:?} {:?}", plan.record, plan.notes, plan.waiting);
    for value in plan.client_values.values() {
        assert!(!debug.contains(value.expose()));
    }
    let _: &BTreeMap<String, TokenValue> = &plan.client_values;
    let _: DateTime<Utc> = t0();
}
