//! What the Secrets of a set should hold, from its spec, the state read back from the Secrets,
//! the values of referenced Secrets and the time. Pure: the only effect is the token generator
//! passed in (tests pass a deterministic one), so every rule of rotation, grace, expiry and
//! revocation is unit tested here.
//!
//! [`plan`] applies the rules in this order, one file each: for every token of the spec,
//! [`expiry`], then [`generated`] or [`referenced`] (which keep a value or stage a new one),
//! then [`publication`] (a staged value every consumer serves goes to the clients), then
//! [`grace`] (end of grace); then [`revocation`] for the tokens that left the spec. What
//! they report is in [`outcome`].

mod expiry;
mod generated;
mod grace;
mod input;
mod outcome;
mod publication;
mod referenced;
mod revocation;
mod round;
#[cfg(test)]
mod staging_tests;
#[cfg(test)]
mod tests;

use vx11_tokenset::{TokenDigest, TokenEntry};

pub use input::{Acknowledged, Generator, Input, Source, Timing};
pub use outcome::{Cause, Note, Plan, Problem, ProblemKind, Waiting, min_time};

use crate::Result;
use crate::state::{Record, staged_key};
use round::TokenRound;

/// Computes the desired state. See the crate README for the rules.
pub fn plan(input: &Input<'_>, generate: Generator<'_>) -> Result<Plan> {
    let now = input.now;
    let timing = Timing::of(input.spec)?;
    let previous = input.observed.record.clone().unwrap_or_default();
    let requested_all = input
        .rotate_request
        .is_some_and(|r| previous.rotate_handled.as_deref() != Some(r));
    // A plan that stages a value changes the file: the new generation.
    let next_generation = previous.generation + 1;

    let mut out = Plan {
        record: Record::default(),
        client_values: Default::default(),
        notes: Vec::new(),
        problems: Vec::new(),
        next_wake: None,
        next_rotation: None,
        waiting: Vec::new(),
        propagations: Vec::new(),
        published: Default::default(),
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
        let mut round = TokenRound::new(
            spec,
            &entries,
            previous.staged.get(&spec.name),
            previous.published.get(&spec.name).copied(),
            previous.generation,
            now,
            timing.grace,
        );
        let mut published = None;
        if let Some(generate_spec) = spec.generated() {
            let requested = requested_all
                || input.token_rotate_requests.get(&spec.name)
                    != previous.token_rotate_handled.get(&spec.name)
                    && input.token_rotate_requests.contains_key(&spec.name);
            published = generated::apply(
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
        if let Some(value) =
            publication::apply(&mut round, input.acknowledged, next_generation, &mut out)
        {
            published = Some(value);
        }
        if let Some(value) = published {
            out.client_values.insert(spec.name.clone(), value);
        }
        if let Some(value) = round.staged_value.clone() {
            out.client_values.insert(staged_key(&spec.name), value);
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
            next_generation
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
        token_rotate_handled: {
            let mut handled = previous.token_rotate_handled;
            handled.extend(
                input
                    .token_rotate_requests
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            handled.retain(|name, _| input.spec.tokens.iter().any(|t| &t.name == name));
            handled
        },
        staged: out
            .waiting
            .iter()
            .map(|w| (w.name.clone(), w.stage.clone()))
            .collect(),
        published: out.published.clone(),
    };
    Ok(out)
}

/// The digest of a value, for callers that hold only the plaintext.
pub fn digest_of(value: &str) -> TokenDigest {
    TokenDigest::of(value.as_bytes())
}
