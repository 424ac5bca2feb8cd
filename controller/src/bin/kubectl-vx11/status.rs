//! `kubectl vx11 status`: pure rendering of token sets (a table of sets; one set's
//! conditions, tokens and consumer pods; JSON), and the command that fetches and prints.
//! A status never holds a token value, and nothing here reads a Secret.

use chrono::{DateTime, SecondsFormat, Utc};
use vx11_controller::crd::{Condition, Vx11TokenSet, Vx11TokenSetStatus};

use crate::cli::{Output, StatusArgs};
use crate::connect::Target;
use crate::error::Result;
use crate::{sets, table};

pub async fn run(target: &Target, args: &StatusArgs) -> Result<String> {
    match &args.set {
        Some(name) => {
            let set = sets::get(target, name).await?;
            Ok(match args.output {
                Output::Table => render_set(&set),
                Output::Json => json_set(&set),
            })
        }
        None => {
            let list = sets::list(target).await?;
            Ok(match args.output {
                Output::Table if list.is_empty() => format!(
                    "No Vx11TokenSets in namespace {}; another namespace: `kubectl vx11 status -n NAMESPACE`.\n",
                    target.namespace
                ),
                Output::Table => render_list(&list),
                Output::Json => json_list(&list),
            })
        }
    }
}

/// The condition of `type_`, if the controller reported it.
pub fn condition<'a>(set: &'a Vx11TokenSet, type_: &str) -> Option<&'a Condition> {
    set.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn time(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// One line per set: NAME READY PROPAGATED SYNCED GENERATION TOKENS NEXT-ROTATION.
pub fn render_list(sets: &[Vx11TokenSet]) -> String {
    let rows: Vec<Vec<String>> = sets
        .iter()
        .map(|set| {
            let status = set.status.as_ref();
            vec![
                set.metadata.name.clone().unwrap_or_default(),
                or_dash(condition(set, "Ready").map(|c| &c.status)),
                or_dash(condition(set, "Propagated").map(|c| &c.status)),
                or_dash(status.and_then(|s| s.synced.as_ref())),
                or_dash(status.and_then(|s| s.generation)),
                or_dash(status.map(|s| s.token_count)),
                time(status.and_then(|s| s.next_rotation_time.as_ref())),
            ]
        })
        .collect();
    table::render(
        &[
            "NAME",
            "READY",
            "PROPAGATED",
            "SYNCED",
            "GENERATION",
            "TOKENS",
            "NEXT-ROTATION",
        ],
        &rows,
    )
}

/// One set: a header, its conditions, its tokens (fingerprints) and its consumer pods.
pub fn render_set(set: &Vx11TokenSet) -> String {
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = format!(
        "Vx11TokenSet {namespace}/{name}\nSecrets:      {} (digests, for the services), {} (published values, for clients)\n",
        set.spec.secret_name, set.spec.client_secret_name
    );
    let Some(status) = set.status.as_ref() else {
        out.push_str(
            "\nNo status yet: the controller has not reconciled this set. Is vx11-controller running? \
             (`kubectl get pods -A -l app.kubernetes.io/name=vx11-controller`)\n",
        );
        return out;
    };
    out.push_str(&header(set, status));

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  (none reported yet)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        ));
    }

    out.push_str("\nTokens:\n");
    if status.tokens.is_empty() {
        out.push_str("  (no accepted value)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .tokens
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.fingerprint.clone(),
                    t.state.clone(),
                    time(t.issued_at.as_ref()),
                    time(t.expires_at.as_ref()),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["NAME", "FINGERPRINT", "STATE", "ISSUED", "EXPIRES"],
            &rows,
        ));
    }

    out.push_str(&consumers(set, status));
    out
}

fn header(set: &Vx11TokenSet, status: &Vx11TokenSetStatus) -> String {
    let mut out = format!(
        "Generation:   tokens.json {}; spec {}",
        or_dash(status.generation),
        or_dash(set.metadata.generation),
    );
    match (status.observed_generation, set.metadata.generation) {
        (Some(observed), Some(current)) if observed != current => out.push_str(&format!(
            " (the controller last described spec {observed}; it has not caught up yet)"
        )),
        _ => {}
    }
    out.push('\n');
    let rotation = set.spec.rotation.as_ref();
    let every = rotation
        .and_then(|r| r.every.as_deref())
        .map_or_else(|| "on request only".to_owned(), |e| format!("every {e}"));
    let grace = rotation.map_or(vx11_controller::crd::DEFAULT_GRACE_PERIOD, |r| {
        r.grace_period.as_str()
    });
    out.push_str(&format!(
        "Rotation:     {every}, grace period {grace}; last {}, next {}\n",
        time(status.last_rotation_time.as_ref()),
        time(status.next_rotation_time.as_ref()),
    ));
    out
}

