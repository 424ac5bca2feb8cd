//! kubelet's part: a Secret's update reaches a directory through the `..data` swap, and the
//! token-set library's directory watcher sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use vx11_tests::{ControlPlane, KubeletProjector, eventually};
use vx11_tokenset::{
    LegacyTokens, TOKEN_FILE_NAME, TokenDigest, TokenEntry, TokenFile, TokenState, TokenWatcher,
    WatchConfig,
};

use crate::support::SETTLE;

const NS: &str = "kubelet";
const SECRET: &str = "vx11-tokens";
const SYNC_DELAY: Duration = Duration::from_millis(500);

fn token_file(generation: u64, token: &str) -> String {
    TokenFile::new(
        generation,
        vec![TokenEntry {
            name: "operator".to_owned(),
            sha256: TokenDigest::of(token.as_bytes()),
            state: TokenState::Active,
            not_before: None,
            expires_at: None,
        }],
    )
    .to_json()
}

fn secret(content: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET.to_owned()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            TOKEN_FILE_NAME.to_owned(),
            ByteString(content.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn data_target(dir: &Path) -> String {
    fs::read_link(dir.join("..data"))
        .expect("..data is a symlink")
        .to_string_lossy()
        .into_owned()
}

async fn update_secret(secrets: &Api<Secret>, content: &str) -> String {
    let patch = json!({"data": {TOKEN_FILE_NAME: ByteString(content.as_bytes().to_vec())}});
    let patched = secrets
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch Secret");
    patched.metadata.resource_version.expect("resourceVersion")
}

#[tokio::test]
async fn secret_update_is_projected_through_the_data_swap() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().unwrap();
    vx11_tests::create_namespace(&client, NS)
        .await
        .expect("create namespace");
    let secrets: Api<Secret> = Api::namespaced(client, NS);
    secrets
        .create(
            &PostParams::default(),
            &secret(&token_file(1, "vx11_first_token_value")),
        )
        .await
        .expect("create Secret");

    let mount = tempfile::tempdir().unwrap();
    let projector = KubeletProjector::start(secrets.clone(), SECRET, mount.path(), SYNC_DELAY);
    projector.wait_for_swaps(1, SETTLE).await.unwrap();
    let first = data_target(mount.path());
    assert!(first.starts_with("..2"), "timestamped directory: {first}");
    assert_eq!(
        fs::read_link(mount.path().join(TOKEN_FILE_NAME)).unwrap(),
        Path::new("..data").join(TOKEN_FILE_NAME)
    );
    let read = || TokenFile::parse(&fs::read(mount.path().join(TOKEN_FILE_NAME)).unwrap());
    assert_eq!(read().unwrap().generation, 1);

    let updated = Instant::now();
    update_secret(&secrets, &token_file(2, "vx11_second_token_value")).await;
    projector.wait_for_swaps(2, SETTLE).await.unwrap();
    assert!(
        updated.elapsed() >= SYNC_DELAY,
        "projected after {:?}, before the sync delay",
        updated.elapsed()
    );
    assert_eq!(read().unwrap().generation, 2);
    let second = data_target(mount.path());
    assert_ne!(first, second);
    assert!(!mount.path().join(&first).exists(), "old version removed");
    assert!(!mount.path().join("..data_tmp").exists());
    // Exactly what a pod's Secret volume holds: the data link, one version, one link per key.
    let names: BTreeSet<String> = fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = ["..data", &second, TOKEN_FILE_NAME]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, expected);

    // A change that leaves the data alone (a label) makes no swap.
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let version = secrets
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
        .metadata
        .resource_version;
    eventually("label change seen by the projector", SETTLE, || async {
        let status = projector.status();
        if status.resource_version == version {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
    .unwrap();
    assert_eq!(projector.status().swaps, 2);
    assert_eq!(data_target(mount.path()), second);
}

#[tokio::test]
async fn token_watcher_reloads_on_the_projected_update() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().unwrap();
    vx11_tests::create_namespace(&client, NS)
        .await
        .expect("create namespace");
    let secrets: Api<Secret> = Api::namespaced(client, NS);
    secrets
        .create(
            &PostParams::default(),
            &secret(&token_file(1, "vx11_first_token_value")),
        )
        .await
        .expect("create Secret");

    let mount = tempfile::tempdir().unwrap();
    let projector = KubeletProjector::start(secrets.clone(), SECRET, mount.path(), SYNC_DELAY);
    projector.wait_for_swaps(1, SETTLE).await.unwrap();

    // A poll interval far beyond the deadline below: only a filesystem event can explain a
    // reload in time.
    let mut config = WatchConfig::new(mount.path());
    config.poll_interval = Duration::from_secs(3600);
    let watcher =
        TokenWatcher::start(config, LegacyTokens::from_lookup(|_| None).unwrap()).unwrap();
    let store = watcher.store().clone();
    assert_eq!(store.snapshot().generation, Some(1));
    let now = chrono::Utc::now();
    assert!(
        store
            .snapshot()
            .set
            .check("vx11_first_token_value", now)
            .is_accepted()
    );

    update_secret(&secrets, &token_file(2, "vx11_second_token_value")).await;
    projector.wait_for_swaps(2, SETTLE).await.unwrap();
    eventually(
        "watcher serves generation 2",
        Duration::from_secs(10),
        || async {
            match store.snapshot().generation {
                Some(2) => Ok(()),
                other => Err(format!("generation {other:?}, health {:?}", store.health())),
            }
        },
    )
    .await
    .unwrap();
    let snapshot = store.snapshot();
    let now = chrono::Utc::now();
    assert!(
        snapshot
            .set
            .check("vx11_second_token_value", now)
            .is_accepted()
    );
    assert!(
        !snapshot
            .set
            .check("vx11_first_token_value", now)
            .is_accepted()
    );
}
