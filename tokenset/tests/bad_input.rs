//! Bad input: each case gives a clear error and keeps the last good set; no error, log or
//! `Debug` output ever shows a token value.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use support::{TokenDir, eventually, token_file};
use vx11_tokenset::{TokenEntry, TokenFile, TokenState, TokenStore, TokenValue};

const PICKUP: Duration = Duration::from_secs(2);

/// Projects `bad` over a good set and asserts the error and that the good set stays.
fn refused(files: &[(&str, &[u8])], expected: &str) -> (String, TokenDir) {
    support::capture_logs();
    let dir = TokenDir::new();
    let (good, values) = token_file(1, 1);
    dir.project_file(&good);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    dir.project(files);
    assert!(
        eventually(PICKUP, || store.health().last_error.is_some()),
        "no error reported for {expected}"
    );
    let error = store.health().last_error.unwrap();
    assert!(
        error.contains(expected),
        "error {error:?} lacks {expected:?}"
    );
    assert_good_set_kept(&store, values[0].expose());
    (error, dir)
}

fn assert_good_set_kept(store: &TokenStore, good: &str) {
    assert_eq!(store.snapshot().generation, Some(1));
    assert!(store.check(good, Utc::now(), |v| v.is_accepted()));
    assert!(store.is_ready());
}

#[test]
fn garbage() {
    refused(
        &[("tokens.json", b"this is not json")],
        "not valid JSON (syntax error)",
    );
}

#[test]
fn truncated_json() {
    let (file, _) = token_file(2, 3);
    let json = file.to_json();
    refused(
        &[("tokens.json", &json.as_bytes()[..json.len() - 20])],
        "truncated",
    );
}

#[test]
fn unknown_version() {
    refused(
        &[(
            "tokens.json",
            br#"{"version": 2, "generation": 2, "tokens": []}"#,
        )],
        "has version 2, this build reads version 1",
    );
}

#[test]
fn invalid_utf8() {
    refused(
        &[("tokens.json", b"{\"version\": 1, \xff\xfe}")],
        "not valid JSON",
    );
}

#[test]
fn digest_that_is_not_64_hex() {
    let pasted = "vx11_a_plaintext_token_pasted_by_mistake";
    let json = format!(
        r#"{{"version":1,"generation":2,"tokens":[{{"name":"op","sha256":"{pasted}","state":"active"}}]}}"#
    );
    let (error, _dir) = refused(&[("tokens.json", json.as_bytes())], "64 hex digits");
    assert!(!error.contains(pasted));
    support::assert_no_value_in(&support::captured_logs(), &[pasted]);
}

#[test]
fn short_token_in_the_plain_list() {
    let (error, _dir) = refused(
        &[(
            "tokens",
            b"# hand-made\nvx11-operator-test-token\nvx11-test-token\n",
        )],
        "line 3: token is 15 bytes; tokens are at least 16 bytes",
    );
    assert!(!error.contains("vx11-test-token"));
    support::assert_no_value_in(
        &support::captured_logs(),
        &["vx11-test-token", "vx11-operator-test-token"],
    );
}

#[test]
fn a_64_mib_file_is_refused_by_size_without_being_read() {
    let dir = TokenDir::new();
    let (good, values) = token_file(1, 1);
    dir.project_file(&good);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    // Sparse: 64 MiB by size, no memory or disk spent. Reading it would take a visible
    // while and 64 MiB; the size check refuses it first.
    let big = dir.path().join("..data").join("tokens");
    let file = fs::File::create(&big).unwrap();
    file.set_len(64 * 1024 * 1024).unwrap();
    std::os::unix::fs::symlink("..data/tokens", dir.path().join("tokens")).unwrap();
    assert!(eventually(PICKUP, || store.health().last_error.is_some()));
    let error = store.health().last_error.unwrap();
    assert!(
        error.contains("is 67108864 bytes, over the limit") && error.contains("not read"),
        "{error}"
    );
    assert_good_set_kept(&store, values[0].expose());
}