fn consumers(set: &Vx11TokenSet, status: &Vx11TokenSetStatus) -> String {
    let synced = status
        .synced
        .as_deref()
        .map(|s| format!(" ({s} synced)"))
        .unwrap_or_default();
    let mut out = format!("\nConsumers{synced}:\n");
    if status.consumers.is_empty() {
        let propagation = set.spec.propagation.clone().unwrap_or_default();
        let why = if !propagation.staged {
            "propagation.staged is false: new values are published at once".to_owned()
        } else if propagation.consumer_selector.is_some() {
            "no Ready pod matches propagation.consumerSelector".to_owned()
        } else {
            format!(
                "no Ready pod in this namespace mounts Secret {}",
                set.spec.secret_name
            )
        };
        out.push_str(&format!("  (no consumer pods: {why})\n"));
        return out;
    }
    let current = status.generation;
    let rows: Vec<Vec<String>> = status
        .consumers
        .iter()
        .map(|c| {
            let detail = match (&c.detail, c.generation, current) {
                (Some(detail), _, _) => detail.clone(),
                (None, Some(served), Some(current)) if served != current => {
                    format!("serves generation {served}, current is {current}")
                }
                _ => String::new(),
            };
            vec![
                c.pod.clone(),
                or_dash(c.generation),
                c.state.to_uppercase(),
                detail,
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["POD", "GENERATION", "STATUS", "DETAIL"],
        &rows,
    ));
    out
}

/// The set's `.status` as pretty JSON (`{}` before the controller wrote one).
pub fn json_set(set: &Vx11TokenSet) -> String {
    let status = set.status.clone().unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&status).unwrap_or_default();
    text.push('\n');
    text
}

