//! Hot reload against kubelet's real update sequence and the other ways a directory changes.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::time::Duration;

use chrono::Utc;
use support::{TokenDir, eventually, token_file};

const PICKUP: Duration = Duration::from_secs(1);

#[test]
fn kubelet_swaps_200_times_each_seen_within_a_second() {
    support::capture_logs();
    let dir = TokenDir::new();
    let (first, _) = token_file(1, 2);
    dir.project_file(&first);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    assert_eq!(store.snapshot().generation, Some(1));

    let mut leaked_values = Vec::new();
    for generation in 2..=201 {
        let (file, values) = token_file(generation, 2);
        dir.project_file(&file);
        let seen = eventually(PICKUP, || store.snapshot().generation == Some(generation));
        assert!(
            seen,
            "generation {generation} not picked up within {PICKUP:?}"
        );
        let now = Utc::now();
        assert!(store.check(values[1].expose(), now, |v| v.is_accepted()));
        leaked_values.extend(values.iter().map(|v| v.expose().to_owned()));
    }
    // Exactly one install per generation: none missed, none doubled.
    assert_eq!(store.health().reloads_total, 201);
    assert_eq!(store.health().reload_errors_total, 0);
    let logs = support::captured_logs();
    let refs: Vec<&str> = leaked_values.iter().map(String::as_str).collect();
    support::assert_no_value_in(&logs, &refs);
}

#[test]
fn file_rewritten_in_place() {
    let dir = TokenDir::new();
    fs::create_dir_all(dir.path()).unwrap();
    let (one, _) = token_file(1, 1);
    fs::write(dir.path().join("tokens.json"), one.to_json()).unwrap();
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    assert_eq!(store.snapshot().generation, Some(1));

    let (two, values) = token_file(2, 3);
    fs::write(dir.path().join("tokens.json"), two.to_json()).unwrap();
    assert!(eventually(PICKUP, || store.snapshot().generation == Some(2)));
    assert_eq!(store.snapshot().set.len(), 3);
    assert!(store.check(values[0].expose(), Utc::now(), |v| v.is_accepted()));
}

#[test]
fn directory_created_after_start() {
    let dir = TokenDir::new();
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();
    assert!(!store.is_ready(), "no source: not ready");
    assert!(store.snapshot().set.is_empty());

    let (file, values) = token_file(5, 1);
    dir.project_file(&file);
    assert!(eventually(PICKUP, || store.snapshot().generation == Some(5)));
    assert!(store.is_ready());
    assert!(store.check(values[0].expose(), Utc::now(), |v| v.is_accepted()));
}

#[test]
fn directory_removed_and_recreated() {
    let dir = TokenDir::new();
    let (one, old_values) = token_file(1, 1);
    dir.project_file(&one);
    let watcher = dir.watch_events_only();
    let store = watcher.store().clone();

    fs::remove_dir_all(dir.path()).unwrap();
    // The set stays while the source is gone, and the gap is reported.
    assert!(eventually(PICKUP, || store.health().last_error.is_some()));
    assert!(store.check(old_values[0].expose(), Utc::now(), |v| v.is_accepted()));

    let (two, values) = token_file(2, 1);
    dir.project_file(&two);
    assert!(eventually(PICKUP, || store.snapshot().generation == Some(2)));
    assert!(store.health().last_error.is_none());
    assert!(store.check(values[0].expose(), Utc::now(), |v| v.is_accepted()));
    assert!(!store.check(old_values[0].expose(), Utc::now(), |v| v.is_accepted()));

    // The new directory is watched too.
    let (three, _) = token_file(3, 1);
    dir.project_file(&three);
    assert!(eventually(PICKUP, || store.snapshot().generation == Some(3)));
}

#[test]
fn poll_fallback_catches_what_events_miss() {
    // A watcher whose events cannot fire (the directory is on the other side of a symlink
    // that is repointed, which no inotify watch sees) still converges by polling.
    let root = tempfile::tempdir().unwrap();
    let real_a = root.path().join("a");
    let real_b = root.path().join("b");
    let (one, _) = token_file(1, 1);
    let (two, _) = token_file(2, 1);
    fs::create_dir_all(&real_a).unwrap();
    fs::create_dir_all(&real_b).unwrap();
    fs::write(real_a.join("tokens.json"), one.to_json()).unwrap();
    fs::write(real_b.join("tokens.json"), two.to_json()).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real_a, &link).unwrap();
    let mut config = vx11_tokenset::WatchConfig::new(link.join("current"));
    // `current` is a symlink inside the linked dir; swapping `link` is seen only by polling.
    std::os::unix::fs::symlink(".", real_a.join("current")).unwrap();
    std::os::unix::fs::symlink(".", real_b.join("current")).unwrap();
    config.poll_interval = Duration::from_millis(100);
    let watcher =
        vx11_tokenset::TokenWatcher::start(config, vx11_tokenset::LegacyTokens::default()).unwrap();
    let store = watcher.store().clone();
    assert_eq!(store.snapshot().generation, Some(1));
    let tmp = root.path().join("link.tmp");
    std::os::unix::fs::symlink(&real_b, &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    assert!(eventually(Duration::from_secs(5), || store
        .snapshot()
        .generation
        == Some(2)));
}

#[test]
fn changes_are_announced_to_subscribers() {
    let dir = TokenDir::new();
    let (one, _) = token_file(1, 1);
    dir.project_file(&one);
    let watcher = dir.watch_events_only();
    let mut changes = watcher.store().subscribe();
    let before = *changes.borrow_and_update();
    let (two, _) = token_file(2, 1);
    dir.project_file(&two);
    assert!(eventually(PICKUP, || changes
        .has_changed()
        .unwrap_or(false)));
    assert!(*changes.borrow_and_update() > before);
}

#[test]
fn legacy_variables_join_the_set() {
    let dir = TokenDir::new();
    let (file, values) = token_file(1, 1);
    dir.project_file(&file);
    let legacy = vx11_tokenset::LegacyTokens::from_lookup(|k| {
        (k == "VX11_OPERATOR_TOKEN").then(|| "vx11-operator-test-token".to_string())
    })
    .unwrap();
    let watcher =
        vx11_tokenset::TokenWatcher::start(vx11_tokenset::WatchConfig::new(dir.path()), legacy)
            .unwrap();
    let store = watcher.store();
    let now = Utc::now();
    assert!(store.check("vx11-operator-test-token", now, |v| v.is_accepted()));
    assert!(store.check(values[0].expose(), now, |v| v.is_accepted()));
    assert_eq!(store.snapshot().set.len(), 2);
}

#[test]
fn legacy_variables_alone_make_a_ready_service() {
    let dir = TokenDir::new();
    let legacy = vx11_tokenset::LegacyTokens::from_lookup(|k| {
        (k == "VX11_GATEWAY_TOKEN").then(|| "vx11-gateway-test-token".to_string())
    })
    .unwrap();
    let watcher =
        vx11_tokenset::TokenWatcher::start(vx11_tokenset::WatchConfig::new(dir.path()), legacy)
            .unwrap();
    assert!(watcher.store().is_ready());
}