#[test]
fn symlink_loop() {
    let dir = TokenDir::new();
    let (good, values) = token_file(1, 1);
    dir.project_file(&good);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    std::os::unix::fs::symlink("loop-b", dir.path().join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.path().join("loop-b")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.path().join("tokens")).unwrap();
    assert!(eventually(PICKUP, || store.health().last_error.is_some()));
    let error = store.health().last_error.unwrap();
    assert!(error.contains("symbolic links"), "{error}");
    assert_good_set_kept(&store, values[0].expose());
}

#[test]
fn good_content_after_bad_recovers_and_counts_each_bad_content_once() {
    let dir = TokenDir::new();
    let (good, _) = token_file(1, 1);
    dir.project_file(&good);
    let mut config = vx11_tokenset::WatchConfig::new(dir.path());
    config.poll_interval = Duration::from_millis(20);
    let watcher =
        vx11_tokenset::TokenWatcher::start(config, vx11_tokenset::LegacyTokens::default()).unwrap();
    let store = watcher.store().clone();
    dir.project(&[("tokens.json", b"{")]);
    assert!(eventually(PICKUP, || store.health().last_error.is_some()));
    std::thread::sleep(Duration::from_millis(200)); // ten polls of the same bad content
    assert_eq!(store.health().reload_errors_total, 1);
    let (next, values) = token_file(2, 1);
    dir.project_file(&next);
    assert!(eventually(PICKUP, || store.snapshot().generation == Some(2)));
    assert_eq!(store.health().last_error, None);
    assert!(store.check(values[0].expose(), Utc::now(), |v| v.is_accepted()));
}

#[test]
fn an_empty_token_list_denies_everything() {
    let dir = TokenDir::new();
    let (good, values) = token_file(1, 1);
    dir.project_file(&good);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    dir.project_file(&TokenFile::new(2, vec![]));
    assert!(eventually(PICKUP, || store.snapshot().generation == Some(2)));
    assert!(!store.check(values[0].expose(), Utc::now(), |v| v.is_accepted()));
    assert!(!store.is_ready());
    assert_eq!(store.health().last_error, None);
}

#[test]
fn expiry_is_enforced_with_no_reload() {
    let dir = TokenDir::new();
    let value = TokenValue::generate(32).unwrap();
    let expires = Utc::now() + Span::milliseconds(300);
    let file = TokenFile::new(
        1,
        vec![TokenEntry {
            name: "retiring".into(),
            sha256: value.digest(),
            state: TokenState::Retiring,
            not_before: None,
            expires_at: Some(expires),
        }],
    );
    dir.project_file(&file);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    assert!(store.check(value.expose(), Utc::now(), |v| v.is_accepted()));
    assert!(eventually(Duration::from_secs(2), || {
        store.check(value.expose(), Utc::now(), |v| v.code() == "expired_token")
    }));
    assert_eq!(store.health().reloads_total, 1, "no reload was needed");
}

#[test]
fn not_before_in_the_future_is_refused() {
    let dir = TokenDir::new();
    let value = TokenValue::generate(32).unwrap();
    let file = TokenFile::new(
        1,
        vec![TokenEntry {
            name: "next".into(),
            sha256: value.digest(),
            state: TokenState::Active,
            not_before: Some(Utc::now() + Span::hours(1)),
            expires_at: None,
        }],
    );
    dir.project_file(&file);
    let watcher = dir.watch_events_only();
    let store = watcher.store();
    assert!(store.check(value.expose(), Utc::now(), |v| v.code()
        == "token_not_yet_valid"));
    assert!(
        store.check(value.expose(), Utc::now() + Span::hours(2), |v| v
            .is_accepted())
    );
}

#[test]
fn debug_output_of_every_type_hides_values() {
    let value = TokenValue::new("vx11-debug-output-check-token").unwrap();
    let set = vx11_tokenset::TokenSet::new(vec![vx11_tokenset::SetEntry::new(
        "x",
        value.digest(),
        vx11_tokenset::Origin::TokenFile,
    )]);
    let now = Utc::now();
    let shown = format!(
        "{value:?} {value} {:?} {:?} {:?} {set:?}",
        value.digest(),
        value.fingerprint(),
        set.check(value.expose(), now),
    );
    assert!(shown.contains("sha256:"));
    support::assert_no_value_in(&shown, &[value.expose()]);
}

