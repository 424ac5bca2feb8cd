//! The rules of `plan`, round after round, as the controller would apply them.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use vx11_tokenset::{GenerateError, TokenEntry, TokenState, TokenValue};

use super::*;
use crate::crd::{GenerateSpec, RotationSpec, SecretKeyRef, TokenSpec, Vx11TokenSetSpec};
use crate::state::Observed;

pub(super) fn t0() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

pub(super) fn generated(name: &str) -> TokenSpec {
    TokenSpec {
        name: name.into(),
        generate: Some(GenerateSpec { bytes: 32 }),
        secret_ref: None,
        expires_at: None,
    }
}

pub(super) fn referenced(name: &str, secret: &str) -> TokenSpec {
    TokenSpec {
        name: name.into(),
        generate: None,
        secret_ref: Some(SecretKeyRef {
            name: secret.into(),
            key: "token".into(),
        }),
        expires_at: None,
    }
}

pub(super) fn spec(tokens: Vec<TokenSpec>, every: Option<&str>, grace: &str) -> Vx11TokenSetSpec {
    Vx11TokenSetSpec {
        secret_name: "svc".into(),
        client_secret_name: "client".into(),
        tokens,
        rotation: Some(RotationSpec {
            every: every.map(Into::into),
            grace_period: grace.into(),
        }),
        propagation: None,
    }
}

/// Deterministic generator: `vx11_test_value_<n>` padded.
struct Gen(u32);
impl Gen {
    fn call(&mut self, _bytes: usize) -> Result<TokenValue, GenerateError> {
        self.0 += 1;
        Ok(TokenValue::new(format!("vx11_test_value_{:04}_padding", self.0)).unwrap())
    }
}

/// Runs a plan and turns its output into the next round's observation, as the
/// controller's writes would.
pub(super) struct World {
    pub spec: Vx11TokenSetSpec,
    pub observed: Observed,
    pub sources: BTreeMap<String, Source>,
    pub rotate: Option<String>,
    pub token_rotate: BTreeMap<String, String>,
    pub acknowledged: Acknowledged,
    generator: Gen,
}

impl World {
    pub fn new(spec: Vx11TokenSetSpec) -> Self {
        Self {
            spec,
            observed: Observed::default(),
            sources: BTreeMap::new(),
            rotate: None,
            token_rotate: BTreeMap::new(),
            acknowledged: Acknowledged::Everyone,
            generator: Gen(0),
        }
    }

    pub fn step(&mut self, now: DateTime<Utc>) -> Plan {
        let input = Input {
            spec: &self.spec,
            rotate_request: self.rotate.as_deref(),
            token_rotate_requests: &self.token_rotate,
            acknowledged: self.acknowledged,
            observed: &self.observed,
            sources: &self.sources,
            now,
        };
        let generator = &mut self.generator;
        let plan = plan(&input, &mut |b| generator.call(b)).unwrap();
        self.observed = Observed {
            record: Some(plan.record.clone()),
            client_values: plan
                .client_values
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
        };
        plan
    }

    pub fn entries(&self, name: &str) -> Vec<TokenEntry> {
        let record = self.observed.record.as_ref().unwrap();
        record
            .tokens
            .iter()
            .filter(|e| e.name == name)
            .cloned()
            .collect()
    }

    pub fn generation(&self) -> u64 {
        self.observed.record.as_ref().unwrap().generation
    }
}

#[test]
fn first_reconcile_issues_each_generated_token_and_writes_generation_1() {
    let mut w = World::new(spec(
        vec![generated("operator"), generated("ci")],
        Some("24h"),
        "10m",
    ));
    let plan = w.step(t0());
    assert_eq!(plan.record.generation, 1);
    assert_eq!(plan.record.tokens.len(), 2);
    for e in &plan.record.tokens {
        assert_eq!(e.state, TokenState::Active);
        assert_eq!(e.not_before, Some(t0()));
        let value = &plan.client_values[&e.name];
        assert_eq!(
            value.digest(),
            e.sha256,
            "the client value is the active digest's"
        );
    }
    assert!(matches!(plan.notes[0], Note::Issued { .. }));
    assert_eq!(plan.next_rotation, Some(t0() + TimeDelta::hours(24)));
    assert_eq!(plan.next_wake, plan.next_rotation);
    assert_eq!(plan.record.last_rotation, None);
}

