//! Reading the token directory: `tokens.json`, the plain `tokens` list, and the legacy
//! environment variables, into one [`TokenSet`].

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::file::{TOKEN_FILE_NAME, TokenFile};
use crate::legacy::LegacyTokens;
use crate::load_error::LoadError;
use crate::open::read_in_dir;
use crate::plain::{PLAIN_FILE_NAME, parse_plain};
use crate::set::TokenSet;

/// Files larger than this are refused without being read. A Kubernetes Secret holds at
/// most 1 MiB, so this leaves room for hand-made directories and nothing more.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Where a service's tokens come from.
#[derive(Debug, Clone)]
pub struct TokenSource {
    pub dir: PathBuf,
    pub legacy: LegacyTokens,
    pub max_file_bytes: u64,
}

/// The raw bytes read in one pass, before parsing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RawTokens {
    pub token_file: Option<Vec<u8>>,
    pub plain_list: Option<Vec<u8>>,
}

impl RawTokens {
    pub fn has_files(&self) -> bool {
        self.token_file.is_some() || self.plain_list.is_some()
    }

    /// A digest of what was read, to tell a real change from a rewrite of the same bytes.
    pub fn content_key(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [&self.token_file, &self.plain_list] {
            match part {
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                None => hasher.update([0]),
            }
        }
        hasher.finalize().into()
    }
}

/// A parsed directory.
#[derive(Debug)]
pub struct Parsed {
    pub set: TokenSet,
    /// The token file's generation; `None` without a token file.
    pub generation: Option<u64>,
    /// How many plaintext tokens the plain list held (a warning is due when non-zero).
    pub plaintext_count: usize,
}

impl TokenSource {
    pub fn new(dir: impl Into<PathBuf>, legacy: LegacyTokens) -> Self {
        Self {
            dir: dir.into(),
            legacy,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }

    /// Reads both files; a file that does not exist is `None`, anything else that stops a
    /// read is an error: a link that leads out of the directory, something other than a
    /// regular file (a FIFO, a device), a file over `max_file_bytes`.
    pub fn read(&self) -> Result<RawTokens, LoadError> {
        Ok(RawTokens {
            token_file: read_in_dir(&self.dir, TOKEN_FILE_NAME, self.max_file_bytes)?,
            plain_list: read_in_dir(&self.dir, PLAIN_FILE_NAME, self.max_file_bytes)?,
        })
    }

    pub fn parse(&self, raw: &RawTokens) -> Result<Parsed, LoadError> {
        let file = match &raw.token_file {
            Some(bytes) => Some(TokenFile::parse(bytes).map_err(|e| LoadError::TokenFile {
                path: self.dir.join(TOKEN_FILE_NAME),
                error: e,
            })?),
            None => None,
        };
        let plain = match &raw.plain_list {
            Some(bytes) => parse_plain(bytes).map_err(|e| LoadError::PlainList {
                path: self.dir.join(PLAIN_FILE_NAME),
                error: e,
            })?,
            None => Vec::new(),
        };
        Ok(Parsed {
            set: TokenSet::from_sources(file.as_ref(), &plain, &self.legacy),
            generation: file.map(|f| f.generation),
            plaintext_count: plain.len(),
        })
    }
}
