//! Rule: a generated token (`generate: {bytes}`). Issued when there is none; rotated when
//! its client plaintext was lost, on request, or when `rotation.every` elapsed; otherwise
//! kept. Its plaintext goes to the client Secret.

use vx11_tokenset::TokenValue;

use crate::Result;
use crate::crd::GenerateSpec;

use super::input::{Generator, Input, Timing};
use super::outcome::{Cause, Plan, min_time};
use super::round::TokenRound;

/// `requested`: a `vx11.dev/rotate` value not handled yet.
pub fn apply(
    round: &mut TokenRound<'_>,
    generate_spec: &GenerateSpec,
    input: &Input<'_>,
    requested: bool,
    timing: Timing,
    generate: Generator<'_>,
    out: &mut Plan,
) -> Result<()> {
    let name = round.name();
    let now = round.now;
    let bytes = usize::try_from(generate_spec.bytes).unwrap_or(usize::MAX);
    let stored = input
        .observed
        .client_values
        .get(name)
        .and_then(|v| TokenValue::new(v.clone()).ok());
    let value = match (round.current, stored) {
        // Both records lost, plaintext still there: adopt it rather than break clients.
        (None, Some(value)) => round.replace(value, None, out),
        (None, None) => round.replace(generate(bytes)?, None, out),
        (Some(cur), stored) => {
            let stored = stored.filter(|v| v.digest() == cur.sha256);
            let due = timing
                .every
                .zip(cur.not_before)
                .is_some_and(|(every, since)| now >= since + every);
            match stored {
                None => round.replace(generate(bytes)?, Some(Cause::ClientValueLost), out),
                Some(_) if requested => {
                    round.replace(generate(bytes)?, Some(Cause::Requested), out)
                }
                Some(_) if due => round.replace(generate(bytes)?, Some(Cause::Scheduled), out),
                Some(value) => {
                    round.keep(cur);
                    value
                }
            }
        }
    };
    if let (Some(every), Some(since)) = (
        timing.every,
        round.active.first().and_then(|a| a.not_before),
    ) {
        out.next_rotation = min_time(out.next_rotation, Some(since + every));
    }
    out.client_values.insert(name.to_owned(), value);
    Ok(())
}
