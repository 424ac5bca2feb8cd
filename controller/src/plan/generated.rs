//! Rule: a generated token (`generate: {bytes}`). A first value, a value whose client
//! plaintext was lost, a requested rotation and a scheduled one (`rotation.every`) each
//! *stage* a new value; while one is staged, further requests and the schedule wait for it
//! (they are folded into it: it replaces the same old value). Otherwise the value is kept.
//! The published plaintext goes to the client Secret under the token's name, the staged one
//! under its staged key; publication itself is [`super::publication`].

use vx11_tokenset::TokenValue;

use crate::Result;
use crate::crd::GenerateSpec;
use crate::state::staged_key;

use super::input::{Generator, Input, Timing};
use super::outcome::{Cause, Plan, min_time};
use super::round::TokenRound;

/// `requested`: a rotate annotation (the set's or the token's) not handled yet. Returns the
/// published plaintext, if the clients have one.
pub fn apply(
    round: &mut TokenRound<'_>,
    generate_spec: &GenerateSpec,
    input: &Input<'_>,
    requested: bool,
    timing: Timing,
    generate: Generator<'_>,
    out: &mut Plan,
) -> Result<Option<TokenValue>> {
    let name = round.name();
    let now = round.now;
    let bytes = usize::try_from(generate_spec.bytes).unwrap_or(usize::MAX);
    let stored = |key: &str| {
        input
            .observed
            .client_values
            .get(key)
            .and_then(|v| TokenValue::new(v.clone()).ok())
    };

    // A staged value whose plaintext is gone from the client Secret cannot be published: it
    // is dropped (no client has it) and a new one is staged below.
    let mut restage = None;
    if let Some((entry, _)) = &round.staged {
        match stored(&staged_key(name)).filter(|v| v.digest() == entry.sha256) {
            Some(value) => round.staged_value = Some(value),
            None => restage = round.drop_staged(),
        }
    }

    let published = match round.current {
        Some(cur) => {
            round.keep(cur);
            stored(name).filter(|v| v.digest() == cur.sha256)
        }
        // Both records lost, plaintext still there: adopt it rather than break clients.
        None if round.staged.is_none() => stored(name).map(|value| round.replace(value, None, out)),
        None => None,
    };

    if round.staged.is_none() {
        let due = timing
            .every
            .zip(round.schedule_start())
            .is_some_and(|(every, since)| now >= since + every);
        let cause = match (&published, round.active.is_empty()) {
            _ if restage.is_some() => restage,
            (_, true) => Some(None),
            (None, false) => Some(Some(Cause::ClientValueLost)),
            (Some(_), false) if requested => Some(Some(Cause::Requested)),
            (Some(_), false) if due => Some(Some(Cause::Scheduled)),
            (Some(_), false) => None,
        };
        if let Some(cause) = cause {
            round.stage(generate(bytes)?, cause, out);
        }
    }

    if let (Some(every), Some(since)) = (timing.every, round.schedule_start()) {
        // A schedule that fell due while a value is staged waits for it (no wake-up in the
        // past: that would be a busy loop).
        let next = Some(since + every).filter(|at| !round.is_staged() || *at > now);
        out.next_rotation = min_time(out.next_rotation, next);
    }
    Ok(published)
}
