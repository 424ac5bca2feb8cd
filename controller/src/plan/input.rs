//! Everything a plan depends on: the spec, the state read back from the Secrets, the
//! values of referenced Secrets, the time, and the token generator.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use vx11_tokenset::{GenerateError, TokenValue};

use crate::crd::{DEFAULT_GRACE_PERIOD, Vx11TokenSetSpec};
use crate::duration::parse_chrono;
use crate::state::Observed;
use crate::{Error, Result};

/// A referenced Secret's value for one token, as read.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    Value(String),
    SecretMissing {
        secret: String,
    },
    /// The Secret exists but does not carry the label `vx11.dev/token-source=true`: its data
    /// is not read.
    NotOptedIn {
        secret: String,
    },
    KeyMissing {
        secret: String,
        key: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Value(_) => f.write_str("Value(…)"),
            Source::SecretMissing { secret } => write!(f, "SecretMissing({secret})"),
            Source::NotOptedIn { secret } => write!(f, "NotOptedIn({secret})"),
            Source::KeyMissing { secret, key } => write!(f, "KeyMissing({secret}/{key})"),
        }
    }
}

/// Everything a plan depends on.
#[derive(Debug)]
pub struct Input<'a> {
    pub spec: &'a Vx11TokenSetSpec,
    /// The value of the `vx11.dev/rotate` annotation, if set.
    pub rotate_request: Option<&'a str>,
    /// The values of the `rotate.vx11.dev/<token>` annotations, by token name.
    pub token_rotate_requests: &'a BTreeMap<String, String>,
    /// Which `tokens.json` generation every consumer serves.
    pub acknowledged: Acknowledged,
    pub observed: &'a Observed,
    /// Values of `secretRef` tokens, by token name.
    pub sources: &'a BTreeMap<String, Source>,
    pub now: DateTime<Utc>,
}

/// What the consumers of the set serve, as far as publication cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledged {
    /// No consumer to wait for (none, or staging switched off): publish at once.
    Everyone,
    /// Every consumer serves this generation or a later one (the lowest of them; 0 when
    /// one did not answer).
    UpTo(u64),
}

/// Makes a new token of `bytes` random bytes.
pub type Generator<'g> = &'g mut dyn FnMut(usize) -> Result<TokenValue, GenerateError>;

/// The spec's `rotation`, parsed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub every: Option<chrono::Duration>,
    pub grace: chrono::Duration,
}

impl Timing {
    pub fn of(spec: &Vx11TokenSetSpec) -> Result<Self> {
        let rotation = spec.rotation.as_ref();
        let every = rotation
            .and_then(|r| r.every.as_deref())
            .map(parse_chrono)
            .transpose()
            .map_err(Error::InvalidSpec)?;
        let grace =
            parse_chrono(rotation.map_or(DEFAULT_GRACE_PERIOD, |r| r.grace_period.as_str()))
                .map_err(Error::InvalidSpec)?;
        Ok(Self { every, grace })
    }
}
