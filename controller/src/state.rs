//! All of the controller's state lives in the two Secrets it writes; nothing is kept in memory
//! between reconciles. This module reads that state back ([`observe`]) and builds the Secrets
//! to apply ([`client_secret`], [`service_secret`]). Pure functions: no I/O.
//!
//! The state is a [`Record`]: the token file's entries and generation, the last handled value
//! of the `vx11.dev/rotate` annotation, and the last rotation time. It is written, as the
//! annotation `vx11.dev/record`, on **both** Secrets:
//!
//! 1. the client Secret first, together with the plaintext values that the record's active
//!    digests are digests of;
//! 2. then the service Secret, whose `tokens.json` is the record's projection.
//!
//! So after a crash between the two writes, the client Secret holds a record one step ahead
//! of the service Secret's; [`observe`] takes the newer record, and the next reconcile writes
//! the service Secret from it: the rotation is finished, not repeated, and no value is lost
//! (every active digest that was ever published has its plaintext in the client Secret
//! already). If a person deletes one Secret, the record survives on the other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use vx11_tokenset::{TOKEN_FILE_NAME, TokenEntry, TokenFile, TokenValue};

use crate::MANAGER;
use crate::crd::Vx11TokenSet;
use crate::plan::Cause;

/// Annotation (on both Secrets) holding the [`Record`] as compact JSON: digests, never values.
pub const RECORD_ANNOTATION: &str = "vx11.dev/record";
/// Annotation on a `Vx11TokenSet`: set it to a new value to rotate every generated token once.
pub const ROTATE_ANNOTATION: &str = "vx11.dev/rotate";
/// Annotation prefix on a `Vx11TokenSet`: `rotate.vx11.dev/<token>` set to a new value rotates
/// that generated token once.
pub const TOKEN_ROTATE_ANNOTATION_PREFIX: &str = "rotate.vx11.dev/";
/// Key prefix in the client Secret: `_staged.<token>` holds the plaintext of a staged value
/// until it is published under `<token>` (a token name cannot start with `_`). Clients read
/// only `<token>`.
pub const STAGED_KEY_PREFIX: &str = "_staged.";
/// Labels on both Secrets.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const TOKENSET_LABEL: &str = "vx11.dev/tokenset";
pub const ROLE_LABEL: &str = "vx11.dev/secret-role";
/// Label a Secret must carry, set to [`TOKEN_SOURCE_VALUE`], for a `secretRef` to use it: a
/// set can take its token only from a Secret its owner opted in, never from any Secret of the
/// namespace (a database password, a ServiceAccount token).
pub const TOKEN_SOURCE_LABEL: &str = "vx11.dev/token-source";
pub const TOKEN_SOURCE_VALUE: &str = "true";
/// Selector for the Secrets this controller writes.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=vx11-controller";

/// What the controller remembers about a set, kept in the Secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The `generation` of `tokens.json`.
    pub generation: u64,
    /// The entries of `tokens.json`.
    pub tokens: Vec<TokenEntry>,
    /// The last `vx11.dev/rotate` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_handled: Option<String>,
    /// When a generated token last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<DateTime<Utc>>,
    /// The last `rotate.vx11.dev/<token>` value acted on, by token name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_rotate_handled: BTreeMap<String, String>,
    /// The values staged and not yet published, by token name (their entries are in
    /// `tokens`, state `staged`; a generated one's plaintext is under [`STAGED_KEY_PREFIX`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub staged: BTreeMap<String, Stage>,
    /// When each token's current value was published after a stage: its schedule
    /// (`rotation.every`) counts from then, so a schedule that fell due while the value
    /// waited does not rotate it again at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub published: BTreeMap<String, DateTime<Utc>>,
}

/// A staged value on its way to the clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// The first `tokens.json` generation that holds it: it is published once every
    /// consumer serves this generation or a later one.
    pub generation: u64,
    /// Why it was staged: `None` for a token's first value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// When it was staged.
    pub since: DateTime<Utc>,
}

/// The client Secret's key for the staged plaintext of token `name`.
pub fn staged_key(name: &str) -> String {
    format!("{STAGED_KEY_PREFIX}{name}")
}

