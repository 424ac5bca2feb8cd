//! kubelet's part in a Secret volume: watch one Secret through the API and project it into a
//! directory with [`atomic_writer`](crate::atomic_writer), after a delay standing for kubelet's
//! sync latency (60–90 s in a real cluster; tests choose something short).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::atomic_writer::{self, Outcome};
use crate::eventually::Timeout;

/// What a [`KubeletProjector`] has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectorStatus {
    /// `..data` swaps made (the first projection counts).
    pub swaps: u64,
    /// Projections made, with the content changed or not: once one is made the directory holds
    /// the Secret as it was seen (a directory kept from an earlier run may need no swap).
    pub projections: u64,
    /// The `resourceVersion` of the Secret last projected (changed or not).
    pub resource_version: Option<String>,
    /// The last error from the watch or the write, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Projects one Secret into a directory, as kubelet does for a pod's Secret volume, until
/// dropped.
///
/// The first projection happens as soon as the Secret is seen (a pod starts with its volume
/// filled); each later change is projected `sync_delay` after it is seen, with the Secret's
/// content at that moment (changes in between are coalesced, as kubelet's periodic sync does).
/// A deleted Secret leaves the files as they were, as kubelet does for a running pod.
#[derive(Debug)]
pub struct KubeletProjector {
    dir: PathBuf,
    status: watch::Receiver<ProjectorStatus>,
    task: JoinHandle<()>,
}

impl KubeletProjector {
    /// Starts projecting Secret `name` from `secrets` (a namespaced API) into `dir`.
    pub fn start(
        secrets: Api<Secret>,
        name: &str,
        dir: impl Into<PathBuf>,
        sync_delay: Duration,
    ) -> Self {
        let dir = dir.into();
        let (tx, status) = watch::channel(ProjectorStatus::default());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let updates = watcher(secrets, config).default_backoff().applied_objects();
        let task = tokio::spawn(project(updates, dir.clone(), sync_delay, tx));
        Self { dir, status, task }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn status(&self) -> ProjectorStatus {
        self.status.borrow().clone()
    }

    /// Waits until at least `swaps` `..data` swaps have been made.
    pub async fn wait_for_swaps(&self, swaps: u64, timeout: Duration) -> Result<(), Timeout> {
        self.wait_for(
            &format!("{swaps} ..data swap(s) in {}", self.dir.display()),
            |s| s.swaps >= swaps,
            timeout,
        )
        .await
    }

    /// Waits until the directory holds the Secret as first seen: projected now, or already so.
    pub async fn wait_for_projection(&self, timeout: Duration) -> Result<(), Timeout> {
        self.wait_for(
            &format!("a projection into {}", self.dir.display()),
            |s| s.projections >= 1,
            timeout,
        )
        .await
    }

    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&ProjectorStatus) -> bool,
        timeout: Duration,
    ) -> Result<(), Timeout> {
        let mut status = self.status.clone();
        match tokio::time::timeout(timeout, status.wait_for(|s| done(s))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Timeout {
                what: what.to_owned(),
                waited: timeout,
                last: format!("{:?}", self.status()),
            }),
        }
    }
}

impl Drop for KubeletProjector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn project(
    updates: impl Stream<Item = Result<Secret, watcher::Error>> + Send,
    dir: PathBuf,
    sync_delay: Duration,
    status: watch::Sender<ProjectorStatus>,
) {
    let mut updates = pin!(updates);
    let mut first = true;
    while let Some(update) = updates.next().await {
        let mut latest = match update {
            Ok(secret) => secret,
            Err(e) => {
                status.send_modify(|s| s.last_error = Some(format!("watch: {e}")));
                continue;
            }
        };
        if !first {
            let delay = pin!(tokio::time::sleep(sync_delay));
            let mut delay = delay;
            loop {
                tokio::select! {
                    () = &mut delay => break,
                    next = updates.next() => match next {
                        Some(Ok(secret)) => latest = secret,
                        Some(Err(e)) => {
                            status.send_modify(|s| s.last_error = Some(format!("watch: {e}")));
                        }
                        None => return,
                    },
                }
            }
        }
        first = false;

        let payload: BTreeMap<String, Vec<u8>> = latest
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect();
        let target = dir.clone();
        let written =
            tokio::task::spawn_blocking(move || atomic_writer::write(&target, &payload)).await;
        let resource_version = latest.metadata.resource_version;
        status.send_modify(|s| {
            s.resource_version = resource_version;
            match written {
                Ok(Ok(outcome)) => {
                    s.last_error = None;
                    s.projections += 1;
                    if matches!(outcome, Outcome::Swapped { .. }) {
                        s.swaps += 1;
                    }
                }
                Ok(Err(e)) => s.last_error = Some(format!("write: {e}")),
                Err(e) => s.last_error = Some(format!("write: {e}")),
            }
        });
    }
}