#[test]
fn idle_reconciles_change_nothing() {
    let mut w = World::new(spec(vec![generated("operator")], Some("24h"), "10m"));
    let first = w.step(t0());
    let record = first.record.clone();
    for minutes in [1, 60, 600] {
        let again = w.step(t0() + TimeDelta::minutes(minutes));
        assert_eq!(again.record, record, "no change after {minutes} minutes");
        assert!(again.notes.is_empty());
    }
}

#[test]
fn scheduled_rotation_keeps_the_old_value_for_the_grace_period_then_prunes_it() {
    let mut w = World::new(spec(vec![generated("operator")], Some("1h"), "10m"));
    let first = w.step(t0());
    let old = first.record.tokens[0].sha256;

    // One second early: nothing.
    let early = w.step(t0() + TimeDelta::seconds(3599));
    assert!(early.notes.is_empty());
    assert_eq!(early.next_wake, Some(t0() + TimeDelta::hours(1)));

    let at = t0() + TimeDelta::hours(1);
    let plan = w.step(at);
    assert_eq!(plan.record.generation, 2);
    let entries = w.entries("operator");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].state, TokenState::Active);
    assert_eq!(entries[0].not_before, Some(at));
    assert_ne!(entries[0].sha256, old);
    assert_eq!(entries[1].sha256, old);
    assert_eq!(entries[1].state, TokenState::Retiring);
    assert_eq!(entries[1].expires_at, Some(at + TimeDelta::minutes(10)));
    assert_eq!(plan.client_values["operator"].digest(), entries[0].sha256);
    assert_eq!(plan.record.last_rotation, Some(at));
    assert_eq!(plan.next_wake, Some(at + TimeDelta::minutes(10)));
    assert!(matches!(
        plan.notes[0],
        Note::Rotated {
            cause: Cause::Scheduled,
            ..
        }
    ));

    // End of grace: pruned, generation grows once more.
    let pruned = w.step(at + TimeDelta::minutes(10));
    assert_eq!(w.entries("operator").len(), 1);
    assert_eq!(pruned.record.generation, 3);
    assert!(
        matches!(&pruned.notes[0], Note::Retired { fingerprint, .. } if *fingerprint == old.fingerprint())
    );
}

#[test]
fn a_rotation_request_is_applied_once() {
    let mut w = World::new(spec(vec![generated("operator")], None, "2s"));
    w.step(t0());
    w.rotate = Some("2026-11-22T10:05".into());
    let plan = w.step(t0() + TimeDelta::minutes(5));
    assert_eq!(plan.rotations().collect::<Vec<_>>(), vec![Cause::Requested]);
    assert_eq!(
        plan.record.rotate_handled.as_deref(),
        Some("2026-11-22T10:05")
    );
    let again = w.step(t0() + TimeDelta::minutes(5) + TimeDelta::seconds(1));
    assert_eq!(
        again.rotations().count(),
        0,
        "the same annotation value is not applied twice"
    );
    assert_eq!(w.entries("operator").len(), 2);
    // No `every`: nothing scheduled; the next wake is the end of the grace period.
    assert_eq!(again.next_rotation, None);
    assert_eq!(
        again.next_wake,
        Some(t0() + TimeDelta::minutes(5) + TimeDelta::seconds(2))
    );
    w.rotate = Some("another".into());
    let third = w.step(t0() + TimeDelta::minutes(6));
    assert_eq!(third.rotations().count(), 1);
    // The first retiring value's grace ended, the second one's just began.
    assert_eq!(w.entries("operator").len(), 2);
}

#[test]
fn a_request_present_at_creation_does_not_rotate_fresh_tokens() {
    let mut w = World::new(spec(vec![generated("operator")], None, "2s"));
    w.rotate = Some("x".into());
    let plan = w.step(t0());
    assert_eq!(plan.rotations().count(), 0);
    assert_eq!(plan.record.rotate_handled.as_deref(), Some("x"));
}

#[test]
fn removing_a_token_revokes_every_value_at_once() {
    let mut w = World::new(spec(
        vec![generated("operator"), generated("ci")],
        None,
        "10m",
    ));
    w.step(t0());
    w.rotate = Some("r".into());
    w.step(t0() + TimeDelta::seconds(1));
    assert_eq!(w.entries("ci").len(), 2);
    w.spec.tokens.retain(|t| t.name != "ci");
    let plan = w.step(t0() + TimeDelta::seconds(2));
    assert!(w.entries("ci").is_empty());
    assert!(!plan.client_values.contains_key("ci"));
    assert!(plan.notes.iter().any(|n| matches!(n, Note::Revoked { name, fingerprints } if name == "ci" && fingerprints.len() == 2)));
    assert_eq!(w.entries("operator").len(), 2, "other tokens untouched");
}

