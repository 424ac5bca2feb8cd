//! One reconcile, the I/O around [`crate::plan`]: read the Secrets, plan, write (client
//! Secret first, then service Secret: see [`crate::state`]), publish the plan's events (their
//! text is the plan's, [`crate::plan::Note`]), report status, requeue at the next time the
//! plan changes by itself. The process that runs it is in `run.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use vx11_tokenset::TokenValue;

use crate::config::CrashPoint;
use crate::consumers;
use crate::crd::{Vx11TokenSet, Vx11TokenSetStatus};
use crate::duration::parse_chrono;
use crate::metrics::{CauseLabel, Metrics, TOKEN_STATES};
use crate::plan::{Input, Note, Source, plan};
use crate::state::{
    ROTATE_ANNOTATION, TOKEN_ROTATE_ANNOTATION_PREFIX, TOKEN_SOURCE_LABEL, TOKEN_SOURCE_VALUE,
    client_secret, extra_keys, is_ours, needs_write, observe, service_secret,
};
use crate::status::{
    Propagation, STALE_CONSUMERS, condition, condition_status, desired_status, ready_changed,
};
use crate::{Error, MANAGER, Result};

/// Shared by every reconcile.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    /// Who publishes events (instance: this replica's identity).
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub crash_at: Option<CrashPoint>,
    /// Asks consumer pods which generation they serve.
    pub http: reqwest::Client,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// After a failure, try again after this long.
const RETRY: Duration = Duration::from_secs(5);
/// While a value is staged or a consumer lags, ask the consumers again after this long.
const PROPAGATION_POLL: Duration = Duration::from_secs(1);
/// Once a staged value is overdue (`StaleConsumers`), ask this often.
const STALE_POLL: Duration = Duration::from_secs(5);
/// Look at the consumers again at least this often (pods come and go; the controller does
/// not watch pods, which would cache every pod of the cluster).
const CONSUMER_RESYNC: Duration = Duration::from_secs(30);

pub async fn reconcile(ts: Arc<Vx11TokenSet>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_set(&ts, &ctx).await;
    ctx.metrics.observe(started.elapsed());
    result
}

pub fn error_policy(ts: Arc<Vx11TokenSet>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = ts.namespace().unwrap_or_default(),
        tokenset = ts.name_any(),
        %error,
        "reconcile failed"
    );
    ctx.metrics.failure(error.metric_label());
    Action::requeue(RETRY)
}