impl Record {
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_annotation(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn token_file(&self) -> TokenFile {
        TokenFile::new(self.generation, self.tokens.clone())
    }
}

/// The state read back from the two Secrets.
#[derive(Debug, Default)]
pub struct Observed {
    /// The newest record found (see the module docs), if any.
    pub record: Option<Record>,
    /// The client Secret's data: token name → plaintext, as found (not yet validated).
    pub client_values: BTreeMap<String, String>,
}

/// Reads the state: the record with the highest generation among the client Secret's
/// annotation, the service Secret's annotation and the service Secret's `tokens.json` (the
/// client's wins a tie: it is written first).
pub fn observe(service: Option<&Secret>, client: Option<&Secret>) -> Observed {
    let annotated = |s: Option<&Secret>| {
        s.and_then(|s| s.annotations().get(RECORD_ANNOTATION))
            .and_then(|a| Record::from_annotation(a))
    };
    let from_file = service
        .and_then(|s| s.data.as_ref()?.get(TOKEN_FILE_NAME))
        .and_then(|bytes| TokenFile::parse(&bytes.0).ok())
        .map(|file| Record {
            generation: file.generation,
            tokens: file.tokens,
            ..Record::default()
        });
    let mut record: Option<Record> = None;
    for candidate in [annotated(client), annotated(service), from_file]
        .into_iter()
        .flatten()
    {
        if record
            .as_ref()
            .is_none_or(|r| candidate.generation > r.generation)
        {
            record = Some(candidate);
        }
    }
    let client_values = client
        .and_then(|s| s.data.as_ref())
        .map(|data| {
            data.iter()
                .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    Observed {
        record,
        client_values,
    }
}

/// Whether `secret` may be written for `owner`: it carries our controller ownerReference, or
/// at least our labels for this set (a person removed the ownerReference; it is put back).
pub fn is_ours(secret: &Secret, owner: &Vx11TokenSet) -> bool {
    let uid = owner.uid();
    let owned = secret
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == uid.as_ref());
    let labelled = secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
        && secret.labels().get(TOKENSET_LABEL) == Some(&owner.name_any());
    owned || labelled
}

/// The controller ownerReference. `blockOwnerDeletion` is left unset, so the controller needs
/// no `update` on `vx11tokensets/finalizers` where OwnerReferencesPermissionEnforcement is on.
fn owner_reference(owner: &Vx11TokenSet) -> Option<OwnerReference> {
    let mut reference = owner.controller_owner_ref(&())?;
    reference.block_owner_deletion = None;
    Some(reference)
}

fn metadata(owner: &Vx11TokenSet, name: &str, role: &str, record: &Record) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: owner.namespace(),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
            (TOKENSET_LABEL.to_owned(), owner.name_any()),
            (ROLE_LABEL.to_owned(), role.to_owned()),
        ])),
        annotations: Some(BTreeMap::from([(
            RECORD_ANNOTATION.to_owned(),
            record.to_annotation(),
        )])),
        owner_references: owner_reference(owner).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The service Secret: `tokens.json` (digests only) and the record.