#[test]
fn a_lost_client_value_is_replaced_and_the_old_digest_retires() {
    let mut w = World::new(spec(vec![generated("operator")], None, "10m"));
    let first = w.step(t0());
    let old = first.record.tokens[0].sha256;
    // A person edits the plaintext (or deletes the client Secret).
    w.observed
        .client_values
        .insert("operator".into(), "vx11_edited_by_a_person".into());
    let plan = w.step(t0() + TimeDelta::seconds(5));
    assert_eq!(
        plan.rotations().collect::<Vec<_>>(),
        vec![Cause::ClientValueLost]
    );
    let entries = w.entries("operator");
    assert_eq!(entries[1].sha256, old);
    assert_eq!(plan.client_values["operator"].digest(), entries[0].sha256);
    w.observed.client_values.clear();
    let plan = w.step(t0() + TimeDelta::seconds(6));
    assert_eq!(plan.rotations().count(), 1);
}

#[test]
fn crash_after_the_client_write_is_finished_without_a_second_rotation() {
    // The controller's write order is client Secret, then service Secret. Simulate a crash
    // between them: the client Secret has the new record, the service Secret the old one.
    let mut w = World::new(spec(vec![generated("operator")], Some("1h"), "10m"));
    w.step(t0());
    let at = t0() + TimeDelta::hours(1);
    let rotated = w.step(at);
    let service_record = {
        let mut r = rotated.record.clone();
        r.generation -= 1; // what the service Secret still holds doesn't matter: newest wins
        r
    };
    let client_record = rotated.record.clone();
    let client =
        crate::state::tests_support::secret_with(&client_record, Some(&rotated.client_values));
    let service = crate::state::tests_support::secret_with(&service_record, None);
    w.observed = crate::state::observe(Some(&service), Some(&client));
    let after = w.step(at + TimeDelta::seconds(3));
    assert_eq!(after.rotations().count(), 0, "no second rotation");
    assert_eq!(
        after.record, client_record,
        "the service Secret gets the client's record"
    );
    assert_eq!(
        after.client_values["operator"],
        rotated.client_values["operator"]
    );
}