async fn reconcile_set(ts: &Vx11TokenSet, ctx: &Context) -> Result<Action> {
    let namespace = ts.namespace().ok_or(Error::MissingNamespace)?;
    let name = ts.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let service = secrets.get_opt(&ts.spec.secret_name).await?;
    let client = secrets.get_opt(&ts.spec.client_secret_name).await?;

    for existing in [&service, &client].into_iter().flatten() {
        if !is_ours(existing, ts) {
            let error = Error::SecretConflict {
                namespace: namespace.clone(),
                name: existing.name_any(),
            };
            let condition = ("SecretConflict", error.to_string());
            report_conflict(ts, ctx, condition).await?;
            return Ok(Action::await_change());
        }
    }

    let sources = read_sources(ts, &secrets).await?;
    let observed = observe(service.as_ref(), client.as_ref());
    let now = Utc::now().trunc_subsecs(3);
    let rotate_request = ts.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let token_rotate_requests: BTreeMap<String, String> = ts
        .annotations()
        .iter()
        .filter_map(|(k, v)| {
            let token = k.strip_prefix(TOKEN_ROTATE_ANNOTATION_PREFIX)?;
            Some((token.to_owned(), v.clone()))
        })
        .collect();
    let propagation_spec = ts.spec.propagation.clone().unwrap_or_default();
    let timeout = parse_chrono(&propagation_spec.timeout).map_err(Error::InvalidSpec)?;
    let reports = consumers::ask(&ctx.http, &consumers::find(&ctx.client, ts).await?).await;
    let plan = plan(
        &Input {
            spec: &ts.spec,
            rotate_request,
            token_rotate_requests: &token_rotate_requests,
            acknowledged: consumers::acknowledged(propagation_spec.staged, &reports),
            observed: &observed,
            sources: &sources,
            now,
        },
        &mut TokenValue::generate,
    )?;

    // Write order (see `state`): the client Secret, holding the plaintext of every active
    // digest and the new record, first; the service Secret second. A crash in between leaves
    // the client's record ahead, and the next reconcile finishes the service Secret from it.
    let desired_client = client_secret(ts, &plan.record, &plan.client_values);
    let client_written = write(&secrets, client.as_ref(), desired_client).await?;
    if client_written && ctx.crash_at == Some(CrashPoint::AfterClientWrite) {
        tracing::error!(tokenset = %name, "VX11_CRASH_AT=after-client-write: exiting abruptly");
        std::process::abort();
    }
    let desired_service = service_secret(ts, &plan.record);
    let service_written = write(&secrets, service.as_ref(), desired_service).await?;

    for note in &plan.notes {
        log_and_publish(ts, ctx, note).await;
    }
    for cause in plan.rotations() {
        ctx.metrics
            .rotations
            .get_or_create(&CauseLabel {
                cause: cause.as_str().to_owned(),
            })
            .inc();
    }
    for state in TOKEN_STATES {
        let count = plan
            .record
            .tokens
            .iter()
            .filter(|e| e.state == state)
            .count();
        ctx.metrics.set_tokens(&namespace, &name, state, count);
    }

    for seconds in &plan.propagations {
        ctx.metrics
            .propagation
            .observe(seconds.num_milliseconds() as f64 / 1000.0);
    }
    let (consumer_statuses, synced) = consumers::statuses(&reports, plan.record.generation);
    let stale = consumer_statuses
        .iter()
        .filter(|c| c.state != "Synced")
        .count();
    ctx.metrics.set_stale_consumers(&namespace, &name, stale);
    let propagation = Propagation::of(&plan, consumer_statuses, synced, now, timeout);
    let status = desired_status(ts, &plan, &propagation, now);
    let previous = ts.status.clone().unwrap_or_default();
    let was_stale = condition(&previous, "Propagated").is_some_and(|c| c.reason == STALE_CONSUMERS);
    if propagation.reason == STALE_CONSUMERS && !was_stale {
        tracing::warn!(namespace = %namespace, tokenset = %name, message = %propagation.message, "staged value not published: consumers are stale");
        publish(
            ts,
            ctx,
            EventType::Warning,
            STALE_CONSUMERS,
            propagation.message.clone(),
        )
        .await;
    }
    if ready_changed(&previous, &status) {
        for problem in &plan.problems {
            problem.log(&name);
            publish(
                ts,
                ctx,
                EventType::Warning,
                problem.kind.reason(),
                problem.detail.clone(),
            )
            .await;
        }
    }
    if status != previous {
        patch_status(ts, ctx, &status).await?;
    }
    if client_written || service_written {
        tracing::info!(namespace = %namespace, tokenset = %name, generation = plan.record.generation, "Secrets written");
    }

    let look_again = if propagation.reason == STALE_CONSUMERS {
        STALE_POLL
    } else if !plan.waiting.is_empty() || stale > 0 {
        PROPAGATION_POLL
    } else {
        CONSUMER_RESYNC
    };
    let wake = plan
        .next_wake
        .map_or(look_again, |at| until(at, Utc::now()).min(look_again));
    Ok(Action::requeue(wake))
}

/// Time from `now` to `at`, rounded up to a millisecond so that the wake-up is not early.
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .map_or(Duration::from_millis(1), |d| d + Duration::from_millis(1))
}

