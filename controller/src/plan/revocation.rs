//! Rule: revocation. A token no longer in the spec is revoked at once, every value (no
//! grace).

use std::collections::{BTreeMap, BTreeSet};

use vx11_tokenset::{Fingerprint, TokenEntry};

use crate::crd::Vx11TokenSetSpec;

use super::outcome::{Note, Plan};

/// Notes the tokens of `previous` that `spec` no longer names; they are simply not carried
/// into the new record.
pub fn apply(spec: &Vx11TokenSetSpec, previous: &[TokenEntry], out: &mut Plan) {
    let in_spec: BTreeSet<&str> = spec.tokens.iter().map(|t| t.name.as_str()).collect();
    let mut revoked: BTreeMap<&str, Vec<Fingerprint>> = BTreeMap::new();
    for e in previous
        .iter()
        .filter(|e| !in_spec.contains(e.name.as_str()))
    {
        revoked
            .entry(&e.name)
            .or_default()
            .push(e.sha256.fingerprint());
    }
    for (name, fingerprints) in revoked {
        out.notes.push(Note::Revoked {
            name: name.to_owned(),
            fingerprints,
        });
    }
}
