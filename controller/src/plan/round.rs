//! One token of the spec while the rules run over it: its current value, what stays
//! active, what is staged, what is retiring, and the ways a rule changes them (keep, replace,
//! stage, publish).

use chrono::{DateTime, Utc};
use vx11_tokenset::{TokenEntry, TokenState, TokenValue};

use crate::crd::TokenSpec;
use crate::state::Stage;

use super::outcome::{Cause, Note, Plan, Waiting, min_time};

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
    /// The value staged and not published yet (state `staged`), with why and since when.
    pub staged: Option<(TokenEntry, Stage)>,
    /// A generated token's staged plaintext, for the client Secret's staged key.
    pub staged_value: Option<TokenValue>,
    /// When the current value was published after a stage (see `Record::published`).
    pub published_at: Option<DateTime<Utc>>,
    /// The generation of the file this plan writes if it changes it: the generation of a
    /// value staged now.
    next_generation: u64,
}

impl<'a> TokenRound<'a> {
    /// `entries`: the token's entries in the previous record. The newest active one is the
    /// current value; any other active one (not written by this controller) is retired
    /// like a replaced value. The newest staged one continues its stage (`stage`: what the
    /// record says of it; a record read from `tokens.json` alone says nothing, and it then
    /// waits for the record's generation); older staged ones were never published and go.
    pub fn new(
        spec: &'a TokenSpec,
        entries: &[&'a TokenEntry],
        stage: Option<&Stage>,
        published_at: Option<DateTime<Utc>>,
        generation: u64,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Self {
        let mut retiring: Vec<TokenEntry> = entries
            .iter()
            .filter(|e| e.state == TokenState::Retiring)
            .map(|e| (*e).clone())
            .collect();
        let newest = |state: TokenState| {
            let mut of: Vec<&'a TokenEntry> = entries
                .iter()
                .copied()
                .filter(|e| e.state == state)
                .collect();
            of.sort_by_key(|e| std::cmp::Reverse(e.not_before));
            of
        };
        let actives = newest(TokenState::Active);
        let current = actives.first().copied();
        for extra in actives.iter().skip(1) {
            retiring.push(retire(extra, now, grace));
        }
        let staged = newest(TokenState::Staged).first().map(|e| {
            let stage = stage.cloned().unwrap_or(Stage {
                generation,
                cause: current.map(|_| Cause::Unrecorded),
                since: e.not_before.unwrap_or(now),
            });
            let entry = TokenEntry {
                expires_at: spec.expires_at,
                ..(*e).clone()
            };
            (entry, stage)
        });
        Self {
            spec,
            now,
            grace,
            current,
            active: Vec::new(),
            retiring,
            staged,
            staged_value: None,
            published_at: published_at.filter(|_| current.is_some()),
            next_generation: generation + 1,
        }
    }

    pub fn name(&self) -> &'a str {
        self.spec.name.as_str()
    }

    /// `new` becomes the active value at once: a rotation for `cause` when there was a
    /// current value (which then retires), else an issue. Only for a value the clients
    /// hold already (adopted from the client Secret).
    pub fn replace(&mut self, new: TokenValue, cause: Option<Cause>, out: &mut Plan) -> TokenValue {
        let entry = self.entry(&new, TokenState::Active);
        let previous = self.current;
        if let Some(old) = previous {
            self.retiring.push(retire(old, self.now, self.grace));
        }
        self.note_published(&entry, previous, cause, out);
        self.active.push(entry);
        new
    }

    /// `new` is staged: the services accept it from the next `tokens.json` on, the clients do
    /// not get it yet. A value staged before (never published) is dropped.
    pub fn stage(&mut self, new: TokenValue, cause: Option<Cause>, out: &mut Plan) {
        let entry = self.entry(&new, TokenState::Staged);
        out.notes.push(Note::Staged {
            name: self.name().to_owned(),
            cause,
            fingerprint: entry.sha256.fingerprint(),
            replaces: self.staged.as_ref().map(|(e, _)| e.sha256.fingerprint()),
        });
        self.staged = Some((
            entry,
            Stage {
                generation: self.next_generation,
                cause,
                since: self.now,
            },
        ));
        self.staged_value = Some(new);
    }

    /// Drops the staged value (never published, so no client holds it). Returns why it
    /// was staged.
    pub fn drop_staged(&mut self) -> Option<Option<Cause>> {
        self.staged_value = None;
        self.staged.take().map(|(_, stage)| stage.cause)
    }

    /// The staged value becomes the active one; the value it replaces starts its grace
    /// period now. Returns the published plaintext (generated tokens).
    pub fn publish(&mut self, out: &mut Plan) -> Option<TokenValue> {
        let (mut entry, stage) = self.staged.take()?;
        entry.state = TokenState::Active;
        let previous = self.current;
        for old in std::mem::take(&mut self.active) {
            self.retiring.push(retire(&old, self.now, self.grace));
        }
        self.note_published(&entry, previous, stage.cause, out);
        out.propagations.push(self.now - stage.since);
        self.published_at = Some(self.now);
        self.active.push(entry);
        self.staged_value.take()
    }

    fn entry(&self, value: &TokenValue, state: TokenState) -> TokenEntry {
        TokenEntry {
            name: self.name().to_owned(),
            sha256: value.digest(),
            state,
            not_before: Some(self.now),
            expires_at: self.spec.expires_at,
        }
    }

    fn note_published(
        &self,
        entry: &TokenEntry,
        previous: Option<&TokenEntry>,
        cause: Option<Cause>,
        out: &mut Plan,
    ) {
        let name = self.name().to_owned();
        let fingerprint = entry.sha256.fingerprint();
        out.notes.push(match (previous, cause) {
            (Some(old), Some(cause)) => Note::Rotated {
                name,
                cause,
                fingerprint,
                previous: old.sha256.fingerprint(),
            },
            _ => Note::Issued { name, fingerprint },
        });
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

    /// Where the schedule of the value being served (or of the staged one, which will be)
    /// starts: its issue, or its publication if that was later.
    pub fn schedule_start(&self) -> Option<DateTime<Utc>> {
        match &self.staged {
            Some((staged, _)) => staged.not_before,
            None => {
                let issued = self.active.first().and_then(|a| a.not_before);
                issued.max(self.published_at)
            }
        }
    }

    /// Whether a value waits for publication.
    pub fn is_staged(&self) -> bool {
        self.staged.is_some()
    }

    /// The token's entries for the record (active first, then staged, then retiring, latest
    /// end first), its stage if one waits, and the earliest time one of them ends.
    pub fn finish(mut self, out: &mut Plan, tokens: &mut Vec<TokenEntry>) {
        self.retiring
            .sort_by_key(|e| std::cmp::Reverse(e.expires_at));
        let staged = self.staged.take();
        for e in self
            .active
            .iter()
            .chain(staged.as_ref().map(|(e, _)| e))
            .chain(&self.retiring)
        {
            out.next_wake = min_time(out.next_wake, e.expires_at);
        }
        if let (Some(at), false) = (self.published_at, self.active.is_empty()) {
            out.published.insert(self.spec.name.clone(), at);
        }
        tokens.extend(self.active);
        if let Some((entry, stage)) = staged {
            out.waiting.push(Waiting {
                name: entry.name.clone(),
                fingerprint: entry.sha256.fingerprint(),
                stage,
            });
            tokens.push(entry);
        }
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
