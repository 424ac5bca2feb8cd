//! The whole process: RBAC preflight, `/metrics` and probes, leader election, and the
//! controllers (one per watched namespace, or one for all) that call
//! [`crate::reconcile::reconcile`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use vx11_service::{
    ConnectionCap, ListenerMetrics, Protocols, Serving, Shutdown, serve_until_shutdown,
};

use crate::config::Settings;
use crate::crd::Vx11TokenSet;
use crate::leader::LeaderElector;
use crate::metrics::{Metrics, Readiness};
use crate::reconcile::{Context, error_policy, reconcile};
use crate::state::{MANAGED_BY_LABEL, MANAGED_SELECTOR, TOKENSET_LABEL};
use crate::{Error, MANAGER, Result};

/// How often each controller scope removes the metric series of deleted sets.
const FORGET_DELETED_EVERY: Duration = Duration::from_secs(5);

/// The TokenSets a Secret concerns: the set it belongs to (by label), and every set in its
/// namespace that names it (as its service or client Secret, so that deleting a conflicting
/// Secret is noticed, or in a `secretRef`).
fn concerned(
    store: &Store<Vx11TokenSet>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Vx11TokenSet>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let mut out = Vec::new();
    if secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
        && let Some(set) = secret.labels().get(TOKENSET_LABEL)
    {
        out.push(ObjectRef::new(set).within(&namespace));
    }
    for ts in store.state() {
        let spec = &ts.spec;
        if ts.namespace().as_deref() == Some(namespace.as_str())
            && (spec.secret_name == name
                || spec.client_secret_name == name
                || spec
                    .tokens
                    .iter()
                    .any(|t| t.secret_ref.as_ref().is_some_and(|r| r.name == name)))
        {
            out.push(ObjectRef::from_obj(&*ts));
        }
    }
    out
}

/// Every [`FORGET_DELETED_EVERY`], removes the metric series of the sets in `scope` (the
/// namespace of this controller, `None` for all) that are no longer in its `store`: the
/// controller is not called for a deleted set. A reconcile that was still running when its set
/// was deleted may write the series again; the next round removes them.
async fn forget_deleted_sets(
    store: Store<Vx11TokenSet>,
    metrics: Arc<Metrics>,
    scope: Option<String>,
) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut rounds = tokio::time::interval(FORGET_DELETED_EVERY);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        let exists = |namespace: &str, name: &str| {
            store.get(&ObjectRef::new(name).within(namespace)).is_some()
        };
        for (namespace, tokenset) in metrics.forget_deleted(scope.as_deref(), exists) {
            tracing::debug!(%namespace, %tokenset, "set deleted: its metric series removed");
        }
    }
}

/// Runs the controllers (one per watched namespace, or one for all) until `shutdown`.
pub async fn run_controllers(settings: &Settings, ctx: Arc<Context>, shutdown: Shutdown) {
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let runs = scopes.into_iter().map(|namespace| {
        let client = ctx.client.clone();
        let (sets, secrets, metas): (
            Api<Vx11TokenSet>,
            Api<Secret>,
            Api<PartialObjectMeta<Secret>>,
        ) = match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };
        let controller = Controller::new(sets, watcher::Config::default().any_semantic())
            .with_config(
                kube::runtime::controller::Config::default().concurrency(settings.concurrency),
            );
        let store = controller.store();
        let forget = forget_deleted_sets(controller.store(), ctx.metrics.clone(), namespace);
        let shutdown = shutdown.clone();
        let run = controller
            .owns(
                secrets,
                watcher::Config::default()
                    .labels(MANAGED_SELECTOR)
                    .any_semantic(),
            )
            .watches(
                metas,
                watcher::Config::default().any_semantic(),
                move |secret| concerned(&store, &secret),
            )
            .graceful_shutdown_on(async move { shutdown.triggered().await })
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "controller event");
                }
            });
        async move {
            // `forget` returns only once the store's writer, owned by `run`, is gone.
            tokio::select! {
                () = run => {}
                () = forget => {}
            }
        }
    });
    futures::future::join_all(runs).await;
}

/// The whole process: RBAC preflight, `/metrics` and probes, leader election, controllers.
/// Returns on SIGTERM/SIGINT (after releasing the Lease) or with the error that stopped it.
pub async fn run(settings: Settings) -> Result<()> {
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let client = Client::try_default().await.map_err(Error::Kube)?;

    crate::permissions::check(&client, &crate::permissions::needs(&settings)).await?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    // The listener limits of the services (their defaults): no connection, slow head or
    // idle keep-alive holds this process's memory.
    let mut serving = Serving::with_defaults("metrics", Protocols::Http1);
    serving.connections = ConnectionCap::new(
        "metrics",
        serving.limits.max_connections,
        ListenerMetrics::register(&mut registry),
    );
    let ready = Arc::new(Readiness::default());
    let listener = vx11_service::bind_listener(settings.metrics_addr, "VX11_METRICS_ADDR")?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /health and /ready");
    let app = crate::metrics::router(Arc::new(registry), ready.clone());
    let http_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let served = serve_until_shutdown(listener, app, http_shutdown, serving).await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics listener failed");
        }
    });

    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: settings
            .leader_election
            .as_ref()
            .map(|l| l.identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        reporter,
        metrics: metrics.clone(),
        crash_at: settings.crash_at,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| Error::Io(std::io::Error::other(format!("an HTTP client: {e}"))))?,
    });

    let Some(lease) = settings.leader_election.clone() else {
        ready.set(true);
        metrics.leader.set(1);
        tracing::info!(namespaces = ?settings.namespaces, "running without leader election");
        run_controllers(&settings, ctx, shutdown).await;
        return Ok(());
    };

    let mut elector = LeaderElector::new(client, lease);
    ready.set(true);
    tokio::select! {
        acquired = elector.acquire() => acquired?,
        () = shutdown.triggered() => return Ok(()),
    }
    metrics.leader.set(1);
    tracing::info!(identity = elector.identity(), namespaces = ?settings.namespaces, "leading: starting the controllers");
    let controllers = run_controllers(&settings, ctx, shutdown.clone());
    tokio::pin!(controllers);
    let outcome = tokio::select! {
        lost = elector.hold() => Err(lost),
        () = &mut controllers => Ok(()),
    };
    match outcome {
        Ok(()) => {
            elector.release().await;
            Ok(())
        }
        Err(lost) => {
            metrics.leader.set(0);
            // Stop writing at once; the process exits and comes back as a standby.
            Err(lost)
        }
    }
}
