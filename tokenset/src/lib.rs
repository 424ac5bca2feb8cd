//! The vx11 token set, shared by the controller (which writes it) and the gateway and
//! operator backend (which read it):
//!
//! - [`TokenValue`]: a plaintext token that prints only its [`Fingerprint`];
//!   [`TokenDigest`]: its SHA-256, the only form services hold.
//! - [`TokenFile`]: the `tokens.json` format; [`parse_plain`]: the hand-made `tokens` list;
//!   [`LegacyTokens`]: the Compose deployment's environment variables.
//! - [`TokenSet`]: the check of a presented token, in time independent of how much of a
//!   valid token was guessed, with `notBefore`/`expiresAt` enforced by the clock.
//! - [`presented_token`] and [`redact_uri`]: tokens in and out of HTTP requests.
//! - [`TokenWatcher`]: hot reload of the directory kubelet projects the Secret into, by
//!   [`DirWatcher`] (which the gateway's TLS certificate reload uses too).

mod digest;
mod dir_watch;
mod extract;
mod file;
mod json_error;
#[cfg(any(test, feature = "kubelet-sim"))]
pub mod kubelet_sim;
mod legacy;
mod load_error;
mod open;
mod plain;
mod redact;
mod set;
mod source;
mod store;
mod value;
mod watch;

pub use digest::{Fingerprint, InvalidDigest, TokenDigest};
pub use dir_watch::{DirWatchConfig, DirWatcher};
pub use extract::{
    Carrier, Carriers, MalformedToken, PresentedToken, TOKEN_HEADER, TOKEN_QUERY_PARAM,
    presented_token, presented_token_in, query_param_token,
};
pub use file::{FileError, TOKEN_FILE_NAME, TOKEN_FILE_VERSION, TokenEntry, TokenFile, TokenState};
pub use legacy::{LEGACY_TOKEN_VARS, LegacyTokenError, LegacyTokens};
pub use load_error::LoadError;
pub use plain::{PLAIN_FILE_NAME, PlainError, parse_plain};
pub use redact::{REDACTED, redact_path_and_query, redact_query, redact_uri};
pub use set::{Origin, SetEntry, TokenSet, Verdict, Window};
pub use source::{DEFAULT_MAX_FILE_BYTES, Parsed, RawTokens, TokenSource};
pub use store::{ReloadHealth, Snapshot, TokenStore};
pub use value::{
    DEFAULT_GENERATED_BYTES, GENERATED_PREFIX, GenerateError, InvalidToken, MAX_TOKEN_LEN,
    MIN_TOKEN_LEN, TokenValue, validate,
};
pub use watch::{TokenWatcher, WatchConfig};