async fn read_sources(
    ts: &Vx11TokenSet,
    secrets: &Api<Secret>,
) -> Result<BTreeMap<String, Source>> {
    let mut cache: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for token in &ts.spec.tokens {
        let Some(reference) = &token.secret_ref else {
            continue;
        };
        if !cache.contains_key(&reference.name) {
            cache.insert(
                reference.name.clone(),
                secrets.get_opt(&reference.name).await?,
            );
        }
        let source = match cache.get(&reference.name).and_then(Option::as_ref) {
            None => Source::SecretMissing {
                secret: reference.name.clone(),
            },
            // A Secret that does not opt in is not read: its data may be anything (a database
            // password) and a set's author may not be allowed to read it.
            Some(secret) if !opts_in(secret) => Source::NotOptedIn {
                secret: reference.name.clone(),
            },
            Some(secret) => match secret.data.as_ref().and_then(|d| d.get(&reference.key)) {
                None => Source::KeyMissing {
                    secret: reference.name.clone(),
                    key: reference.key.clone(),
                },
                // Not UTF-8 is not printable ASCII either: the plan refuses it as invalid.
                Some(bytes) => Source::Value(String::from_utf8_lossy(&bytes.0).into_owned()),
            },
        };
        sources.insert(token.name.clone(), source);
    }
    Ok(sources)
}

/// Whether `secret` carries the label `vx11.dev/token-source=true`.
fn opts_in(secret: &Secret) -> bool {
    secret.labels().get(TOKEN_SOURCE_LABEL).map(String::as_str) == Some(TOKEN_SOURCE_VALUE)
}

/// Applies `desired` if it differs from `current`; removes keys that `desired` lacks. Returns
/// whether anything was written. The current resourceVersion is a precondition, so a replica
/// that lost leadership without knowing cannot overwrite a newer state.
async fn write(api: &Api<Secret>, current: Option<&Secret>, mut desired: Secret) -> Result<bool> {
    let extra = extra_keys(current, &desired);
    if !needs_write(current, &desired) && extra.is_empty() {
        return Ok(false);
    }
    let name = desired.name_any();
    desired.metadata.resource_version = current.and_then(|c| c.resource_version());
    let params = PatchParams::apply(MANAGER).force();
    let written = api.patch(&name, &params, &Patch::Apply(&desired)).await?;
    if !extra.is_empty() {
        let removal: serde_json::Map<String, serde_json::Value> = extra
            .iter()
            .map(|k| (k.clone(), serde_json::Value::Null))
            .collect();
        let patch = json!({
            "metadata": {"resourceVersion": written.resource_version()},
            "data": removal,
        });
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch(&name, &params, &Patch::Merge(&patch)).await?;
    }
    Ok(true)
}

async fn report_conflict(
    ts: &Vx11TokenSet,
    ctx: &Context,
    (reason, message): (&str, String),
) -> Result<()> {
    let previous = ts.status.clone().unwrap_or_default();
    let status = condition_status(
        ts,
        &previous,
        "False",
        reason,
        message.clone(),
        Utc::now().trunc_subsecs(3),
        None,
    );
    if ready_changed(&previous, &status) {
        tracing::warn!(tokenset = ts.name_any(), %message, "not writing");
        publish(ts, ctx, EventType::Warning, reason, message).await;
    }
    if status != previous {
        patch_status(ts, ctx, &status).await?;
    }
    Ok(())
}

async fn patch_status(ts: &Vx11TokenSet, ctx: &Context, status: &Vx11TokenSetStatus) -> Result<()> {
    let api: Api<Vx11TokenSet> =
        Api::namespaced(ctx.client.clone(), &ts.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "vx11.dev/v1alpha1",
        "kind": "Vx11TokenSet",
        "status": status,
    });
    api.patch_status(
        &ts.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn log_and_publish(ts: &Vx11TokenSet, ctx: &Context, note: &Note) {
    note.log(&ts.name_any());
    publish(ts, ctx, EventType::Normal, note.reason(), note.message()).await;
}

async fn publish(ts: &Vx11TokenSet, ctx: &Context, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // A recorder per event: kube's Recorder folds events with the same reason into one series
    // and keeps the first note, which would hide the fingerprints of a later rotation. Each
    // event here is distinct (problems are published only when the condition changes).
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, &ts.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_are_never_early() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(
            until(now + chrono::Duration::seconds(3), now),
            Duration::from_millis(3001)
        );
        assert_eq!(
            until(now - chrono::Duration::seconds(3), now),
            Duration::from_millis(1)
        );
    }
}
