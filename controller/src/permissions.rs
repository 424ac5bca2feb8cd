//! RBAC preflight: before it starts, the controller asks the API server (through
//! SelfSubjectAccessReviews, which every authenticated user may create) whether it holds each
//! permission it uses, and refuses to start with a message naming the first one missing.
//! Without it a missing rule shows up later as a watch that retries forever.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::config::Settings;
use crate::{Error, Result};

/// One permission the controller uses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub verb: &'static str,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub why: &'static str,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        write!(f, "cannot `{}` {}", self.verb, self.resource)?;
        if let Some(sub) = self.subresource {
            write!(f, "/{sub}")?;
        }
        write!(f, " (API group {group})")?;
        if let Some(name) = &self.name {
            write!(f, " named {name}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}")?,
            None => write!(f, " in all namespaces")?,
        }
        write!(f, ", needed to {}", self.why)
    }
}

/// Every permission the controller uses with `settings`.
pub fn needs(settings: &Settings) -> Vec<Need> {
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let mut out = Vec::new();
    for ns in scopes {
        let mut add = |group, resource, subresource, verb, why| {
            out.push(Need {
                group,
                resource,
                subresource,
                verb,
                namespace: ns.clone(),
                name: None,
                why,
            });
        };
        for verb in ["list", "watch"] {
            add(
                "vx11.dev",
                "vx11tokensets",
                None,
                verb,
                "watch Vx11TokenSets",
            );
        }
        add(
            "vx11.dev",
            "vx11tokensets",
            Some("status"),
            "patch",
            "report status",
        );
        for verb in ["get", "list", "watch"] {
            add(
                "",
                "secrets",
                None,
                verb,
                "read and watch the Secrets it writes and the Secrets that tokens reference",
            );
        }
        for verb in ["create", "patch"] {
            add(
                "",
                "secrets",
                None,
                verb,
                "write the service and client Secrets",
            );
        }
        add("events.k8s.io", "events", None, "create", "record events");
        add(
            "",
            "pods",
            None,
            "list",
            "find the consumer pods that must serve a staged value before it is published",
        );
    }
    if let Some(lease) = &settings.leader_election {
        out.push(Need {
            group: "coordination.k8s.io",
            resource: "leases",
            subresource: None,
            verb: "create",
            namespace: Some(lease.namespace.clone()),
            name: None,
            why: "create the leader-election Lease",
        });
        for verb in ["get", "update"] {
            out.push(Need {
                group: "coordination.k8s.io",
                resource: "leases",
                subresource: None,
                verb,
                namespace: Some(lease.namespace.clone()),
                name: Some(lease.name.clone()),
                why: "hold the leader-election Lease",
            });
        }
    }
    out
}

/// Fails with [`Error::Forbidden`] naming every permission the API server denies.
pub async fn check(client: &Client, needs: &[Need]) -> Result<()> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for need in needs {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(need.group.to_owned()),
                    resource: Some(need.resource.to_owned()),
                    subresource: need.subresource.map(str::to_owned),
                    verb: Some(need.verb.to_owned()),
                    namespace: need.namespace.clone(),
                    name: need.name.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::Kube)?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(need.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{}; grant it in the controller's ClusterRole/Role (charts/vx11/templates/controller-rbac.yaml)",
            missing.join("; ")
        )))
    }
}
