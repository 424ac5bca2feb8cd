//! Rule: a referenced token (`secretRef`). The value in the user's Secret is served; a new
//! value there rotates it (`source_changed`); a missing or invalid one is a problem, and
//! what was served stays.

use vx11_tokenset::TokenValue;

use crate::crd::SecretKeyRef;

use super::input::{Input, Source};
use super::outcome::{Cause, Plan, Problem, ProblemKind};
use super::round::TokenRound;

pub fn apply(
    round: &mut TokenRound<'_>,
    reference: &SecretKeyRef,
    input: &Input<'_>,
    out: &mut Plan,
) {
    let name = round.name();
    let problem = |kind, detail: String| Problem {
        kind,
        name: name.to_owned(),
        detail,
    };
    match input.sources.get(name) {
        Some(Source::Value(raw)) => match TokenValue::new(raw.clone()) {
            Ok(value) => match round.current {
                Some(cur) if cur.sha256 == value.digest() => round.keep(cur),
                _ => {
                    round.replace(value, Some(Cause::SourceChanged), out);
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
                round.keep_as_it_was();
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
            round.keep_as_it_was();
        }
    }
}
