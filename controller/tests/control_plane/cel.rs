//! Bad specs are refused by the API server (schema patterns, limits and CEL rules).

use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use vx11_controller::Vx11TokenSet;

/// Sent as plain JSON: some of these specs would not even deserialize into the Rust type.
fn with_spec(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "vx11.dev/v1alpha1",
        "kind": "Vx11TokenSet",
        "metadata": {"name": "bad"},
        "spec": spec,
    }))
    .expect("an object")
}

fn base() -> Value {
    json!({
        "secretName": "s",
        "clientSecretName": "c",
        "tokens": [{"name": "t", "generate": {"bytes": 32}}],
    })
}

/// Each case: what is wrong, the spec, a piece of the API server's message.
fn cases() -> Vec<(&'static str, Value, &'static str)> {
    let mut out = Vec::new();
    let mut both = base();
    both["tokens"][0]["secretRef"] = json!({"name": "x", "key": "k"});
    out.push((
        "generate and secretRef",
        both,
        "exactly one of generate or secretRef",
    ));
    let mut neither = base();
    neither["tokens"][0] = json!({"name": "t"});
    out.push((
        "neither generate nor secretRef",
        neither,
        "exactly one of generate or secretRef",
    ));
    let mut duplicate = base();
    duplicate["tokens"] = json!([{"name": "t", "generate": {}}, {"name": "t", "generate": {}}]);
    out.push(("duplicate names", duplicate, "Duplicate value"));
    let mut bad_duration = base();
    bad_duration["rotation"] = json!({"every": "1 day"});
    out.push(("duration format", bad_duration, "spec.rotation.every"));
    let mut days = base();
    days["rotation"] = json!({"every": "1d"});
    out.push(("duration unit", days, "spec.rotation.every"));
    let mut grace = base();
    grace["rotation"] = json!({"every": "10m", "gracePeriod": "10m"});
    out.push((
        "grace not shorter than every",
        grace,
        "gracePeriod must be shorter than every",
    ));
    let mut default_grace = base();
    default_grace["rotation"] = json!({"every": "5m"});
    out.push((
        "default grace (10m) not shorter than every",
        default_grace,
        "gracePeriod must be shorter than every",
    ));
    let mut zero = base();
    zero["rotation"] = json!({"every": "0s", "gracePeriod": "0s"});
    out.push(("every of zero", zero, "every must be at least 1s"));
    let mut secret_name = base();
    secret_name["secretName"] = json!("Not_A_Secret");
    out.push(("secret name", secret_name, "spec.secretName"));
    let mut client_name = base();
    client_name["clientSecretName"] = json!("-bad");
    out.push(("client secret name", client_name, "spec.clientSecretName"));
    let mut same = base();
    same["clientSecretName"] = json!("s");
    out.push(("same Secret twice", same, "must name different Secrets"));
    let mut ref_name = base();
    ref_name["tokens"][0] = json!({"name": "t", "secretRef": {"name": "UPPER", "key": "k"}});
    out.push(("secretRef name", ref_name, "secretRef.name"));
    let mut few_bytes = base();
    few_bytes["tokens"][0]["generate"]["bytes"] = json!(16);
    out.push(("fewer than 32 bytes", few_bytes, "bytes"));
    let mut many = base();
    many["tokens"] = Value::Array(
        (0..101)
            .map(|i| json!({"name": format!("t{i}"), "generate": {}}))
            .collect(),
    );
    out.push(("more than 100 tokens", many, "100"));
    let mut expires = base();
    expires["tokens"][0]["expiresAt"] = json!("next tuesday");
    out.push(("expiresAt format", expires, "expiresAt"));
    out
}

pub async fn assert_bad_specs_refused(client: &Client, namespace: &str) {
    let resource = ApiResource::erase::<Vx11TokenSet>(&());
    let sets: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    for (what, spec, needle) in cases() {
        let result = sets.create(&PostParams::default(), &with_spec(spec)).await;
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {status:?}");
                assert!(
                    status.message.contains(needle),
                    "{what}: message {:?} lacks {needle:?}",
                    status.message
                );
            }
            other => panic!("{what}: expected 422 from the API server, got {other:?}"),
        }
    }
    // And a good one passes (then is removed).
    let mut good = base();
    good["rotation"] = json!({"every": "1h30m", "gracePeriod": "90s"});
    sets.create(&PostParams::default(), &with_spec(good))
        .await
        .expect("a valid spec is accepted");
    sets.delete("bad", &Default::default()).await.unwrap();
}
