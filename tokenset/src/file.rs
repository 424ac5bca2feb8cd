//! The token file, `tokens.json`, version 1: written by the controller into the service
//! Secret, read by the gateway and the operator backend.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::TokenDigest;
use crate::json_error::JsonProblem;

/// The file name (and Secret key) of the token file.
pub const TOKEN_FILE_NAME: &str = "tokens.json";
/// The only format version this build reads and writes.
pub const TOKEN_FILE_VERSION: u32 = 1;

/// The whole token file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenFile {
    pub version: u32,
    /// Grows by one with every change of content; services report the generation they serve.
    pub generation: u64,
    pub tokens: Vec<TokenEntry>,
}

/// One accepted digest. A name may have several entries (the active value and the
/// values that are retiring).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: TokenDigest,
    pub state: TokenState,
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenState {
    /// The current value of its name.
    Active,
    /// A replaced value, accepted until its `expiresAt` (the grace period).
    Retiring,
    /// A new value that the services accept already and the clients do not have yet: the
    /// controller publishes it once every consumer serves this file (staged rotation).
    Staged,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Retiring => "retiring",
            TokenState::Staged => "staged",
        }
    }
}

impl TokenFile {
    pub fn new(generation: u64, tokens: Vec<TokenEntry>) -> Self {
        Self {
            version: TOKEN_FILE_VERSION,
            generation,
            tokens,
        }
    }

    /// Parses and checks a token file. Errors say where and what kind of problem, and
    /// never repeat the file's content.
    pub fn parse(bytes: &[u8]) -> Result<Self, FileError> {
        // The version is read first so that a newer file says "unsupported version"
        // rather than failing on a field this build does not know.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<serde_json::Value>,
        }
        let head: VersionOnly = serde_json::from_slice(bytes).map_err(FileError::json)?;
        match head.version {
            None => return Err(FileError::MissingVersion),
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(TOKEN_FILE_VERSION.into()) => {
            }
            Some(other) => {
                return Err(FileError::UnsupportedVersion {
                    found: version_label(&other),
                });
            }
        }
        let file: TokenFile = serde_json::from_slice(bytes).map_err(FileError::json)?;
        file.check()?;
        Ok(file)
    }

    /// Pretty JSON, entries in the order given; what the controller writes.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings, numbers and digests cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), FileError> {
        for (index, entry) in self.tokens.iter().enumerate() {
            if entry.name.is_empty() || entry.name.len() > 253 {
                return Err(FileError::InvalidEntry {
                    index,
                    reason: "`name` must be 1 to 253 characters".into(),
                });
            }
            if let (Some(nb), Some(exp)) = (entry.not_before, entry.expires_at)
                && exp < nb
            {
                return Err(FileError::InvalidEntry {
                    index,
                    reason: "`expiresAt` is before `notBefore`".into(),
                });
            }
        }
        Ok(())
    }
}

/// The version as an error may show it: a small number as itself (a long one could be a
/// token pasted in the wrong place), anything else by its kind.
fn version_label(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) if n.as_u64().is_some_and(|v| v < 1000) => n.to_string(),
        serde_json::Value::Number(_) => "a large number".into(),
        serde_json::Value::String(_) => "a string".into(),
        _ => "a non-number".into(),
    }
}

/// Why a token file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("not valid JSON ({kind}) at line {line} column {column}: {detail}")]
    Json {
        kind: &'static str,
        line: usize,
        column: usize,
        /// What is wrong, in generic words: never a fragment of the file.
        detail: String,
    },
    #[error("has no `version` field; expected {{\"version\": {TOKEN_FILE_VERSION}, ...}}")]
    MissingVersion,
    #[error(
        "has version {found}, this build reads version {TOKEN_FILE_VERSION}; upgrade vx11 or write a version {TOKEN_FILE_VERSION} file"
    )]
    UnsupportedVersion { found: String },
    #[error("token entry {index}: {reason}")]
    InvalidEntry { index: usize, reason: String },
}

