//! Check cost at 1, 100 and 10 000 tokens (SHA-256 of the presented token included) and
//! the cost of a full reload of a 10 000-token directory.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vx11_tokenset::{
    LegacyTokens, TokenEntry, TokenFile, TokenSet, TokenSource, TokenState, TokenValue, kubelet_sim,
};

fn token_file(count: usize) -> (TokenFile, Vec<TokenValue>) {
    let values: Vec<_> = (0..count)
        .map(|_| TokenValue::generate(32).expect("rng"))
        .collect();
    let entries = values
        .iter()
        .enumerate()
        .map(|(i, v)| TokenEntry {
            name: format!("token-{i}"),
            sha256: v.digest(),
            state: TokenState::Active,
            not_before: None,
            expires_at: None,
        })
        .collect();
    (TokenFile::new(1, entries), values)
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    let now = Utc::now();
    for count in [1, 100, 10_000] {
        let (file, values) = token_file(count);
        let set = TokenSet::from_sources(Some(&file), &[], &LegacyTokens::default());
        let valid = values[count / 2].expose().to_owned();
        let invalid = TokenValue::generate(32).expect("rng").expose().to_owned();
        group.bench_with_input(BenchmarkId::new("valid", count), &valid, |b, t| {
            b.iter(|| black_box(set.check(black_box(t), now).is_accepted()))
        });
        group.bench_with_input(BenchmarkId::new("invalid", count), &invalid, |b, t| {
            b.iter(|| black_box(set.check(black_box(t), now).is_accepted()))
        });
    }
    group.finish();
}

fn reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, _) = token_file(10_000);
    let payload = BTreeMap::from([("tokens.json".to_string(), file.to_json().into_bytes())]);
    kubelet_sim::project(dir.path(), &payload).expect("project");
    let source = TokenSource::new(dir.path(), LegacyTokens::default());
    c.bench_function("reload/10000 (read + parse + index)", |b| {
        b.iter(|| {
            let raw = source.read().expect("read");
            black_box(source.parse(&raw).expect("parse").set.len())
        })
    });
}

criterion_group!(benches, check, reload);
criterion_main!(benches);