pub fn service_secret(owner: &Vx11TokenSet, record: &Record) -> Secret {
    Secret {
        metadata: metadata(owner, &owner.spec.secret_name, "service", record),
        data: Some(BTreeMap::from([(
            TOKEN_FILE_NAME.to_owned(),
            ByteString(record.token_file().to_json().into_bytes()),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The client Secret: one key per generated token with its current plaintext, and the record.
pub fn client_secret(
    owner: &Vx11TokenSet,
    record: &Record,
    values: &BTreeMap<String, TokenValue>,
) -> Secret {
    Secret {
        metadata: metadata(owner, &owner.spec.client_secret_name, "client", record),
        data: Some(
            values
                .iter()
                .map(|(name, value)| (name.clone(), ByteString(value.expose().as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// Whether applying `desired` would change `current`: data (exactly: a key someone added is a
/// change), our labels and annotation, the ownerReference.
pub fn needs_write(current: Option<&Secret>, desired: &Secret) -> bool {
    let Some(current) = current else {
        return true;
    };
    let empty = BTreeMap::new();
    let data = |s: &Secret| s.data.clone().unwrap_or_default();
    if data(current) != data(desired) {
        return true;
    }
    let subset = |want: Option<&BTreeMap<String, String>>, have: &BTreeMap<String, String>| {
        want.unwrap_or(&empty)
            .iter()
            .all(|(k, v)| have.get(k) == Some(v))
    };
    if !subset(desired.metadata.labels.as_ref(), current.labels())
        || !subset(desired.metadata.annotations.as_ref(), current.annotations())
    {
        return true;
    }
    let want_owner = desired
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    !want_owner.iter().all(|w| {
        current
            .owner_references()
            .iter()
            .any(|h| h.uid == w.uid && h.controller == w.controller)
    })
}

/// Keys of `current` that `desired` does not have (a person's additions, or a revoked token
/// whose key another field manager also claims): removed explicitly, since server-side apply
/// only removes fields this manager owns.
pub fn extra_keys(current: Option<&Secret>, desired: &Secret) -> Vec<String> {
    let want = desired.data.clone().unwrap_or_default();
    current
        .and_then(|s| s.data.as_ref())
        .map(|data| {
            data.keys()
                .filter(|k| !want.contains_key(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A set `apps/main` with Secrets `svc` and `client`, for tests.
    pub fn owner() -> Vx11TokenSet {
        let mut ts = Vx11TokenSet::new(
            "main",
            serde_json::from_value(serde_json::json!({
                "secretName": "svc", "clientSecretName": "client", "tokens": []
            }))
            .unwrap(),
        );
        ts.metadata.namespace = Some("apps".into());
        ts.metadata.uid = Some("uid-1".into());
        ts
    }

    /// A Secret as the controller writes it, for tests: the record and optionally values.
    pub fn secret_with(record: &Record, values: Option<&BTreeMap<String, TokenValue>>) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(BTreeMap::from([(
            RECORD_ANNOTATION.to_owned(),
            record.to_annotation(),
        )]));
        s.data = values.map(|values| {
            values
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().as_bytes().to_vec())))
                .collect()
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::owner;
    use super::*;
    use vx11_tokenset::{TokenDigest, TokenState};

    fn record(generation: u64) -> Record {
        Record {
            generation,
            tokens: vec![TokenEntry {
                name: "operator".into(),
                sha256: TokenDigest::of(format!("vx11_value_{generation}").as_bytes()),
                state: TokenState::Active,
                not_before: Some("2026-11-22T10:00:00Z".parse().unwrap()),
                expires_at: None,
            }],
            rotate_handled: Some("r1".into()),
            last_rotation: None,
            ..Record::default()
        }
    }

    fn secret(annotation: Option<&Record>, file: Option<&Record>) -> Secret {
        let mut s = Secret::default();
        if let Some(r) = annotation {
            s.metadata.annotations = Some(BTreeMap::from([(
                RECORD_ANNOTATION.to_owned(),
                r.to_annotation(),
            )]));
        }
        if let Some(r) = file {
            s.data = Some(BTreeMap::from([(
                TOKEN_FILE_NAME.to_owned(),
                ByteString(r.token_file().to_json().into_bytes()),
            )]));
        }
        s
    }

    #[test]
    fn record_round_trips_through_the_annotation() {
        let r = record(3);
        assert_eq!(Record::from_annotation(&r.to_annotation()), Some(r));
        assert_eq!(Record::from_annotation("{not json"), None);
    }

    #[test]
    fn the_newest_record_wins_and_the_client_wins_a_tie() {
        // Crash between the writes: the client is one generation ahead.
        let client = secret(Some(&record(5)), None);
        let service = secret(Some(&record(4)), Some(&record(4)));
        let seen = observe(Some(&service), Some(&client));
        assert_eq!(seen.record.unwrap().generation, 5);

        // Client Secret deleted by a person: the service Secret's record is used.
        let seen = observe(Some(&service), None);
        assert_eq!(seen.record, Some(record(4)));

        // Annotations stripped: tokens.json still gives entries and generation.
        let bare = secret(None, Some(&record(7)));
        let seen = observe(Some(&bare), None);
        let r = seen.record.unwrap();
        assert_eq!((r.generation, r.rotate_handled), (7, None));

        let mut tie = record(5);
        tie.rotate_handled = Some("from-service".into());
        let service = secret(Some(&tie), None);
        let seen = observe(Some(&service), Some(&client));
        assert_eq!(seen.record.unwrap().rotate_handled.as_deref(), Some("r1"));

        assert!(observe(None, None).record.is_none());
    }

    #[test]
    fn desired_secrets_are_owned_labelled_and_hold_only_what_they_should() {
        let ts = owner();
        let r = record(2);
        let service = service_secret(&ts, &r);
        let owner_ref = &service.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner_ref.uid.as_str(), owner_ref.controller),
            ("uid-1", Some(true))
        );
        assert_eq!(owner_ref.block_owner_deletion, None);
        assert!(is_ours(&service, &ts));
        let keys: Vec<_> = service.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(keys, [TOKEN_FILE_NAME]);
        let file = TokenFile::parse(&service.data.as_ref().unwrap()[TOKEN_FILE_NAME].0).unwrap();
        assert_eq!(file.generation, 2);

        let value = TokenValue::new("vx11_some_generated_value").unwrap();
        let client = client_secret(&ts, &r, &BTreeMap::from([("operator".to_owned(), value)]));
        assert_eq!(
            client.data.as_ref().unwrap()["operator"].0,
            b"vx11_some_generated_value"
        );
        assert_eq!(client.annotations()[RECORD_ANNOTATION], r.to_annotation());
    }

    #[test]
    fn writes_only_when_something_differs() {
        let ts = owner();
        let desired = service_secret(&ts, &record(2));
        assert!(needs_write(None, &desired));
        let mut current = desired.clone();
        // The API server adds fields of its own: not a difference.
        current.metadata.resource_version = Some("42".into());
        current
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "ok".into());
        assert!(!needs_write(Some(&current), &desired));
        assert!(extra_keys(Some(&current), &desired).is_empty());

        let mut edited = current.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("tokens".into(), ByteString(b"injected".to_vec()));
        assert!(needs_write(Some(&edited), &desired));
        assert_eq!(extra_keys(Some(&edited), &desired), ["tokens"]);

        let mut unowned = current.clone();
        unowned.metadata.owner_references = None;
        assert!(needs_write(Some(&unowned), &desired));
        assert!(
            is_ours(&unowned, &ts),
            "still ours by its labels: the ownerReference is put back"
        );

        let mut relabelled = current.clone();
        relabelled.metadata.annotations = None;
        assert!(needs_write(Some(&relabelled), &desired));

        let foreign = Secret::default();
        assert!(!is_ours(&foreign, &ts));
    }
}
