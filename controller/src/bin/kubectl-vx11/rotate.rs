//! `kubectl vx11 rotate`: the rotation request (a merge patch of one annotation to a fresh
//! value), and `--wait`'s predicate: the controller acted on that value and published it.

use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Patch, PatchParams};
use vx11_controller::crd::Vx11TokenSet;
use vx11_controller::state::{ROTATE_ANNOTATION, TOKEN_ROTATE_ANNOTATION_PREFIX};

use crate::cli::RotateArgs;
use crate::connect::Target;
use crate::error::{Error, Result};
use crate::sets::{self, Lookup};
use crate::{table, wait};

/// What a request rotates: every generated token, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Token(String),
}

impl Scope {
    /// The annotation that requests it: `vx11.dev/rotate` or `rotate.vx11.dev/<token>`.
    pub fn annotation(&self) -> String {
        match self {
            Scope::All => ROTATE_ANNOTATION.to_owned(),
            Scope::Token(name) => format!("{TOKEN_ROTATE_ANNOTATION_PREFIX}{name}"),
        }
    }

    fn covers(&self, token: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Token(name) => name == token,
        }
    }

    /// The value of this scope's annotation the controller last acted on.
    fn handled<'a>(&self, set: &'a Vx11TokenSet) -> Option<&'a str> {
        let status = set.status.as_ref()?;
        match self {
            Scope::All => status.rotate_handled.as_deref(),
            Scope::Token(name) => status.token_rotate_handled.get(name).map(String::as_str),
        }
    }
}

/// Checks that the request can be honoured: `--token` must name a generated token of the
/// spec; a whole-set rotation needs at least one generated token. Returns the token names.
pub fn scope(set: &Vx11TokenSet, token: Option<&str>) -> Result<(Scope, Vec<String>)> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    match token {
        Some(name) => match sets::lookup(set, name)? {
            Lookup::Generated(_) => Ok((Scope::Token(name.to_owned()), vec![name.to_owned()])),
            Lookup::SecretRef(reference) => Err(Error::Refused(format!(
                "token {name} of Vx11TokenSet {namespace}/{set_name} comes from your Secret {namespace}/{} (key {}), so it cannot be rotated by request: \
                 put a new value in that Secret and the controller follows it (the old value keeps its grace period)",
                reference.name, reference.key
            ))),
        },
        None => {
            let names = sets::generated_names(set);
            if names.is_empty() {
                return Err(Error::Refused(format!(
                    "Vx11TokenSet {namespace}/{set_name} has no generated token (every token is a secretRef), so there is nothing to rotate: \
                     change the referenced Secrets instead"
                )));
            }
            Ok((Scope::All, names))
        }
    }
}

/// A fresh, unique request value: the time (RFC 3339, milliseconds) and 8 random hex digits.
pub fn request_value(now: DateTime<Utc>, random: u32) -> String {
    format!(
        "{}-{random:08x}",
        now.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

/// 32 random bits; `RandomState` is seeded from the OS's randomness. Uniqueness, not secrecy,
/// is what a request value needs.
fn random_u32() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::process::id().into());
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    (hasher.finish() & u64::from(u32::MAX)) as u32
}

/// The merge patch that sets `annotation` to `value`, touching nothing else.
pub fn patch(annotation: &str, value: &str) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { annotation: value } } })
}

/// How far the controller got with the request `value` of `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The status does not describe the current spec (`observedGeneration`).
    SpecNotObserved,
    /// The controller has not acted on `value` yet.
    NotHandled,
    /// Acted on; these new values wait to be published (consumer pods catching up).
    Staged(Vec<String>),
    /// Acted on and published: no value of the scope is staged.
    Published,
}

/// `--wait`'s predicate: the controller acted on `value` (`status.rotateHandled`, or
/// `status.tokenRotateHandled[token]`), the status is for the current spec, and no token of
/// the scope is `staged`.
pub fn progress(set: &Vx11TokenSet, scope: &Scope, value: &str) -> Progress {
    let Some(status) = set.status.as_ref() else {
        return Progress::SpecNotObserved;
    };
    if status.observed_generation.is_none() || status.observed_generation != set.metadata.generation
    {
        return Progress::SpecNotObserved;
    }
    if scope.handled(set) != Some(value) {
        return Progress::NotHandled;
    }
    let staged: Vec<String> = status
        .tokens
        .iter()
        .filter(|t| t.state == "staged" && scope.covers(&t.name))
        .map(|t| format!("{} {}", t.name, t.fingerprint))
        .collect();
    if staged.is_empty() {
        Progress::Published
    } else {
        Progress::Staged(staged)
    }
}

