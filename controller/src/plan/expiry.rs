//! Rule: expiry. A token whose `expiresAt` passed is served no more: every value removed,
//! never issued again (it is not waited on: no grace).

use chrono::{DateTime, Utc};
use vx11_tokenset::TokenEntry;

use crate::crd::TokenSpec;

use super::outcome::{Note, Plan};

/// Whether `spec` has expired at `now`; if so, its `entries` are noted as removed.
pub fn apply(
    spec: &TokenSpec,
    entries: &[&TokenEntry],
    now: DateTime<Utc>,
    out: &mut Plan,
) -> bool {
    if spec.expires_at.is_none_or(|at| at > now) {
        return false;
    }
    if !entries.is_empty() {
        out.notes.push(Note::Expired {
            name: spec.name.clone(),
            fingerprints: entries.iter().map(|e| e.sha256.fingerprint()).collect(),
        });
    }
    true
}