#[test]
fn secret_ref_follows_the_source_and_reports_problems_without_the_value() {
    let mut w = World::new(spec(
        vec![generated("operator"), referenced("ci", "ci-token")],
        None,
        "10m",
    ));
    w.sources
        .insert("ci".into(), Source::Value("user-token-0123456789".into()));
    let first = w.step(t0());
    let ci = w.entries("ci");
    assert_eq!(ci.len(), 1);
    assert_eq!(ci[0].sha256, digest_of("user-token-0123456789"));
    assert!(
        !first.client_values.contains_key("ci"),
        "user values never go to the client Secret"
    );

    // Changed: the new value is active, the old one retires.
    w.sources
        .insert("ci".into(), Source::Value("user-token-changed-42".into()));
    let plan = w.step(t0() + TimeDelta::seconds(1));
    assert_eq!(
        plan.rotations().collect::<Vec<_>>(),
        vec![Cause::SourceChanged]
    );
    assert_eq!(
        w.entries("ci")[0].sha256,
        digest_of("user-token-changed-42")
    );
    assert_eq!(w.entries("ci")[1].state, TokenState::Retiring);
    let generation = w.generation();

    // Missing: problem, last entries kept, others served.
    w.sources.insert(
        "ci".into(),
        Source::SecretMissing {
            secret: "ci-token".into(),
        },
    );
    let plan = w.step(t0() + TimeDelta::seconds(2));
    assert_eq!(plan.problems.len(), 1);
    assert_eq!(plan.problems[0].kind, ProblemKind::SourceMissing);
    assert!(plan.problems[0].detail.contains("ci-token"));
    assert_eq!(w.entries("ci").len(), 2);
    assert_eq!(w.entries("operator").len(), 1);
    assert_eq!(w.generation(), generation);

    // Invalid: refused, not written, and the message does not echo it.
    w.sources
        .insert("ci".into(), Source::Value("has spaces in it yes".into()));
    let plan = w.step(t0() + TimeDelta::seconds(3));
    assert_eq!(plan.problems[0].kind, ProblemKind::InvalidSpec);
    assert!(
        !plan.problems[0].detail.contains("spaces in"),
        "{}",
        plan.problems[0].detail
    );
    assert_eq!(
        w.entries("ci")[0].sha256,
        digest_of("user-token-changed-42")
    );
    // The same text for every way a value can be invalid: nothing about its length or the
    // position of a bad character.
    let invalid_detail = plan.problems[0].detail.clone();
    assert!(
        invalid_detail.contains("does not hold a valid token"),
        "{invalid_detail}"
    );
    for (i, bad) in [
        "short",
        &"x".repeat(600),
        "tab\there-in-a-token",
        "nearly-valid-token-but\u{7f}",
    ]
    .into_iter()
    .enumerate()
    {
        w.sources.insert("ci".into(), Source::Value(bad.into()));
        let plan = w.step(t0() + TimeDelta::seconds(4 + i as i64));
        assert_eq!(plan.problems[0].kind, ProblemKind::InvalidSpec);
        assert_eq!(plan.problems[0].detail, invalid_detail, "{bad:?}");
        for leak in ["position", "bytes", "character at"] {
            assert!(!invalid_detail.contains(leak), "{leak}: {invalid_detail}");
        }
    }

    // A Secret without the opt-in label: refused, naming the label; nothing changes.
    let generation = w.generation();
    w.sources.insert(
        "ci".into(),
        Source::NotOptedIn {
            secret: "ci-token".into(),
        },
    );
    let plan = w.step(t0() + TimeDelta::seconds(9));
    assert_eq!(plan.problems[0].kind, ProblemKind::SourceNotOptedIn);
    assert_eq!(plan.problems[0].kind.reason(), "SourceNotOptedIn");
    assert!(
        plan.problems[0]
            .detail
            .contains("Secret ci-token does not carry the label vx11.dev/token-source=true"),
        "{}",
        plan.problems[0].detail
    );
    assert_eq!(w.generation(), generation);
    assert_eq!(
        w.entries("ci")[0].sha256,
        digest_of("user-token-changed-42")
    );

    // A new token whose source is invalid from the start is never written.
    w.spec.tokens.push(referenced("bad", "bad-token"));
    w.sources.insert("bad".into(), Source::Value("tiny".into()));
    w.step(t0() + TimeDelta::seconds(10));
    assert!(w.entries("bad").is_empty());
}

#[test]
fn expires_at_is_written_honoured_and_caps_the_grace_period() {
    let mut s = spec(vec![generated("operator")], None, "10m");
    let end = t0() + TimeDelta::minutes(5);
    s.tokens[0].expires_at = Some(end);
    let mut w = World::new(s);
    let plan = w.step(t0());
    assert_eq!(plan.record.tokens[0].expires_at, Some(end));
    assert_eq!(plan.next_wake, Some(end));
    w.rotate = Some("now".into());
    w.step(t0() + TimeDelta::minutes(1));
    let entries = w.entries("operator");
    assert_eq!(
        entries[1].expires_at,
        Some(end),
        "grace never outlives expiresAt"
    );
    let plan = w.step(end);
    assert!(w.entries("operator").is_empty());
    assert!(plan.notes.iter().any(|n| matches!(n, Note::Expired { .. })));
    assert!(!plan.client_values.contains_key("operator"));
    // And it is not issued again.
    let plan = w.step(end + TimeDelta::minutes(1));
    assert!(plan.notes.is_empty());
}

#[test]
fn generation_grows_only_with_content() {
    let mut w = World::new(spec(vec![generated("operator")], None, "10m"));
    w.step(t0());
    w.step(t0() + TimeDelta::seconds(1));
    assert_eq!(w.generation(), 1);
    w.spec.tokens.push(generated("ci"));
    w.step(t0() + TimeDelta::seconds(2));
    assert_eq!(w.generation(), 2);
    // A spec change that changes no entry (e.g. grace period) is not a new generation.
    w.spec.rotation.as_mut().unwrap().grace_period = "5m".into();
    w.step(t0() + TimeDelta::seconds(3));
    assert_eq!(w.generation(), 2);
}

#[test]
fn a_record_lost_from_both_secrets_adopts_the_client_plaintext() {
    let mut w = World::new(spec(vec![generated("operator")], None, "10m"));
    let first = w.step(t0());
    let value = first.client_values["operator"].clone();
    w.observed.record = None;
    let plan = w.step(t0() + TimeDelta::seconds(1));
    assert_eq!(plan.client_values["operator"], value);
    assert!(matches!(plan.notes[0], Note::Issued { .. }));
}
