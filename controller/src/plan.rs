//! What the Secrets of a set should hold, from its spec, the state read back from the Secrets,
//! the values of referenced Secrets and the time. Pure: the only effect is the token generator
//! passed in (tests pass a deterministic one), so every rule of rotation, grace, expiry and
//! revocation is unit tested here.
//!
//! [`plan`] applies the rules in this order, one file each: for every token of the spec,
//! [`expiry`], then [`generated`] or [`referenced`], then [`grace`] (end of grace); then
//! [`revocation`] for the tokens that left the spec. What they report is in [`outcome`].

mod expiry;
mod generated;
mod grace;
mod input;
mod outcome;
mod referenced;
mod revocation;
mod round;
#[cfg(test)]
mod tests;

use vx11_tokenset::{TokenDigest, TokenEntry};

pub use input::{Generator, Input, Source, Timing};
pub use outcome::{Cause, Note, Plan, Problem, ProblemKind, min_time};

use crate::Result;
use crate::state::Record;
use round::TokenRound;

/// Computes the desired state. See the crate README for the rules.
pub fn plan(input: &Input<'_>, generate: Generator<'_>) -> Result<Plan> {
    let now = input.now;
    let timing = Timing::of(input.spec)?;
    let previous = input.observed.record.clone().unwrap_or_default();
    let requested = input
        .rotate_request
        .is_some_and(|r| previous.rotate_handled.as_deref() != Some(r));

    let mut out = Plan {
        record: Record::default(),
        client_values: Default::default(),
        notes: Vec::new(),
        problems: Vec::new(),
        next_wake: None,
        next_rotation: None,
    };
    let mut tokens = Vec::new();

    for spec in &input.spec.tokens {
        let entries: Vec<&TokenEntry> = previous
            .tokens
            .iter()
            .filter(|e| e.name == spec.name)
            .collect();
        if expiry::apply(spec, &entries, now, &mut out) {
            continue;
        }
        let mut round = TokenRound::new(spec, &entries, now, timing.grace);
        if let Some(generate_spec) = spec.generated() {
            generated::apply(
                &mut round,
                generate_spec,
                input,
                requested,
                timing,
                &mut *generate,
                &mut out,
            )?;
        } else if let Some(reference) = &spec.secret_ref {
            referenced::apply(&mut round, reference, input, &mut out);
        }
        grace::apply(&mut round, &mut out);
        round.finish(&mut out, &mut tokens);
    }
    revocation::apply(input.spec, &previous.tokens, &mut out);

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

/// The digest of a value, for callers that hold only the plaintext.
pub fn digest_of(value: &str) -> TokenDigest {
    TokenDigest::of(value.as_bytes())
}
