//! One token of the spec while the rules run over it: its current value, what stays
//! active, what is retiring, and the two ways a rule changes them (keep or replace).

use chrono::{DateTime, Utc};
use vx11_tokenset::{TokenEntry, TokenState, TokenValue};

use crate::crd::TokenSpec;

use super::outcome::{Cause, Note, Plan, min_time};

/// A token's entries on their way from the previous record to the next.
#[derive(Debug)]
pub struct TokenRound<'a> {
    pub spec: &'a TokenSpec,
    pub now: DateTime<Utc>,
    grace: chrono::Duration,
    /// The newest active entry of the previous record: the value being served.
    pub current: Option<&'a TokenEntry>,
    pub active: Vec<TokenEntry>,
    pub retiring: Vec<TokenEntry>,
}

impl<'a> TokenRound<'a> {
    /// `entries`: the token's entries in the previous record. The newest active one is the
    /// current value; any other active one (not written by this controller) is retired
    /// like a replaced value.
    pub fn new(
        spec: &'a TokenSpec,
        entries: &[&'a TokenEntry],
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Self {
        let mut retiring: Vec<TokenEntry> = entries
            .iter()
            .filter(|e| e.state == TokenState::Retiring)
            .map(|e| (*e).clone())
            .collect();
        let mut actives: Vec<&TokenEntry> = entries
            .iter()
            .copied()
            .filter(|e| e.state == TokenState::Active)
            .collect();
        actives.sort_by_key(|e| std::cmp::Reverse(e.not_before));
        let current = actives.first().copied();
        for extra in actives.iter().skip(1) {
            retiring.push(retire(extra, now, grace));
        }
        Self {
            spec,
            now,
            grace,
            current,
            active: Vec::new(),
            retiring,
        }
    }

    pub fn name(&self) -> &'a str {
        self.spec.name.as_str()
    }

    /// `new` becomes the active value: a rotation for `cause` when there was a current
    /// value (which then retires), else an issue.
    pub fn replace(&mut self, new: TokenValue, cause: Option<Cause>, out: &mut Plan) -> TokenValue {
        let name = self.name();
        let entry = TokenEntry {
            name: name.to_owned(),
            sha256: new.digest(),
            state: TokenState::Active,
            not_before: Some(self.now),
            expires_at: self.spec.expires_at,
        };
        match (self.current, cause) {
            (Some(old), Some(cause)) => {
                self.retiring.push(retire(old, self.now, self.grace));
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
        self.active.push(entry);
        new
    }

    /// The current entry stays active, with the spec's `expiresAt` applied.
    pub fn keep(&mut self, current: &TokenEntry) {
        self.active.push(TokenEntry {
            expires_at: self.spec.expires_at,
            ..current.clone()
        });
    }

    /// The current entry (if any) stays exactly as it was: the spec cannot be served.
    pub fn keep_as_it_was(&mut self) {
        self.active.extend(self.current.cloned());
    }

    /// The token's entries for the record (active first, then retiring, latest end first),
    /// and the earliest time one of them ends.
    pub fn finish(mut self, out: &mut Plan, tokens: &mut Vec<TokenEntry>) {
        self.retiring
            .sort_by_key(|e| std::cmp::Reverse(e.expires_at));
        for e in self.active.iter().chain(&self.retiring) {
            out.next_wake = min_time(out.next_wake, e.expires_at);
        }
        tokens.extend(self.active);
        tokens.extend(self.retiring);
    }
}

/// `entry` as a retiring value whose grace ends `grace` from `now` (or at its own end, if
/// that comes first).
fn retire(entry: &TokenEntry, now: DateTime<Utc>, grace: chrono::Duration) -> TokenEntry {
    let end = now + grace;
    TokenEntry {
        state: TokenState::Retiring,
        expires_at: Some(entry.expires_at.map_or(end, |at| at.min(end))),
        ..entry.clone()
    }
}
