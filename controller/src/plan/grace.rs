//! Rule: the end of grace. A retiring value whose time is up is removed.

use super::outcome::{Note, Plan};
use super::round::TokenRound;

pub fn apply(round: &mut TokenRound<'_>, out: &mut Plan) {
    let name = round.name();
    let now = round.now;
    round.retiring.retain(|e| {
        let alive = e.expires_at.is_none_or(|at| at > now);
        if !alive {
            out.notes.push(Note::Retired {
                name: name.to_owned(),
                fingerprint: e.sha256.fingerprint(),
            });
        }
        alive
    });
}
