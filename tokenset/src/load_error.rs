//! Why a token directory could not be loaded: what [`crate::TokenSource`] and the bounded
//! file reads it uses return.

use std::path::PathBuf;

use crate::file::{FileError, TOKEN_FILE_NAME};
use crate::plain::{PLAIN_FILE_NAME, PlainError};

/// Why a directory could not be loaded. The last good set stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {error}", path = path.display())]
    Io { path: PathBuf, error: String },
    #[error(
        "{path} is {size} bytes, over the limit of {limit}; it was not read (a Secret holds at most 1 MiB: is this the right file?)",
        path = path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error(
        "{path} is a link that leads out of {dir}; only links within the token directory are followed (kubelet's `..data` layout), so it was not read",
        path = path.display(),
        dir = dir.display()
    )]
    OutsideDir { path: PathBuf, dir: PathBuf },
    #[error(
        "{path} is {kind}, not a regular file; it was not read (write the tokens into a regular file)",
        path = path.display()
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} {error}", path = path.display())]
    TokenFile { path: PathBuf, error: FileError },
    #[error("{path}: {error}", path = path.display())]
    PlainList { path: PathBuf, error: PlainError },
    #[error(
        "{dir} no longer holds {TOKEN_FILE_NAME} or {PLAIN_FILE_NAME}; keeping the last good set until it does",
        dir = dir.display()
    )]
    SourceGone { dir: PathBuf },
}
