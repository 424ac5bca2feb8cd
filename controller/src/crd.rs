//! The `Vx11TokenSet` custom resource (`vx11.dev/v1alpha1`). Doc comments here become the
//! field descriptions that `kubectl explain vts.spec` shows; the `x_kube(validation)` rules,
//! patterns and limits make the API server refuse a bad spec before the controller sees it.

use chrono::{DateTime, Utc};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Secret name: an RFC 1123 DNS subdomain.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A token name; it is also a key of the client Secret.
const TOKEN_NAME: &str = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$";
/// A Secret data key.
const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// Hours, minutes and seconds, each optional, in that order: `24h`, `10m`, `1h30m`, `45s`. The
/// same text is a valid CEL/Go duration, which the rules below compare.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$";

/// Default grace period: how long a replaced value stays valid.
pub const DEFAULT_GRACE_PERIOD: &str = "10m";

/// A set of API tokens that vx11's services accept, kept in two Secrets: `secretName` holds
/// only SHA-256 digests (`tokens.json`, mounted by the gateway and the operator backend);
/// `clientSecretName` holds the current plaintext of each generated token, for clients.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vx11.dev",
    version = "v1alpha1",
    kind = "Vx11TokenSet",
    plural = "vx11tokensets",
    singular = "vx11tokenset",
    shortname = "vts",
    namespaced,
    status = "Vx11TokenSetStatus",
    derive = "PartialEq",
    doc = "A set of API tokens that vx11's services accept, reconciled by vx11-controller into a service Secret (digests) and a client Secret (plaintext of generated tokens).",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.synced","description":"Consumer pods serving the current tokens.json generation / all consumer pods"}"#,
    printcolumn = r#"{"name":"Tokens","type":"integer","jsonPath":".status.tokenCount"}"#,
    printcolumn = r#"{"name":"Generation","type":"integer","jsonPath":".status.generation"}"#,
    // A string, not a date: kubectl prints a future date column as <invalid>.
    printcolumn = r#"{"name":"Next rotation","type":"string","jsonPath":".status.nextRotationTime","description":"When the generated tokens rotate next (RFC 3339)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.secretName != self.clientSecretName").message("secretName and clientSecretName must name different Secrets"))]
#[serde(rename_all = "camelCase")]
pub struct Vx11TokenSetSpec {
    /// Name of the service Secret (in this namespace) that receives `tokens.json`: digests
    /// only, never a value. Mount it as a directory (not with subPath) into the services.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub secret_name: String,

    /// Name of the client Secret (in this namespace) that receives the current plaintext of
    /// each generated token, one key per token name.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub client_secret_name: String,

    /// The tokens of the set, at most 100, names unique. Removing a token revokes all of its
    /// values at once (no grace period).
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tokens: Vec<TokenSpec>,

    /// When generated tokens rotate and how long a replaced value stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,

    /// How a new value reaches the services before clients get it (staged rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationSpec>,
}

/// Staged rotation: a new value is first *staged* (its digest added to `tokens.json`, so the
/// services accept it, while clients keep the old value), published to the client Secret
/// only once every consumer pod serves that `tokens.json` generation, and only then does the
/// old value start its grace period. Revocation and expiry never wait.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PropagationSpec {
    /// `true` (the default): stage every new value and publish it once every consumer serves
    /// it. `false`: publish at once; a client that reads the new value before a service pod
    /// has it gets 401 until the pod's kubelet projects the Secret.
    #[serde(default = "default_staged")]
    pub staged: bool,

    /// Which pods are consumers. Unset: the Ready pods of this namespace that mount
    /// `secretName` as a volume. Set: the Ready pods of this namespace with these labels
    /// (mounting or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_selector: Option<ConsumerSelector>,

    /// How long a staged value may wait for the consumers before the set shows
    /// `Propagated=False` (reason `StaleConsumers`) and a Warning event, e.g. `5m`. The value
    /// stays staged (a consumer would refuse it) until they catch up.
    #[serde(default = "default_propagation_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 24))]
    pub timeout: String,
}

impl Default for PropagationSpec {
    fn default() -> Self {
        Self {
            staged: true,
            consumer_selector: None,
            timeout: default_propagation_timeout(),
        }
    }
}

fn default_staged() -> bool {
    true
}

/// Default of `propagation.timeout`.
pub const DEFAULT_PROPAGATION_TIMEOUT: &str = "5m";

fn default_propagation_timeout() -> String {
    DEFAULT_PROPAGATION_TIMEOUT.to_owned()
}

/// Pods by label, in the set's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSelector {
    /// Every label must match. At least one.
    #[schemars(length(min = 1))]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// One named token: generated by the controller (`generate`) or taken from a Secret you own
