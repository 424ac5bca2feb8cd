//! Rule: publication. A staged value is published (it becomes the active value, the client
//! Secret gets its plaintext, the value it replaces starts its grace period) once every
//! consumer serves a `tokens.json` that holds it. With no consumers, or staging switched
//! off, that is at once, in the plan that staged it (and no `Staged` note is left).

use vx11_tokenset::TokenValue;

use super::input::Acknowledged;
use super::outcome::{Note, Plan};
use super::round::TokenRound;

/// `generation`: what the new record's generation will be if this plan changes the file
/// (the generation of a value staged by this plan; a stage read back from the Secrets has an
/// earlier one). Returns the published plaintext.
pub fn apply(
    round: &mut TokenRound<'_>,
    acknowledged: Acknowledged,
    generation: u64,
    out: &mut Plan,
) -> Option<TokenValue> {
    let (_, stage) = round.staged.as_ref()?;
    // Staged by this plan: no file holds it yet.
    let new = stage.generation == generation;
    let ready = match acknowledged {
        Acknowledged::Everyone => true,
        // Nobody can serve a file not written yet.
        Acknowledged::UpTo(_) if new => false,
        Acknowledged::UpTo(served) => served >= stage.generation,
    };
    if !ready {
        return None;
    }
    if new {
        let name = round.name();
        out.notes
            .retain(|n| !matches!(n, Note::Staged { name: staged, .. } if staged == name));
    }
    round.publish(out)
}