impl Progress {
    pub fn is_published(&self) -> bool {
        *self == Progress::Published
    }
}

/// The active fingerprint of each of `names`.
pub fn active_fingerprints(set: &Vx11TokenSet, names: &[String]) -> Vec<(String, String)> {
    let tokens = set
        .status
        .as_ref()
        .map(|s| s.tokens.as_slice())
        .unwrap_or_default();
    names
        .iter()
        .map(|name| {
            let fingerprint = tokens
                .iter()
                .find(|t| &t.name == name && t.state == "active")
                .map_or_else(|| "-".to_owned(), |t| t.fingerprint.clone());
            (name.clone(), fingerprint)
        })
        .collect()
}

/// The table printed once published: each token's new fingerprint and the one it replaced.
pub fn render_published(before: &[(String, String)], after: &[(String, String)]) -> String {
    let rows: Vec<Vec<String>> = after
        .iter()
        .map(|(name, fingerprint)| {
            let previous = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or("-", |(_, f)| f.as_str());
            vec![name.clone(), fingerprint.clone(), previous.to_owned()]
        })
        .collect();
    table::render(&["NAME", "FINGERPRINT", "PREVIOUS"], &rows)
}

fn describe(progress: &Progress, value: &str) -> String {
    match progress {
        Progress::SpecNotObserved => {
            "the controller has not reconciled the current spec yet (status.observedGeneration)"
                .to_owned()
        }
        Progress::NotHandled => format!("the controller has not acted on request {value} yet"),
        Progress::Staged(values) => format!(
            "new value staged, waiting for the consumer pods before it is published: {}",
            values.join(", ")
        ),
        Progress::Published => "published".to_owned(),
    }
}