impl FileError {
    fn json(error: serde_json::Error) -> Self {
        let problem = JsonProblem::of(&error);
        Self::Json {
            kind: problem.kind,
            line: problem.line,
            column: problem.column,
            detail: problem.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenFile {
        TokenFile::new(
            7,
            vec![
                TokenEntry {
                    name: "operator".into(),
                    sha256: TokenDigest::of(b"vx11_operator_current_value"),
                    state: TokenState::Active,
                    not_before: Some("2026-11-22T10:00:00Z".parse().unwrap()),
                    expires_at: None,
                },
                TokenEntry {
                    name: "operator".into(),
                    sha256: TokenDigest::of(b"vx11_operator_previous_value"),
                    state: TokenState::Retiring,
                    not_before: Some("2026-11-21T10:00:00Z".parse().unwrap()),
                    expires_at: Some("2026-11-22T10:10:00Z".parse().unwrap()),
                },
            ],
        )
    }

    #[test]
    fn round_trip() {
        let file = sample();
        assert_eq!(TokenFile::parse(file.to_json().as_bytes()).unwrap(), file);
    }

    #[test]
    fn reads_the_design_example() {
        let json = r#"{"version":1,"generation":7,"tokens":[
            {"name":"operator","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","state":"active","notBefore":"2026-11-22T10:00:00Z","expiresAt":null},
            {"name":"operator","sha256":"BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD","state":"retiring","notBefore":"2026-11-21T10:00:00Z","expiresAt":"2026-11-22T10:10:00Z"}]}"#;
        let file = TokenFile::parse(json.as_bytes()).unwrap();
        assert_eq!(file.generation, 7);
        assert_eq!(file.tokens[1].state, TokenState::Retiring);
    }

    #[test]
    fn reads_a_staged_value() {
        let json = r#"{"version":1,"generation":8,"tokens":[
            {"name":"operator","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","state":"staged","notBefore":"2026-11-22T10:00:00Z"}]}"#;
        let file = TokenFile::parse(json.as_bytes()).unwrap();
        assert_eq!(file.tokens[0].state, TokenState::Staged);
        assert!(file.to_json().contains(r#""state": "staged""#));
    }

    #[test]
    fn versions() {
        assert_eq!(
            TokenFile::parse(br#"{"generation":1,"tokens":[]}"#).unwrap_err(),
            FileError::MissingVersion
        );
        let err = TokenFile::parse(br#"{"version":2,"future":true}"#).unwrap_err();
        assert_eq!(err, FileError::UnsupportedVersion { found: "2".into() });
        assert!(err.to_string().contains("reads version 1"));
    }

    #[test]
    fn misplaced_plaintext_is_not_echoed() {
        let json = br#"{"version":1,"generation":1,"tokens":[{"name":"x","sha256":"vx11_plaintext_pasted_here_by_mistake","state":"active"}]}"#;
        let err = TokenFile::parse(json).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("plaintext_pasted"), "{shown}");
        let json = br#"{"version":1,"generation":"vx11_plaintext_pasted_here","tokens":[]}"#;
        let err = TokenFile::parse(json).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("plaintext_pasted"), "{shown}");
        assert!(shown.contains("wrong field or value"), "{shown}");
    }

    #[test]
    fn no_error_repeats_the_file() {
        let pasted = "vx11_plaintext_pasted_here_by_mistake";
        for json in [
            // serde: "unknown variant `…`"
            format!(
                r#"{{"version":1,"generation":1,"tokens":[{{"name":"x","sha256":"{}","state":"{pasted}"}}]}}"#,
                "ab".repeat(32)
            ),
            // serde: "unknown field `…`"
            format!(r#"{{"version":1,"generation":1,"tokens":[],"{pasted}":1}}"#),
            format!(r#"{{"version":1,"generation":1,"tokens":[{{"{pasted}":1}}]}}"#),
            // serde: "invalid type: integer `…`"
            r#"{"version":1,"generation":1,"tokens":[{"name":1234567890123456789}]}"#.into(),
            format!(
                r#"{{"version":1,"generation":1,"tokens":[{{"name":"x","sha256":"{}","state":"active","notBefore":"{pasted}"}}]}}"#,
                "ab".repeat(32)
            ),
            format!(r#"{{"version":1,"generation":1,"tokens":[{pasted}]}}"#),
        ] {
            let err = TokenFile::parse(json.as_bytes()).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("plaintext_pasted") && !shown.contains("1234567890123456789"),
                "{shown}"
            );
            assert!(shown.contains("line 1 column"), "{shown}");
        }
        let err =
            TokenFile::parse(br#"{"version":1234567890123456789,"generation":1,"tokens":[]}"#)
                .unwrap_err();
        assert!(!err.to_string().contains("1234567890123456789"), "{err}");
        let err = TokenFile::parse(
            format!(
                r#"{{"version":1,"generation":1,"tokens":[{{"name":"x","sha256":"{}","state":"{pasted}"}}]}}"#,
                "ab".repeat(32)
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected one of `active`, `retiring`, `staged`"),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_garbage() {
        let full = sample().to_json();
        let err = TokenFile::parse(&full.as_bytes()[..full.len() / 2]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = TokenFile::parse(b"\x00\xffgarbage").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn expiry_before_start_is_refused() {
        let mut file = sample();
        file.tokens[0].expires_at = Some("2020-01-01T00:00:00Z".parse().unwrap());
        let err = TokenFile::parse(file.to_json().as_bytes()).unwrap_err();
        assert!(matches!(err, FileError::InvalidEntry { index: 0, .. }));
    }
}