/// (`secretRef`). Exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.generate) != has(self.secretRef)").message("exactly one of generate or secretRef must be set"))]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// Name of the token: the key in the client Secret, and the `name` in `tokens.json`.
    #[schemars(regex(pattern = TOKEN_NAME), length(min = 1, max = 63))]
    pub name: String,

    /// Let the controller generate (and rotate) this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSpec>,

    /// Take this token's value from a key of a Secret in this namespace. The Secret must
    /// carry the label `vx11.dev/token-source: "true"` (else Ready is False, reason
    /// `SourceNotOptedIn`). The controller follows changes of that Secret; it never rotates
    /// such a token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// When every value of this token stops being accepted (RFC 3339). Services enforce it by
    /// the clock; the controller then removes the token's entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// How to generate a token: `vx11_` + URL-safe base64 of `bytes` random bytes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateSpec {
    /// Random bytes from the CSPRNG, 32 to 378 (the token must stay within 512 characters).
    #[serde(default = "default_bytes")]
    #[schemars(range(min = 32, max = 378))]
    pub bytes: u32,
}

fn default_bytes() -> u32 {
    32
}

/// A key of a Secret in the TokenSet's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret whose value is the token (16–512 printable ASCII, no spaces).
    #[schemars(regex(pattern = SECRET_KEY), length(min = 1, max = 253))]
    pub key: String,
}

/// Rotation of generated tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.every) || duration(self.gracePeriod) < duration(self.every)").message("gracePeriod must be shorter than every"))]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// Period of scheduled rotation of generated tokens, e.g. `24h`, `1h30m`, `90s` (hours,
    /// minutes, seconds). At least one second. Unset: rotate only on request (annotation
    /// `vx11.dev/rotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 24))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("every must be at least 1s"))]
    pub every: Option<String>,

    /// How long a replaced value stays valid (state `retiring`) after a rotation, e.g. `10m`.
    #[serde(default = "default_grace_period")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 24))]
    pub grace_period: String,
}

fn default_grace_period() -> String {
    DEFAULT_GRACE_PERIOD.to_owned()
}

/// What the controller last made of the set. Never holds a token value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Vx11TokenSetStatus {
    /// `Ready`: True when every token of the spec is served; False with reason
    /// `SourceMissing`, `SourceNotOptedIn`, `InvalidSpec` or `SecretConflict` otherwise. `Propagated`: True
    /// (reason `Synced`) when every consumer pod serves the current `tokens.json` generation
    /// and no value waits to be published; False with reason `Propagating` while one does, or
    /// `StaleConsumers` (naming the pods) once a staged value waited past
    /// `propagation.timeout`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `generation` of the `tokens.json` written to the service Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Number of token names with an active value.
    #[serde(default)]
    pub token_count: u32,
    /// Every accepted value, by name and fingerprint.
    #[serde(default)]
    pub tokens: Vec<TokenStatus>,
    /// When a generated token last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<DateTime<Utc>>,
    /// When the next scheduled rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<DateTime<Utc>>,
    /// Consumer pods that serve the current generation, over all consumer pods: `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<String>,
    /// Each consumer pod and the `tokens.json` generation it serves.
    #[serde(default)]
    pub consumers: Vec<ConsumerStatus>,
    /// The last value of the `vx11.dev/rotate` annotation acted on (its rotation is staged
    /// or published; published once no token of the set is `staged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_handled: Option<String>,
    /// The last value of each `rotate.vx11.dev/<token>` annotation acted on, by token name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub token_rotate_handled: std::collections::BTreeMap<String, String>,
}

/// A consumer pod, as the controller last asked it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// The pod's name.
    pub pod: String,
    /// The `tokens.json` generation the pod serves (every container that reports one: the
    /// lowest), if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// `Synced` (serves the current generation) or `Stale`.
    pub state: String,
    /// Why the pod is stale, when it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One accepted value of a token.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// The token's name.
    pub name: String,
    /// `sha256:` and the first 12 hex digits of the value's digest.
    pub fingerprint: String,
    /// `active` (the current, published value), `staged` (accepted by the services, not yet
    /// published to clients) or `retiring` (replaced, valid until `expiresAt`).
    pub state: String,
    /// When this value was issued (its `notBefore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When this value stops being accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A condition in the Kubernetes style (`kubectl wait --for=condition=Ready`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason: `Reconciled`, `SourceMissing`, `SourceNotOptedIn`, `InvalidSpec`,
    /// `SecretConflict`;
    /// `Synced`, `Propagating`, `StaleConsumers`.
    pub reason: String,
    /// What is wrong, for a person; names tokens and Secrets, never values.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl TokenSpec {
    pub fn generated(&self) -> Option<&GenerateSpec> {
        self.generate.as_ref()
    }
}

/// The CRD as YAML, as committed to `manifests/crd.yaml` and the chart.
pub fn crd_yaml() -> String {
    let crd = Vx11TokenSet::crd();
    let yaml = serde_saphyr::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated by `vx11-controller crd` from controller/src/crd.rs; do not edit.\n---\n{yaml}"
    )
}