/// Every set as `{name, namespace, status}`, pretty JSON.
pub fn json_list(sets: &[Vx11TokenSet]) -> String {
    #[derive(serde::Serialize)]
    struct Item<'a> {
        name: Option<&'a str>,
        namespace: Option<&'a str>,
        status: Vx11TokenSetStatus,
    }
    let items: Vec<Item<'_>> = sets
        .iter()
        .map(|set| Item {
            name: set.metadata.name.as_deref(),
            namespace: set.metadata.namespace.as_deref(),
            status: set.status.clone().unwrap_or_default(),
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&items).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::sets::tests::sample;
    use vx11_controller::crd::{ConsumerStatus, TokenStatus};

    pub fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: at("2026-05-01T10:00:00Z"),
            observed_generation: Some(3),
        }
    }

    pub fn token(name: &str, fingerprint: &str, state: &str) -> TokenStatus {
        TokenStatus {
            name: name.into(),
            fingerprint: fingerprint.into(),
            state: state.into(),
            issued_at: Some(at("2026-05-01T10:00:00Z")),
            expires_at: (state == "retiring").then(|| at("2026-05-01T10:10:00Z")),
        }
    }

    /// `sample()` mid-rotation: `operator` staged, two consumers of which one is stale.
    pub fn rotating() -> Vx11TokenSet {
        let mut set = sample();
        set.status = Some(Vx11TokenSetStatus {
            conditions: vec![
                condition("Ready", "True", "Reconciled", ""),
                condition(
                    "Propagated",
                    "False",
                    "StaleConsumers",
                    "1 of 2 consumer pods serve an older generation: gateway-7d9f-b",
                ),
            ],
            observed_generation: Some(3),
            generation: Some(8),
            token_count: 3,
            tokens: vec![
                token("operator", "sha256:111111111111", "staged"),
                token("operator", "sha256:222222222222", "active"),
                token("operator", "sha256:333333333333", "retiring"),
                token("gateway", "sha256:444444444444", "active"),
                token("ci", "sha256:555555555555", "active"),
            ],
            last_rotation_time: Some(at("2026-05-01T10:00:00Z")),
            next_rotation_time: Some(at("2026-05-02T10:00:00Z")),
            synced: Some("1/2".into()),
            consumers: vec![
                ConsumerStatus {
                    pod: "gateway-7d9f-a".into(),
                    generation: Some(8),
                    state: "Synced".into(),
                    detail: None,
                },
                ConsumerStatus {
                    pod: "gateway-7d9f-b".into(),
                    generation: Some(7),
                    state: "Stale".into(),
                    detail: None,
                },
                ConsumerStatus {
                    pod: "backend-5c4-x".into(),
                    generation: None,
                    state: "Stale".into(),
                    detail: Some("no answer on :8001/ready: connection refused".into()),
                },
            ],
            rotate_handled: Some("r1".into()),
            token_rotate_handled: Default::default(),
        });
        set
    }

    #[test]
    fn lists_sets() {
        let mut fresh = sample();
        fresh.metadata.name = Some("new".into());
        let text = render_list(&[rotating(), fresh]);
        assert_eq!(
            text,
            "\
NAME   READY   PROPAGATED   SYNCED   GENERATION   TOKENS   NEXT-ROTATION
vx11   True    False        1/2      8            3        2026-05-02T10:00:00Z
new    -       -            -        -            -        -
"
        );
    }

    #[test]
    fn shows_one_set_with_staged_active_retiring_and_stale_consumers() {
        let text = render_set(&rotating());
        let expected = "\
Vx11TokenSet vx11/vx11
Secrets:      vx11-tokens (digests, for the services), vx11-client-tokens (published values, for clients)
Generation:   tokens.json 8; spec 3
Rotation:     on request only, grace period 10m; last 2026-05-01T10:00:00Z, next 2026-05-02T10:00:00Z

Conditions:
TYPE         STATUS   REASON           MESSAGE
Ready        True     Reconciled
Propagated   False    StaleConsumers   1 of 2 consumer pods serve an older generation: gateway-7d9f-b

Tokens:
NAME       FINGERPRINT           STATE      ISSUED                 EXPIRES
operator   sha256:111111111111   staged     2026-05-01T10:00:00Z   -
operator   sha256:222222222222   active     2026-05-01T10:00:00Z   -
operator   sha256:333333333333   retiring   2026-05-01T10:00:00Z   2026-05-01T10:10:00Z
gateway    sha256:444444444444   active     2026-05-01T10:00:00Z   -
ci         sha256:555555555555   active     2026-05-01T10:00:00Z   -

Consumers (1/2 synced):
POD              GENERATION   STATUS   DETAIL
gateway-7d9f-a   8            SYNCED
gateway-7d9f-b   7            STALE    serves generation 7, current is 8
backend-5c4-x    -            STALE    no answer on :8001/ready: connection refused
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn shows_a_set_without_consumers() {
        let mut set = rotating();
        let status = set.status.as_mut().unwrap();
        status.consumers.clear();
        status.synced = Some("0/0".into());
        let text = render_set(&set);
        assert!(
            text.ends_with(
                "\nConsumers (0/0 synced):\n  (no consumer pods: no Ready pod in this namespace mounts Secret vx11-tokens)\n"
            ),
            "{text}"
        );

        set.spec.propagation = Some(vx11_controller::crd::PropagationSpec {
            staged: false,
            ..Default::default()
        });
        assert!(render_set(&set).contains("propagation.staged is false"));
    }

    #[test]
    fn shows_a_set_the_controller_has_not_seen() {
        let mut set = sample();
        let text = render_set(&set);
        assert!(text.contains("No status yet"), "{text}");
        assert_eq!(
            json_set(&set).trim(),
            serde_json::to_string_pretty(&Vx11TokenSetStatus::default()).unwrap()
        );

        set.status = Some(Vx11TokenSetStatus {
            observed_generation: Some(2),
            ..Default::default()
        });
        let text = render_set(&set);
        assert!(
            text.contains("spec 3 (the controller last described spec 2"),
            "{text}"
        );
        assert!(text.contains("(none reported yet)"), "{text}");
        assert!(text.contains("(no accepted value)"), "{text}");
    }

    #[test]
    fn json_is_the_status() {
        let set = rotating();
        let value: serde_json::Value = serde_json::from_str(&json_set(&set)).unwrap();
        assert_eq!(value["synced"], "1/2");
        assert_eq!(value["tokens"][0]["state"], "staged");
        assert_eq!(value["consumers"][1]["state"], "Stale");
        let list: serde_json::Value = serde_json::from_str(&json_list(&[set])).unwrap();
        assert_eq!(list[0]["name"], "vx11");
        assert_eq!(list[0]["namespace"], "vx11");
        assert_eq!(list[0]["status"]["generation"], 8);
    }
}
