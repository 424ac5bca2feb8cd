//! What the Secrets of a set should hold, from its spec, the state read back from the Secrets,
//! the values of referenced Secrets and the time. Pure: the only effect is the token generator
//! passed in (tests pass a deterministic one), so every rule of rotation, grace, expiry and
//! revocation is unit tested here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use vx11_tokenset::{Fingerprint, GenerateError, TokenDigest, TokenEntry, TokenState, TokenValue};

use crate::crd::{DEFAULT_GRACE_PERIOD, TokenSpec, Vx11TokenSetSpec};
use crate::duration::parse_chrono;
use crate::state::{Observed, Record};
use crate::{Error, Result};

/// A referenced Secret's value for one token, as read.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    Value(String),
    SecretMissing { secret: String },
    KeyMissing { secret: String, key: String },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Value(_) => f.write_str("Value(…)"),
            Source::SecretMissing { secret } => write!(f, "SecretMissing({secret})"),
            Source::KeyMissing { secret, key } => write!(f, "KeyMissing({secret}/{key})"),
        }
    }
}

/// Everything a plan depends on.
#[derive(Debug)]
pub struct Input<'a> {
    pub spec: &'a Vx11TokenSetSpec,
    /// The value of the `vx11.dev/rotate` annotation, if set.
    pub rotate_request: Option<&'a str>,
    pub observed: &'a Observed,
    /// Values of `secretRef` tokens, by token name.
    pub sources: &'a BTreeMap<String, Source>,
    pub now: DateTime<Utc>,
}

/// Why a value was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `rotation.every` elapsed.
    Scheduled,
    /// A new `vx11.dev/rotate` annotation value.
    Requested,
    /// The client Secret lost the plaintext of the active digest (deleted or edited).
    ClientValueLost,
    /// The referenced Secret holds a new value.
    SourceChanged,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Scheduled => "scheduled",
            Cause::Requested => "requested",
            Cause::ClientValueLost => "client_value_lost",
            Cause::SourceChanged => "source_changed",
        }
    }
}

/// Something that happened to a token, for an event and a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Issued {
        name: String,
        fingerprint: Fingerprint,
    },
    Rotated {
        name: String,
        cause: Cause,
        fingerprint: Fingerprint,
        previous: Fingerprint,
    },
    /// A retiring value reached the end of its grace period and was removed.
    Retired {
        name: String,
        fingerprint: Fingerprint,
    },
    /// The token left the spec: every value removed at once.
    Revoked {
        name: String,
        fingerprints: Vec<Fingerprint>,
    },
    /// The token's `expiresAt` passed: its values were removed.
    Expired {
        name: String,
        fingerprints: Vec<Fingerprint>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    SourceMissing,
    InvalidSpec,
}

impl ProblemKind {
    pub fn reason(self) -> &'static str {
        match self {
            ProblemKind::SourceMissing => "SourceMissing",
            ProblemKind::InvalidSpec => "InvalidSpec",
        }
    }
}

/// A token of the spec that cannot be served as asked; its previous entries (if any) stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub name: String,
    /// Names the Secret and key and what is wrong; never the value.
    pub detail: String,
}

/// The result: the new record, the client Secret's plaintexts, and what happened.
#[derive(Debug)]
pub struct Plan {
    pub record: Record,
    pub client_values: BTreeMap<String, TokenValue>,
    pub notes: Vec<Note>,
    pub problems: Vec<Problem>,
    /// When the plan changes by itself next (rotation, end of grace, expiry).
    pub next_wake: Option<DateTime<Utc>>,
    /// The earliest scheduled rotation.
    pub next_rotation: Option<DateTime<Utc>>,
}

impl Plan {
    pub fn rotations(&self) -> impl Iterator<Item = Cause> + '_ {
        self.notes.iter().filter_map(|n| match n {
            Note::Rotated { cause, .. } => Some(*cause),
            _ => None,
        })
    }
}

/// Makes a new token of `bytes` random bytes.
pub type Generator<'g> = &'g mut dyn FnMut(usize) -> Result<TokenValue, GenerateError>;

struct Timing {
    every: Option<chrono::Duration>,
    grace: chrono::Duration,
}

