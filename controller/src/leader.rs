//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does
//! it: a standby takes the Lease over when its record has not changed for the lease duration
//! *as measured by the standby's own clock* (so clock skew between replicas does not matter);
//! every write is a compare-and-swap on the Lease's resourceVersion, so two replicas never both
//! believe they won. A leader that cannot renew within the renew deadline stops (the process
//! exits and is restarted as a standby); one that shuts down releases the Lease at once.
//!
//! Why not a crate: `kube-lease-manager` 0.13.1 (the newest, checked 2026-12) does build on
//! kube 5 / k8s-openapi 0.29, but does not keep what `controller/tests/control_plane/
//! crash_and_leader.rs` and this module rely on: it takes the Lease's `renewTime +
//! leaseDurationSeconds` as the expiry on the standby's clock (skew between nodes moves the
//! takeover), its watch loop logs a failed renewal and keeps reporting leadership until a
//! renewal succeeds (here a leader stops once renewals have failed for the renew deadline,
//! before a standby may take over), and it counts the lease in whole seconds and panics on
//! parameters out of range. This file is small enough to read in one sitting.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::config::LeaseSettings;
use crate::{Error, Result};

#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease's resourceVersion when last seen and when (our clock) it was first seen.
    observed: Option<(String, Instant)>,
}

enum Outcome {
    Held,
    HeldByOther(String),
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// How often a leader renews and a standby retries.
    pub fn retry_period(&self) -> Duration {
        (self.settings.duration / 5).max(Duration::from_millis(200))
    }

    /// A leader that has not renewed for this long gives up (before a standby may take over).
    fn renew_deadline(&self) -> Duration {
        self.settings.duration * 2 / 3
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) -> Result<()> {
        let mut last_holder = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Outcome::Held) => {
                    tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "acquired the leader Lease");
                    return Ok(());
                }
                Ok(Outcome::HeldByOther(holder)) => {
                    if holder != last_holder {
                        tracing::info!(leader = %holder, "standing by: the Lease is held by another replica");
                        last_holder = holder;
                    }
                }
                Err(Error::Forbidden(message)) => return Err(Error::Forbidden(message)),
                Err(error) => {
                    tracing::warn!(%error, "leader election: could not read or write the Lease")
                }
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the Lease until it is lost; returns why.
    pub async fn hold(&mut self) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            match self.try_acquire_or_renew().await {
                Ok(Outcome::Held) => renewed = Instant::now(),
                Ok(Outcome::HeldByOther(holder)) => {
                    return Error::LostLease(format!("the Lease is now held by {holder}"));
                }
                Err(error) => {
                    tracing::warn!(%error, "leader election: renewing the Lease failed");
                    if renewed.elapsed() > self.renew_deadline() {
                        return Error::LostLease(format!(
                            "not renewed for {:?}: {error}",
                            renewed.elapsed()
                        ));
                    }
                }
            }
        }
    }

    /// Gives the Lease up so that a standby takes over without waiting for it to expire.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the leader Lease"),
            Err(error) => tracing::warn!(%error, "could not release the leader Lease"),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Outcome> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds =
            i32::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let me = self.settings.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Outcome::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Outcome::HeldByOther("(just created)".into()))
                }
                Err(e) => Err(e.into()),
            };
        };

        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(v, _)| *v != version) {
            self.observed = Some((version, Instant::now()));
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(me.as_str());
        if !ours {
            let their_duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.settings.duration, Duration::from_secs);
            let unchanged_for = self
                .observed
                .as_ref()
                .map_or(Duration::ZERO, |(_, at)| at.elapsed());
            if let Some(holder) = holder
                && unchanged_for < their_duration
            {
                return Ok(Outcome::HeldByOther(holder));
            }
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = written
                    .metadata
                    .resource_version
                    .map(|v| (v, Instant::now()));
                Ok(Outcome::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Outcome::HeldByOther("(changed while writing)".into()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
