//! The `status` of a set, from its plan. Deterministic for an unchanged plan (times come
//! from the record and the previous condition), so an idle set causes no status writes.

use chrono::{DateTime, Utc};
use kube::Resource;
use vx11_tokenset::TokenState;

use crate::crd::{Condition, ConsumerStatus, TokenStatus, Vx11TokenSet, Vx11TokenSetStatus};
use crate::plan::Plan;

/// The `Propagated` condition's reasons.
pub const SYNCED: &str = "Synced";
pub const PROPAGATING: &str = "Propagating";
pub const STALE_CONSUMERS: &str = "StaleConsumers";

pub fn condition<'s>(status: &'s Vx11TokenSetStatus, type_: &str) -> Option<&'s Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

pub fn ready_condition(status: &Vx11TokenSetStatus) -> Option<&Condition> {
    condition(status, "Ready")
}

pub fn ready_changed(previous: &Vx11TokenSetStatus, next: &Vx11TokenSetStatus) -> bool {
    let key = |s: &Vx11TokenSetStatus| {
        ready_condition(s).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    key(previous) != key(next)
}

/// What the consumers serve, for the status: each pod, `synced/total`, and the `Propagated`
/// condition's status, reason and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pub consumers: Vec<ConsumerStatus>,
    pub synced: String,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Propagation {
    /// `timeout`: how long a staged value may wait before its stale consumers are reported.
    pub fn of(
        plan: &Plan,
        consumers: Vec<ConsumerStatus>,
        synced: String,
        now: DateTime<Utc>,
        timeout: chrono::Duration,
    ) -> Self {
        let generation = plan.record.generation;
        let stale: Vec<String> = consumers
            .iter()
            .filter(|c| c.state != "Synced")
            .map(|c| match (&c.generation, &c.detail) {
                (_, Some(detail)) => format!("{} ({detail})", c.pod),
                (Some(g), None) => format!("{} (serves generation {g})", c.pod),
                (None, None) => format!("{} (serves no generation)", c.pod),
            })
            .collect();
        let overdue: Vec<String> = plan
            .waiting
            .iter()
            .filter(|w| now >= w.stage.since + timeout)
            .map(|w| format!("token {} ({})", w.name, w.fingerprint))
            .collect();
        let waiting: Vec<String> = plan
            .waiting
            .iter()
            .map(|w| format!("token {} ({})", w.name, w.fingerprint))
            .collect();
        let (status, reason, message) = if !overdue.is_empty() {
            (
                "False",
                STALE_CONSUMERS,
                format!(
                    "{} staged longer than propagation.timeout and not published: consumers that do not serve generation {generation}: {}",
                    overdue.join(", "),
                    stale.join(", ")
                ),
            )
        } else if !waiting.is_empty() {
            (
                "False",
                PROPAGATING,
                format!(
                    "{} staged, published once every consumer serves generation {generation} ({synced} do)",
                    waiting.join(", ")
                ),
            )
        } else if !stale.is_empty() {
            (
                "False",
                PROPAGATING,
                format!(
                    "{synced} consumers serve generation {generation}; not yet: {}",
                    stale.join(", ")
                ),
            )
        } else if consumers.is_empty() {
            ("True", SYNCED, "no consumer pods".to_owned())
        } else {
            (
                "True",
                SYNCED,
                format!("{synced} consumers serve generation {generation}"),
            )
        };
        Self {
            consumers,
            synced,
            status,
            reason,
            message,
        }
    }
}

/// The status for `plan`. Deterministic for an unchanged plan (times come from the record
/// and the previous condition), so an idle set causes no status writes either.
pub fn desired_status(
    ts: &Vx11TokenSet,
    plan: &Plan,
    propagation: &Propagation,
    now: DateTime<Utc>,
) -> Vx11TokenSetStatus {
    let previous = ts.status.clone().unwrap_or_default();
    let (status, reason, message) = match plan.problems.first() {
        None => (
            "True",
            "Reconciled",
            format!("{} tokens served", ts.spec.tokens.len()),
        ),
        Some(first) => (
            "False",
            first.kind.reason(),
            plan.problems
                .iter()
                .map(|p| p.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let mut out = condition_status(ts, &previous, status, reason, message, now, Some(plan));
    out.conditions.push(Condition {
        type_: "Propagated".into(),
        status: propagation.status.into(),
        reason: propagation.reason.into(),
        message: propagation.message.clone(),
        last_transition_time: condition(&previous, "Propagated")
            .filter(|c| c.status == propagation.status)
            .map_or(now, |c| c.last_transition_time),
        observed_generation: ts.meta().generation,
    });
    out.consumers = propagation.consumers.clone();
    out.synced = Some(propagation.synced.clone());
    out
}

pub fn condition_status(
    ts: &Vx11TokenSet,
    previous: &Vx11TokenSetStatus,
    status: &str,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
    plan: Option<&Plan>,
) -> Vx11TokenSetStatus {
    let last_transition_time = ready_condition(previous)
        .filter(|c| c.status == status)
        .map_or(now, |c| c.last_transition_time);
    let ready = Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: ts.meta().generation,
    };
    let mut out = match plan {
        Some(plan) => Vx11TokenSetStatus {
            generation: Some(plan.record.generation),
            token_count: u32::try_from(
                plan.record
                    .tokens
                    .iter()
                    .filter(|e| e.state == TokenState::Active)
                    .count(),
            )
            .unwrap_or(u32::MAX),
            tokens: plan
                .record
                .tokens
                .iter()
                .map(|e| TokenStatus {
                    name: e.name.clone(),
                    fingerprint: e.sha256.fingerprint().to_string(),
                    state: e.state.as_str().to_owned(),
                    issued_at: e.not_before,
                    expires_at: e.expires_at,
                })
                .collect(),
            last_rotation_time: plan.record.last_rotation,
            next_rotation_time: plan.next_rotation,
            rotate_handled: plan.record.rotate_handled.clone(),
            token_rotate_handled: plan.record.token_rotate_handled.clone(),
            ..Vx11TokenSetStatus::default()
        },
        None => previous.clone(),
    };
    // Without a plan (a conflict), what was known of the propagation stays.
    let propagated = condition(previous, "Propagated").filter(|_| plan.is_none());
    out.conditions = std::iter::once(ready).chain(propagated.cloned()).collect();
    out.observed_generation = ts.meta().generation;
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use vx11_tokenset::TokenValue;

    use super::*;
    use crate::plan::{Input, plan};
    use crate::state::Observed;

    fn set() -> Vx11TokenSet {
        let mut ts = Vx11TokenSet::new(
            "main",
            serde_json::from_value(json!({
                "secretName": "svc", "clientSecretName": "client",
                "tokens": [{"name": "operator", "generate": {}}],
                "rotation": {"every": "1h", "gracePeriod": "1m"},
            }))
            .unwrap(),
        );
        ts.metadata.generation = Some(3);
        ts
    }

    #[test]
    fn status_is_stable_for_an_unchanged_plan_and_names_no_value() {
        let mut ts = set();
        let t0: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let observed = Observed::default();
        let sources = BTreeMap::new();
        let requests = BTreeMap::new();
        let input = Input {
            spec: &ts.spec,
            rotate_request: None,
            token_rotate_requests: &requests,
            acknowledged: crate::plan::Acknowledged::Everyone,
            observed: &observed,
            sources: &sources,
            now: t0,
        };
        let plan = plan(&input, &mut TokenValue::generate).unwrap();
        let propagation = Propagation::of(
            &plan,
            Vec::new(),
            "0/0".into(),
            t0,
            chrono::Duration::minutes(5),
        );
        assert_eq!((propagation.status, propagation.reason), ("True", SYNCED));
        let first = desired_status(&ts, &plan, &propagation, t0);
        let ready = ready_condition(&first).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Reconciled")
        );
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!(first.generation, Some(1));
        assert_eq!(first.token_count, 1);
        assert_eq!(
            first.next_rotation_time,
            Some(t0 + chrono::Duration::hours(1))
        );
        let value = plan.client_values["operator"].expose().to_owned();
        assert!(!serde_json::to_string(&first).unwrap().contains(&value));

        // Later, same plan: identical status (the transition time is kept): no write.
        ts.status = Some(first.clone());
        let later = desired_status(&ts, &plan, &propagation, t0 + chrono::Duration::minutes(5));
        assert_eq!(later, first);
        assert!(!ready_changed(&first, &later));
    }
}