/// A watcher whose thread may be stuck (old code blocked on a FIFO forever): on failure it
/// is leaked rather than joined, so that the test fails instead of hanging.
fn or_leak(
    watcher: vx11_tokenset::TokenWatcher,
    held: bool,
    what: &str,
) -> vx11_tokenset::TokenWatcher {
    if !held {
        std::mem::forget(watcher);
        panic!("{what}");
    }
    watcher
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_is_refused_without_blocking_the_watcher() {
    let dir = TokenDir::new();
    let (good, values) = token_file(1, 1);
    dir.project_file(&good);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    // Nobody ever writes to it: an open(2) without O_NONBLOCK waits forever.
    mkfifo(&dir.path().join("fifo"));
    std::os::unix::fs::symlink("fifo", dir.path().join("tokens")).unwrap();
    let reported = eventually(PICKUP, || store.health().last_error.is_some());
    let watcher = or_leak(
        watcher,
        reported,
        "no error reported: the watcher is stuck on the FIFO",
    );
    let error = store.health().last_error.unwrap();
    assert!(error.contains("is a FIFO, not a regular file"), "{error}");
    assert_good_set_kept(&store, values[0].expose());

    // The watcher is free: once the FIFO is gone, the next file is picked up.
    fs::remove_file(dir.path().join("tokens")).unwrap();
    let (next, next_values) = token_file(2, 1);
    dir.project_file(&next);
    let picked = eventually(PICKUP, || store.snapshot().generation == Some(2));
    or_leak(watcher, picked, "the next token file was not picked up");
    assert!(store.check(next_values[0].expose(), Utc::now(), |v| v.is_accepted()));
}

#[test]
fn a_link_to_a_device_is_refused_without_reading_it() {
    let dir = TokenDir::new();
    let (good, values) = token_file(1, 1);
    dir.project_file(&good);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("tokens")).unwrap();
    assert!(eventually(PICKUP, || store.health().last_error.is_some()));
    let error = store.health().last_error.unwrap();
    assert!(error.contains("leads out of"), "{error}");
    assert!(
        !error.contains("bytes, over the limit"),
        "it was read: {error}"
    );
    assert_good_set_kept(&store, values[0].expose());
}

#[test]
fn links_out_of_the_directory_are_refused() {
    for target in ["../outside-list", "..data/../../outside-list", "ABSOLUTE"] {
        let dir = TokenDir::new();
        let (good, values) = token_file(1, 1);
        dir.project_file(&good);
        let watcher = dir.watch_events_only();
        let store = watcher.store().clone();
        // A valid plain list outside the mount: followed, it would add its token.
        let outside = dir.path().parent().unwrap().join("outside-list");
        fs::write(&outside, "vx11-a-token-from-outside-the-mount\n").unwrap();
        let target = if target == "ABSOLUTE" {
            outside.to_string_lossy().into_owned()
        } else {
            target.to_owned()
        };
        std::os::unix::fs::symlink(&target, dir.path().join("tokens")).unwrap();
        assert!(
            eventually(PICKUP, || store.health().last_error.is_some()),
            "{target}: no error"
        );
        let error = store.health().last_error.unwrap();
        assert!(error.contains("leads out of"), "{target}: {error}");
        assert!(
            !store.check("vx11-a-token-from-outside-the-mount", Utc::now(), |v| v
                .is_accepted()),
            "{target}: the outside token was loaded"
        );
        assert_good_set_kept(&store, values[0].expose());
    }
}

#[test]
fn a_directory_in_place_of_a_file_is_refused() {
    let (error, _dir) = refused(
        &[("tokens/x", b"vx11-operator-test-token\n")],
        "is a directory",
    );
    assert!(error.contains("not a regular file"), "{error}");
}
