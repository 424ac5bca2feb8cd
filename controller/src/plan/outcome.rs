//! What a plan reports besides the record: what happened to each token ([`Note`], an
//! event and a log line each, their text here with them), and what could not be served
//! as asked ([`Problem`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use vx11_tokenset::{Fingerprint, TokenValue};

use crate::state::Record;

/// Why a value was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `rotation.every` elapsed.
    Scheduled,
    /// A new `vx11.dev/rotate` annotation value.
    Requested,
    /// The client Secret lost the plaintext of the active digest (deleted or edited).
    ClientValueLost,
    /// The referenced Secret holds a new value.
    SourceChanged,
    /// A staged value replaced the old one, and the record that said why was lost (the
    /// Secrets' annotations removed by a person).
    Unrecorded,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Scheduled => "scheduled",
            Cause::Requested => "requested",
            Cause::ClientValueLost => "client_value_lost",
            Cause::SourceChanged => "source_changed",
            Cause::Unrecorded => "unrecorded",
        }
    }
}

/// Something that happened to a token, for an event and a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A new value's digest was added to `tokens.json`; it is published to the clients once
    /// every consumer serves that generation.
    Staged {
        name: String,
        /// `None`: the token's first value.
        cause: Option<Cause>,
        fingerprint: Fingerprint,
        /// A staged value this one replaces (never published).
        replaces: Option<Fingerprint>,
    },
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

impl Note {
    /// The event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Note::Staged { .. } => "Staged",
            Note::Issued { .. } => "Issued",
            Note::Rotated { .. } => "Rotated",
            Note::Retired { .. } => "Retired",
            Note::Revoked { .. } => "Revoked",
            Note::Expired { .. } => "Expired",
        }
    }

    /// The event's message: names and fingerprints, never a value.
    pub fn message(&self) -> String {
        match self {
            Note::Staged {
                name,
                cause,
                fingerprint,
                replaces,
            } => format!(
                "token {name}: {fingerprint} staged ({}){}; published once every consumer serves it",
                cause.map_or("first value", Cause::as_str),
                replaces.map_or(String::new(), |r| format!(", replacing staged {r}"))
            ),
            Note::Issued { name, fingerprint } => format!("token {name}: {fingerprint} issued"),
            Note::Rotated {
                name,
                cause,
                fingerprint,
                previous,
            } => format!(
                "token {name} rotated ({}): {fingerprint} is active, {previous} retiring",
                cause.as_str()
            ),
            Note::Retired { name, fingerprint } => {
                format!("token {name}: {fingerprint} removed at the end of its grace period")
            }
            Note::Revoked { name, fingerprints } => {
                format!(
                    "token {name} removed from the spec: {} revoked",
                    list(fingerprints)
                )
            }
            Note::Expired { name, fingerprints } => {
                format!(
                    "token {name} reached its expiresAt: {} removed",
                    list(fingerprints)
                )
            }
        }
    }

    /// The log line, for the set named `set`.
    pub fn log(&self, set: &str) {
        match self {
            Note::Staged {
                name,
                cause,
                fingerprint,
                replaces,
            } => {
                let cause = cause.map_or("first_value", Cause::as_str);
                let replaces = replaces.map(|r| r.to_string()).unwrap_or_default();
                tracing::info!(tokenset = %set, token = %name, cause, %fingerprint, replaces, "value staged");
            }
            Note::Issued { name, fingerprint } => {
                tracing::info!(tokenset = %set, token = %name, %fingerprint, "token issued");
            }
            Note::Rotated {
                name,
                cause,
                fingerprint,
                previous,
            } => {
                tracing::info!(tokenset = %set, token = %name, cause = cause.as_str(), %fingerprint, %previous, "token rotated");
            }
            Note::Retired { name, fingerprint } => {
                tracing::info!(tokenset = %set, token = %name, %fingerprint, "grace period over: value removed");
            }
            Note::Revoked { name, fingerprints } => {
                tracing::info!(tokenset = %set, token = %name, fingerprints = %list(fingerprints), "token revoked");
            }
            Note::Expired { name, fingerprints } => {
                tracing::info!(tokenset = %set, token = %name, fingerprints = %list(fingerprints), "token expired");
            }
        }
    }
}

fn list(fingerprints: &[Fingerprint]) -> String {
    fingerprints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    SourceMissing,
    /// The referenced Secret lacks the label `vx11.dev/token-source=true`.
    SourceNotOptedIn,
    InvalidSpec,
}

impl ProblemKind {
    /// The Warning event's reason and the `Ready` condition's.
    pub fn reason(self) -> &'static str {
        match self {
            ProblemKind::SourceMissing => "SourceMissing",
            ProblemKind::SourceNotOptedIn => "SourceNotOptedIn",
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

impl Problem {
    /// The log line, for the set named `set` (the event's message is `detail`).
    pub fn log(&self, set: &str) {
        tracing::warn!(tokenset = %set, token = %self.name, reason = self.kind.reason(), detail = %self.detail, "token not served as specified");
    }
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
    /// The values still staged after this plan, waiting for the consumers.
    pub waiting: Vec<Waiting>,
    /// For each value published by this plan: how long it was staged.
    pub propagations: Vec<chrono::Duration>,
    /// When each token's current value was published after a stage (for the record).
    pub published: BTreeMap<String, DateTime<Utc>>,
}

/// A staged value that waits for the consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub stage: crate::state::Stage,
}

impl Plan {
    pub fn rotations(&self) -> impl Iterator<Item = Cause> + '_ {
        self.notes.iter().filter_map(|n| match n {
            Note::Rotated { cause, .. } => Some(*cause),
            _ => None,
        })
    }
}

/// The earlier of two optional times.
pub fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