fn timing(spec: &Vx11TokenSetSpec) -> Result<Timing> {
    let rotation = spec.rotation.as_ref();
    let every = rotation
        .and_then(|r| r.every.as_deref())
        .map(parse_chrono)
        .transpose()
        .map_err(Error::InvalidSpec)?;
    let grace = parse_chrono(rotation.map_or(DEFAULT_GRACE_PERIOD, |r| r.grace_period.as_str()))
        .map_err(Error::InvalidSpec)?;
    Ok(Timing { every, grace })
}

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Computes the desired state. See the crate README for the rules.
pub fn plan(input: &Input<'_>, generate: Generator<'_>) -> Result<Plan> {
    let now = input.now;
    let timing = timing(input.spec)?;
    let previous = input.observed.record.clone().unwrap_or_default();
    let requested = input
        .rotate_request
        .is_some_and(|r| previous.rotate_handled.as_deref() != Some(r));

    let mut out = Plan {
        record: Record::default(),
        client_values: BTreeMap::new(),
        notes: Vec::new(),
        problems: Vec::new(),
        next_wake: None,
        next_rotation: None,
    };
    let mut tokens = Vec::new();

    for spec in &input.spec.tokens {
        let name = spec.name.as_str();
        let entries: Vec<&TokenEntry> = previous.tokens.iter().filter(|e| e.name == name).collect();

        if spec.expires_at.is_some_and(|at| at <= now) {
            if !entries.is_empty() {
                out.notes.push(Note::Expired {
                    name: name.to_owned(),
                    fingerprints: entries.iter().map(|e| e.sha256.fingerprint()).collect(),
                });
            }
            continue;
        }

        let mut active: Vec<TokenEntry> = Vec::new();
        let mut retiring: Vec<TokenEntry> = entries
            .iter()
            .filter(|e| e.state == TokenState::Retiring)
            .map(|e| (*e).clone())
            .collect();
        // The newest active entry is the current value; any other active one (not written by
        // this controller) is retired like a replaced value.
        let mut actives: Vec<&TokenEntry> = entries
            .iter()
            .copied()
            .filter(|e| e.state == TokenState::Active)
            .collect();
        actives.sort_by_key(|e| std::cmp::Reverse(e.not_before));
        let current = actives.first().copied();
        for extra in actives.iter().skip(1) {
            retiring.push(retire(extra, now, timing.grace));
        }

        let mut replace = |new: TokenValue, cause: Option<Cause>, out: &mut Plan| {
            let entry = TokenEntry {
                name: name.to_owned(),
                sha256: new.digest(),
                state: TokenState::Active,
                not_before: Some(now),
                expires_at: spec.expires_at,
            };
            match (current, cause) {
                (Some(old), Some(cause)) => {
                    retiring.push(retire(old, now, timing.grace));
                    out.notes.push(Note::Rotated {
                        name: name.to_owned(),
                        cause,
                        fingerprint: entry.sha256.fingerprint(),
                        previous: old.sha256.fingerprint(),
                    });
                }
                _ => out.notes.push(Note::Issued {
                    name: name.to_owned(),
                    fingerprint: entry.sha256.fingerprint(),
                }),
            }
            active.push(entry);
            new
        };

        if let Some(generate_spec) = spec.generated() {
            let bytes = usize::try_from(generate_spec.bytes).unwrap_or(usize::MAX);
            let stored = input
                .observed
                .client_values
                .get(name)
                .and_then(|v| TokenValue::new(v.clone()).ok());
            let value = match (current, stored) {
                // Both records lost, plaintext still there: adopt it rather than break clients.
                (None, Some(value)) => replace(value, None, &mut out),
                (None, None) => replace(generate(bytes)?, None, &mut out),
                (Some(cur), stored) => {
                    let stored = stored.filter(|v| v.digest() == cur.sha256);
                    let due = timing
                        .every
                        .zip(cur.not_before)
                        .is_some_and(|(every, since)| now >= since + every);
                    match stored {
                        None => replace(generate(bytes)?, Some(Cause::ClientValueLost), &mut out),
                        Some(_) if requested => {
                            replace(generate(bytes)?, Some(Cause::Requested), &mut out)
                        }
                        Some(_) if due => {
                            replace(generate(bytes)?, Some(Cause::Scheduled), &mut out)
                        }
                        Some(value) => {
                            active.push(keep(cur, spec));
                            value
                        }
                    }
                }
            };
            if let (Some(every), Some(since)) =
                (timing.every, active.first().and_then(|a| a.not_before))
            {
                out.next_rotation = min_time(out.next_rotation, Some(since + every));
            }
            out.client_values.insert(name.to_owned(), value);
        } else if let Some(reference) = &spec.secret_ref {
            let problem = |kind, detail: String| Problem {
                kind,
                name: name.to_owned(),
                detail,
            };
            match input.sources.get(name) {
                Some(Source::Value(raw)) => match TokenValue::new(raw.clone()) {
                    Ok(value) => match current {
                        Some(cur) if cur.sha256 == value.digest() => active.push(keep(cur, spec)),
                        _ => {
                            replace(value, Some(Cause::SourceChanged), &mut out);
                        }
                    },
                    Err(invalid) => {
                        out.problems.push(problem(
                            ProblemKind::InvalidSpec,
                            format!(
                                "token {name}: key {} of Secret {}: {invalid}",
                                reference.key, reference.name
                            ),
                        ));
                        active.extend(current.cloned());
                    }
                },
                other => {
                    let detail = match other {
                        Some(Source::KeyMissing { secret, key }) => {
                            format!("token {name}: Secret {secret} has no key {key}")
                        }
                        Some(Source::SecretMissing { secret }) => {
                            format!("token {name}: Secret {secret} not found")
                        }
                        _ => format!("token {name}: Secret {} not found", reference.name),
                    };
                    out.problems
                        .push(problem(ProblemKind::SourceMissing, detail));
                    active.extend(current.cloned());
                }
            }
        }

        // End of grace: retiring values whose time is up are removed.
        retiring.retain(|e| {
            let alive = e.expires_at.is_none_or(|at| at > now);
            if !alive {
                out.notes.push(Note::Retired {
                    name: name.to_owned(),
                    fingerprint: e.sha256.fingerprint(),
                });
            }
            alive
        });
        retiring.sort_by_key(|e| std::cmp::Reverse(e.expires_at));
        for e in active.iter().chain(&retiring) {
            out.next_wake = min_time(out.next_wake, e.expires_at);
        }
        tokens.extend(active);
        tokens.extend(retiring);
    }

    // Tokens no longer in the spec are revoked at once, every value.
    let in_spec: BTreeSet<&str> = input.spec.tokens.iter().map(|t| t.name.as_str()).collect();
    let mut revoked: BTreeMap<&str, Vec<Fingerprint>> = BTreeMap::new();
    for e in previous
        .tokens
        .iter()
        .filter(|e| !in_spec.contains(e.name.as_str()))
    {
        revoked
            .entry(&e.name)
            .or_default()
            .push(e.sha256.fingerprint());
    }
    for (name, fingerprints) in revoked {
        out.notes.push(Note::Revoked {
            name: name.to_owned(),
            fingerprints,
        });
    }

    out.next_wake = min_time(out.next_wake, out.next_rotation);
    let rotated = out.rotations().any(|c| c != Cause::SourceChanged);
    let changed = input.observed.record.is_none() || tokens != previous.tokens;
    out.record = Record {
        generation: if changed {
            previous.generation + 1
        } else {
            previous.generation
        },
        tokens,
        rotate_handled: input
            .rotate_request
            .map(str::to_owned)
            .or(previous.rotate_handled),
        last_rotation: if rotated {
            Some(now)
        } else {
            previous.last_rotation
        },
    };
    Ok(out)
}

