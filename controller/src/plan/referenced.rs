//! Rule: a referenced token (`secretRef`). The value in the user's Secret is served; a new
//! value there is staged (`source_changed`) and replaces the old one once published (the
//! user's Secret is theirs: clients that read it directly see the new value at once). A
//! value that goes back to the served one drops the staged one. A missing, not opted-in
//! (label `vx11.dev/token-source=true`) or invalid value is a problem, and what was served
//! (and staged) stays. A problem's text says only *that* a value is invalid: never its
//! length, the position of a bad character or any part of it.

use vx11_tokenset::{MAX_TOKEN_LEN, MIN_TOKEN_LEN, TokenValue};

use crate::crd::SecretKeyRef;
use crate::state::{TOKEN_SOURCE_LABEL, TOKEN_SOURCE_VALUE};

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
            Ok(value) => {
                if let Some(cur) = round.current {
                    round.keep(cur);
                }
                let served = round.current.is_some_and(|c| c.sha256 == value.digest());
                let staged = round
                    .staged
                    .as_ref()
                    .is_some_and(|(e, _)| e.sha256 == value.digest());
                if served {
                    round.drop_staged();
                } else if !staged {
                    let cause = round.current.map(|_| Cause::SourceChanged);
                    round.stage(value, cause, out);
                    // The user's Secret holds the plaintext; the client Secret does not.
                    round.staged_value = None;
                }
            }
            // `_`: the reason (length, position of a bad character) describes the value.
            Err(_) => {
                out.problems.push(problem(
                    ProblemKind::InvalidSpec,
                    format!(
                        "token {name}: key {} of Secret {} does not hold a valid token \
                         ({MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} printable ASCII characters, no spaces)",
                        reference.key, reference.name
                    ),
                ));
                round.keep_as_it_was();
            }
        },
        Some(Source::NotOptedIn { secret }) => {
            out.problems.push(problem(
                ProblemKind::SourceNotOptedIn,
                format!(
                    "token {name}: Secret {secret} does not carry the label \
                     {TOKEN_SOURCE_LABEL}={TOKEN_SOURCE_VALUE}, so it is not used as a token \
                     source; label it: kubectl label secret {secret} \
                     {TOKEN_SOURCE_LABEL}={TOKEN_SOURCE_VALUE}"
                ),
            ));
            round.keep_as_it_was();
        }
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
