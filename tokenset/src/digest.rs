//! SHA-256 digests of tokens and their short, loggable fingerprints.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a token. Services hold only digests, never values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Hashes a presented or generated token.
    pub fn of(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex_digits: &str) -> Result<Self, InvalidDigest> {
        if hex_digits.len() != 64 {
            return Err(InvalidDigest {
                len: hex_digits.len(),
            });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| InvalidDigest { len: 64 })?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let mut short = [0u8; 6];
        short.copy_from_slice(&self.0[..6]);
        Fingerprint(short)
    }

    /// Compares all 32 bytes whatever they hold.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({})", self.fingerprint())
    }
}

impl Serialize for TokenDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        // The message never repeats the input: a plaintext token pasted here by mistake
        // must not reach a log line.
        TokenDigest::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// The field held something other than 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`sha256` must be 64 hex digits, the SHA-256 of the token and never the token itself (got {len} characters, or non-hex ones)"
)]
pub struct InvalidDigest {
    len: usize,
}

/// `sha256:` and the first 12 hex digits of a digest: names a token in logs, events,
/// metrics and status without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 6]);

/// The length of a [`Fingerprint`]'s text.
pub const FINGERPRINT_TEXT_LEN: usize = 19;

impl Fingerprint {
    /// The text (`sha256:` and 12 hex digits), without allocating: an access line writes
    /// it for every request.
    pub fn to_text(&self) -> [u8; FINGERPRINT_TEXT_LEN] {
        let mut text = *b"sha256:000000000000";
        // Six bytes are exactly the twelve digits' room: this cannot fail.
        let _ = hex::encode_to_slice(self.0, &mut text[7..]);
        text
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_text();
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        let d = TokenDigest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.fingerprint().to_string(), "sha256:ba7816bf8f01");
    }

    #[test]
    fn hex_round_trip_and_case() {
        let d = TokenDigest::of(b"abc");
        assert_eq!(TokenDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert_eq!(
            TokenDigest::from_hex(&d.to_hex().to_uppercase()).unwrap(),
            d
        );
    }

    #[test]
    fn bad_hex_is_refused_without_echo() {
        let err = TokenDigest::from_hex("not-a-digest-but-a-secret-value").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        let err = TokenDigest::from_hex(&"zz".repeat(32)).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"));
    }
}