fn retire(entry: &TokenEntry, now: DateTime<Utc>, grace: chrono::Duration) -> TokenEntry {
    let end = now + grace;
    TokenEntry {
        state: TokenState::Retiring,
        expires_at: Some(entry.expires_at.map_or(end, |at| at.min(end))),
        ..entry.clone()
    }
}

/// The current entry, with the spec's `expiresAt` applied.
fn keep(entry: &TokenEntry, spec: &TokenSpec) -> TokenEntry {
    TokenEntry {
        expires_at: spec.expires_at,
        ..entry.clone()
    }
}

/// The digest of a value, for callers that hold only the plaintext.
pub fn digest_of(value: &str) -> TokenDigest {
    TokenDigest::of(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{GenerateSpec, RotationSpec, SecretKeyRef};
    use chrono::TimeDelta;

    fn t0() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    fn generated(name: &str) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            generate: Some(GenerateSpec { bytes: 32 }),
            secret_ref: None,
            expires_at: None,
        }
    }

    fn referenced(name: &str, secret: &str) -> TokenSpec {
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

    fn spec(tokens: Vec<TokenSpec>, every: Option<&str>, grace: &str) -> Vx11TokenSetSpec {
        Vx11TokenSetSpec {
            secret_name: "svc".into(),
            client_secret_name: "client".into(),
            tokens,
            rotation: Some(RotationSpec {
                every: every.map(Into::into),
                grace_period: grace.into(),
            }),
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
    struct World {
        spec: Vx11TokenSetSpec,
        observed: Observed,
        sources: BTreeMap<String, Source>,
        rotate: Option<String>,
        generator: Gen,
    }

    impl World {
        fn new(spec: Vx11TokenSetSpec) -> Self {
            Self {
                spec,
                observed: Observed::default(),
                sources: BTreeMap::new(),
                rotate: None,
                generator: Gen(0),
            }
        }

        fn step(&mut self, now: DateTime<Utc>) -> Plan {
            let input = Input {
                spec: &self.spec,
                rotate_request: self.rotate.as_deref(),
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

        fn entries(&self, name: &str) -> Vec<TokenEntry> {
            let record = self.observed.record.as_ref().unwrap();
            record
                .tokens
                .iter()
                .filter(|e| e.name == name)
                .cloned()
                .collect()
        }

        fn generation(&self) -> u64 {
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
        w.sources.insert("ci".into(), Source::Value("short".into()));
        let plan = w.step(t0() + TimeDelta::seconds(4));
        assert_eq!(plan.problems[0].kind, ProblemKind::InvalidSpec);
        assert!(plan.problems[0].detail.contains("at least 16"));

        // A new token whose source is invalid from the start is never written.
        w.spec.tokens.push(referenced("bad", "bad-token"));
        w.sources.insert("bad".into(), Source::Value("tiny".into()));
        w.step(t0() + TimeDelta::seconds(5));
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
}
