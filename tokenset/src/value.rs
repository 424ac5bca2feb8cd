//! A token's plaintext value: validated, generated, zeroized, never printed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::digest::{Fingerprint, TokenDigest};

/// Shortest accepted token, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest accepted token, in bytes.
pub const MAX_TOKEN_LEN: usize = 512;
/// Prefix of generated tokens, so that secret scanners can find leaks.
pub const GENERATED_PREFIX: &str = "vx11_";
/// Random bytes in a generated token unless the spec asks for more.
pub const DEFAULT_GENERATED_BYTES: usize = 32;

/// A plaintext token. `Debug` and `Display` show only its fingerprint and the memory is
/// wiped on drop; [`TokenValue::expose`] is the one way to read it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TokenValue(String);

impl TokenValue {
    /// Accepts a token of 16–512 printable ASCII characters without spaces.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidToken> {
        let value = Self(value.into());
        validate(value.expose())?;
        Ok(value)
    }

    /// `vx11_` + URL-safe base64 (no padding) of `random_bytes` bytes from the OS CSPRNG.
    pub fn generate(random_bytes: usize) -> Result<Self, GenerateError> {
        if random_bytes < DEFAULT_GENERATED_BYTES {
            return Err(GenerateError::TooFewBytes(random_bytes));
        }
        let mut raw = vec![0u8; random_bytes];
        getrandom::fill(&mut raw).map_err(|e| GenerateError::Rng(e.to_string()))?;
        let mut text = String::with_capacity(GENERATED_PREFIX.len() + random_bytes * 4 / 3 + 4);
        text.push_str(GENERATED_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut text);
        raw.zeroize();
        Self::new(text).map_err(|_| GenerateError::TooManyBytes(random_bytes))
    }

    /// The plaintext. Call sites are the few places a value must leave the process:
    /// the client Secret, and tests.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.0.as_bytes())
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.digest().fingerprint()
    }
}

impl fmt::Debug for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenValue({})", self.fingerprint())
    }
}

impl fmt::Display for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fingerprint(), f)
    }
}

impl PartialEq for TokenValue {
    fn eq(&self, other: &Self) -> bool {
        self.digest().ct_eq(&other.digest())
    }
}

impl Eq for TokenValue {}

/// Checks the token rules without keeping or echoing the value.
pub fn validate(value: &str) -> Result<(), InvalidToken> {
    let len = value.len();
    if len < MIN_TOKEN_LEN {
        return Err(InvalidToken::TooShort { len });
    }
    if len > MAX_TOKEN_LEN {
        return Err(InvalidToken::TooLong { len });
    }
    if let Some(position) = value.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(InvalidToken::BadCharacter { position });
    }
    Ok(())
}

/// Why a value is not a token. Says where, never what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("token is {len} bytes; tokens are at least {MIN_TOKEN_LEN} bytes")]
    TooShort { len: usize },
    #[error("token is {len} bytes; tokens are at most {MAX_TOKEN_LEN} bytes")]
    TooLong { len: usize },
    #[error(
        "token has a space, control or non-ASCII character at byte {position}; tokens are printable ASCII without spaces"
    )]
    BadCharacter { position: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("generated tokens need at least {DEFAULT_GENERATED_BYTES} random bytes, {0} asked")]
    TooFewBytes(usize),
    #[error("{0} random bytes make a token longer than {MAX_TOKEN_LEN} bytes")]
    TooManyBytes(usize),
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_prefix_length_and_alphabet() {
        let t = TokenValue::generate(32).unwrap();
        let v = t.expose();
        assert!(v.starts_with("vx11_"));
        assert_eq!(v.len(), 5 + 43);
        assert!(
            v[5..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(TokenValue::generate(32).unwrap(), t);
    }

    #[test]
    fn generation_limits() {
        assert_eq!(
            TokenValue::generate(16).unwrap_err(),
            GenerateError::TooFewBytes(16)
        );
        assert!(TokenValue::generate(378).is_ok());
        assert_eq!(
            TokenValue::generate(400).unwrap_err(),
            GenerateError::TooManyBytes(400)
        );
    }

    #[test]
    fn validation() {
        assert_eq!(
            TokenValue::new("short").unwrap_err(),
            InvalidToken::TooShort { len: 5 }
        );
        assert_eq!(
            TokenValue::new("x".repeat(513)).unwrap_err(),
            InvalidToken::TooLong { len: 513 }
        );
        assert_eq!(
            TokenValue::new("has a space inside it").unwrap_err(),
            InvalidToken::BadCharacter { position: 3 }
        );
        assert!(TokenValue::new("vx11-operator-test-token").is_ok());
    }

    #[test]
    fn debug_and_display_show_only_the_fingerprint() {
        let t = TokenValue::new("vx11-operator-test-token").unwrap();
        let fp = t.fingerprint().to_string();
        assert_eq!(format!("{t}"), fp);
        assert_eq!(format!("{t:?}"), format!("TokenValue({fp})"));
        assert!(!format!("{t:?}{t}{t:#?}").contains("operator-test"));
    }
}
