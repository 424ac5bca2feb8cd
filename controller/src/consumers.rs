//! The consumers of a set: the Ready pods of its namespace that mount its service Secret
//! (or, with `propagation.consumerSelector`, the Ready pods with those labels), and the
//! `tokens.json` generation each serves, asked on its metrics port (`GET /generation`, no
//! credentials: the port serves metrics and this, never a digest or a value).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::Result;
use crate::crd::{ConsumerStatus, Vx11TokenSet};
use crate::plan::Acknowledged;

/// The metrics port of a container that does not name one `metrics` (`VX11_METRICS_ADDR`'s
/// default).
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// How long a pod may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// A consumer pod and where it reports what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub pod: String,
    /// `http://<pod IP>:<port>/generation`, one per container with a metrics port.
    pub urls: Vec<String>,
}

/// What a consumer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub pod: String,
    /// The lowest generation its containers serve; `None` when one did not answer.
    pub generation: Option<u64>,
    /// Why it did not answer.
    pub detail: Option<String>,
}

/// The consumers of `ts`, from the pods of its namespace.
pub async fn find(client: &Client, ts: &Vx11TokenSet) -> Result<Vec<Consumer>> {
    let namespace = ts.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = ts
        .spec
        .propagation
        .as_ref()
        .and_then(|p| p.consumer_selector.as_ref());
    let params = match selector {
        Some(s) => ListParams::default().labels(
            &s.match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        None => ListParams::default(),
    };
    let list = pods.list(&params).await?;
    let mut consumers: Vec<Consumer> = list
        .items
        .iter()
        .filter(|pod| selector.is_some() || mounts(pod, &ts.spec.secret_name))
        .filter_map(consumer)
        .collect();
    consumers.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(consumers)
}

/// Whether `pod` mounts Secret `secret` as a volume (directly or projected).
pub fn mounts(pod: &Pod, secret: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
                || v.projected.as_ref().is_some_and(|p| {
                    p.sources.iter().flatten().any(|source| {
                        source
                            .secret
                            .as_ref()
                            .is_some_and(|s| s.name.as_str() == secret)
                    })
                })
        })
}

/// `pod` as a consumer, if it is serving: Ready, not being deleted, with an address.
pub fn consumer(pod: &Pod) -> Option<Consumer> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    let mut ports: Vec<u16> = containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.name.as_deref() == Some("metrics"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    if ports.is_empty() {
        ports.push(DEFAULT_METRICS_PORT);
    }
    ports.sort_unstable();
    ports.dedup();
    Some(Consumer {
        pod: pod.name_any(),
        urls: ports
            .iter()
            .map(|port| format!("http://{host}:{port}/generation"))
            .collect(),
    })
}

/// Asks every consumer, all at once, each bounded by [`ASK_TIMEOUT`].
pub async fn ask(http: &reqwest::Client, consumers: &[Consumer]) -> Vec<Report> {
    futures::future::join_all(consumers.iter().map(|c| ask_one(http, c))).await
}

async fn ask_one(http: &reqwest::Client, consumer: &Consumer) -> Report {
    let mut lowest: Option<u64> = None;
    for url in &consumer.urls {
        match served(http, url).await {
            Ok(generation) => lowest = Some(lowest.map_or(generation, |l| l.min(generation))),
            Err(detail) => {
                return Report {
                    pod: consumer.pod.clone(),
                    generation: None,
                    detail: Some(detail),
                };
            }
        }
    }
    Report {
        pod: consumer.pod.clone(),
        generation: lowest,
        detail: None,
    }
}

async fn served(http: &reqwest::Client, url: &str) -> Result<u64, String> {
    let response = http
        .get(url)
        .timeout(ASK_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| {
        format!(
            "{url}: not the vx11 /generation answer: {}",
            without_url(&e)
        )
    })?;
    body.get("generation")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("{url}: serves no tokens.json (no generation)"))
}

fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    match last {
        Some(root) => format!("{kind} ({root})"),
        None => kind.to_owned(),
    }
}

/// What publication may rely on: every consumer's generation, or everyone when there is
/// nobody to wait for (or staging is off).
pub fn acknowledged(staged: bool, reports: &[Report]) -> Acknowledged {
    if !staged || reports.is_empty() {
        return Acknowledged::Everyone;
    }
    Acknowledged::UpTo(
        reports
            .iter()
            .map(|r| r.generation.unwrap_or(0))
            .min()
            .unwrap_or(0),
    )
}

/// The status of each consumer against the set's current generation, and `synced/total`.
pub fn statuses(reports: &[Report], generation: u64) -> (Vec<ConsumerStatus>, String) {
    let list: Vec<ConsumerStatus> = reports
        .iter()
        .map(|r| {
            let synced = r.generation.is_some_and(|g| g >= generation);
            ConsumerStatus {
                pod: r.pod.clone(),
                generation: r.generation,
                state: if synced { "Synced" } else { "Stale" }.to_owned(),
                detail: r.detail.clone(),
            }
        })
        .collect();
    let synced = list.iter().filter(|c| c.state == "Synced").count();
    let summary = format!("{synced}/{}", list.len());
    (list, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn gateway(ready: &str, secret: &str) -> Pod {
        pod(json!({
            "metadata": {"name": "gw-1"},
            "spec": {
                "containers": [{"name": "gateway", "ports": [
                    {"name": "http", "containerPort": 8000},
                    {"name": "metrics", "containerPort": 9091}]}],
                "volumes": [{"name": "tokens", "secret": {"secretName": secret}}]
            },
            "status": {"podIP": "10.88.0.7",
                "conditions": [{"type": "Ready", "status": ready}]}
        }))
    }

    #[test]
    fn a_ready_pod_mounting_the_secret_is_a_consumer_on_its_metrics_port() {
        let p = gateway("True", "vx11-tokens");
        assert!(mounts(&p, "vx11-tokens"));
        assert!(!mounts(&p, "other"));
        assert_eq!(
            consumer(&p),
            Some(Consumer {
                pod: "gw-1".into(),
                urls: vec!["http://10.88.0.7:9091/generation".into()]
            })
        );
        assert_eq!(consumer(&gateway("False", "vx11-tokens")), None);
    }

    #[test]
    fn a_projected_mount_counts_and_the_default_port_is_used_without_a_named_one() {
        let p = pod(json!({
            "metadata": {"name": "b"},
            "spec": {"containers": [{"name": "c"}],
                "volumes": [{"name": "t", "projected": {"sources": [
                    {"secret": {"name": "vx11-tokens"}}]}}]},
            "status": {"podIP": "fd00::5", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        assert!(mounts(&p, "vx11-tokens"));
        assert_eq!(
            consumer(&p).unwrap().urls,
            ["http://[fd00::5]:9090/generation"]
        );
    }

    #[test]
    fn publication_waits_for_the_slowest_consumer_and_not_for_nobody() {
        let report = |pod: &str, generation| Report {
            pod: pod.into(),
            generation,
            detail: None,
        };
        assert_eq!(acknowledged(true, &[]), Acknowledged::Everyone);
        let reports = [report("a", Some(8)), report("b", Some(7))];
        assert_eq!(acknowledged(true, &reports), Acknowledged::UpTo(7));
        assert_eq!(acknowledged(false, &reports), Acknowledged::Everyone);
        let silent = [report("a", Some(8)), report("b", None)];
        assert_eq!(acknowledged(true, &silent), Acknowledged::UpTo(0));
        let (list, summary) = statuses(&reports, 8);
        assert_eq!(summary, "1/2");
        assert_eq!(
            (list[0].state.as_str(), list[1].state.as_str()),
            ("Synced", "Stale")
        );
    }
}