pub async fn run(target: &Target, args: &RotateArgs) -> Result<String> {
    let set = sets::get(target, &args.set).await?;
    let (scope, names) = scope(&set, args.token.as_deref())?;
    let annotation = scope.annotation();
    let value = request_value(Utc::now(), random_u32());
    let before = active_fingerprints(&set, &names);

    let started = Instant::now();
    sets::api(target)
        .patch(
            &args.set,
            &PatchParams::default(),
            &Patch::Merge(patch(&annotation, &value)),
        )
        .await
        .map_err(|error| {
            Error::kube(
                format!(
                    "annotating Vx11TokenSet {}/{} with {annotation}",
                    target.namespace, args.set
                ),
                error,
            )
        })?;
    crate::emit(&format!(
        "rotation of {} in Vx11TokenSet {}/{} requested ({annotation}={value})\n",
        names.join(", "),
        target.namespace,
        args.set
    ))?;
    if !args.wait {
        return Ok(format!(
            "the new value is staged, then published once every consumer pod serves it; follow it with `kubectl vx11 status {}` (or rotate with --wait)\n",
            args.set
        ));
    }

    let mut last = None;
    let outcome = wait::poll(target, &args.set, args.timeout, |set| {
        let now = progress(set, &scope, &value);
        if last.as_ref() != Some(&now) && !now.is_published() {
            eprintln!("{}", describe(&now, &value));
        }
        last = Some(now.clone());
        now.is_published().then(|| active_fingerprints(set, &names))
    })
    .await?;
    match outcome {
        Ok(after) => Ok(format!(
            "published after {:.1}s:\n{}",
            started.elapsed().as_secs_f64(),
            render_published(&before, &after)
        )),
        Err(set) => {
            let state = set
                .as_ref()
                .map(|set| describe(&progress(set, &scope, &value), &value))
                .unwrap_or_else(|| "no answer from the API server".to_owned());
            Err(Error::Timeout(format!(
                "rotation of {} not published after {}: {state}{}; see `kubectl vx11 status {}`",
                names.join(", "),
                wait::human(args.timeout),
                set.as_ref().map(wait::stale_consumers).unwrap_or_default(),
                args.set
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::tests::sample;
    use crate::status::tests::{rotating, token};

    #[test]
    fn the_request_is_one_annotation() {
        assert_eq!(Scope::All.annotation(), "vx11.dev/rotate");
        assert_eq!(
            Scope::Token("operator".into()).annotation(),
            "rotate.vx11.dev/operator"
        );
        let value = request_value("2026-05-01T10:00:00.5Z".parse().unwrap(), 0xab);
        assert_eq!(value, "2026-05-01T10:00:00.500Z-000000ab");
        assert_eq!(
            patch("rotate.vx11.dev/operator", &value),
            serde_json::json!({"metadata": {"annotations": {"rotate.vx11.dev/operator": "2026-05-01T10:00:00.500Z-000000ab"}}})
        );
        assert_ne!(random_u32(), random_u32());
    }

    #[test]
    fn only_generated_tokens_of_the_spec_can_be_rotated() {
        let set = sample();
        assert_eq!(
            scope(&set, None).unwrap(),
            (Scope::All, vec!["operator".into(), "gateway".into()])
        );
        assert_eq!(
            scope(&set, Some("gateway")).unwrap(),
            (Scope::Token("gateway".into()), vec!["gateway".into()])
        );
        let error = scope(&set, Some("ci")).unwrap_err().to_string();
        assert!(
            error.contains("Secret vx11/ci-token (key token)"),
            "{error}"
        );
        assert!(error.contains("put a new value in that Secret"), "{error}");
        let error = scope(&set, Some("nope")).unwrap_err().to_string();
        assert!(error.contains("no token named nope"), "{error}");

        let mut only_refs = sample();
        only_refs.spec.tokens.retain(|t| t.secret_ref.is_some());
        let error = scope(&only_refs, None).unwrap_err().to_string();
        assert!(error.contains("nothing to rotate"), "{error}");
    }

    #[test]
    fn published_means_handled_current_and_nothing_staged() {
        let all = Scope::All;
        let mut set = rotating(); // rotateHandled r1, operator staged
        assert_eq!(progress(&set, &all, "r2"), Progress::NotHandled);
        assert_eq!(
            progress(&set, &all, "r1"),
            Progress::Staged(vec!["operator sha256:111111111111".into()])
        );
        assert!(!progress(&set, &all, "r1").is_published());
        // A one-token request for another token is not held by operator's staged value.
        let gateway = Scope::Token("gateway".into());
        set.status
            .as_mut()
            .unwrap()
            .token_rotate_handled
            .insert("gateway".into(), "g1".into());
        assert!(progress(&set, &gateway, "g1").is_published());
        assert!(!progress(&set, &gateway, "g2").is_published());
        assert_eq!(
            progress(&set, &Scope::Token("operator".into()), "g1"),
            Progress::NotHandled
        );

        // Published: the staged value became active, the old active retiring.
        let status = set.status.as_mut().unwrap();
        status.tokens = vec![
            token("operator", "sha256:111111111111", "active"),
            token("operator", "sha256:222222222222", "retiring"),
            token("gateway", "sha256:444444444444", "active"),
        ];
        assert!(progress(&set, &all, "r1").is_published());

        // A status for an older spec does not count.
        set.metadata.generation = Some(4);
        assert_eq!(progress(&set, &all, "r1"), Progress::SpecNotObserved);
        set.status = None;
        assert_eq!(progress(&set, &all, "r1"), Progress::SpecNotObserved);
    }

    #[test]
    fn prints_new_and_previous_fingerprints() {
        let set = rotating();
        let names = vec![
            "operator".to_owned(),
            "gateway".to_owned(),
            "gone".to_owned(),
        ];
        let before = active_fingerprints(&set, &names);
        assert_eq!(before[0].1, "sha256:222222222222");
        assert_eq!(before[2].1, "-");
        let after = vec![("operator".to_owned(), "sha256:111111111111".to_owned())];
        assert_eq!(
            render_published(&before, &after),
            "NAME       FINGERPRINT           PREVIOUS\noperator   sha256:111111111111   sha256:222222222222\n"
        );
    }
}
