//! The abuse suite: each attack of `docs/SECURITY.md` replayed against the real binaries on
//! loopback, with bounded loops. Every test asserts what the attacked process must keep:
//! memory under a stated bound, attacked connections closed within their timeout, valid
//! clients answered 200 throughout, and no token value in any output.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "abuse/files.rs"]
mod files;
#[path = "abuse/history.rs"]
mod history;
#[path = "abuse/listeners.rs"]
mod listeners;
#[path = "abuse/proxy.rs"]
mod proxy;
#[path = "abuse/streams.rs"]
mod streams;
