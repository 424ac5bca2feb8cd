//! Reading token sets, and looking a token up in a set's spec.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use vx11_controller::crd::{SecretKeyRef, TokenSpec, Vx11TokenSet};

use crate::connect::Target;
use crate::error::{Error, Result};

pub fn api(target: &Target) -> Api<Vx11TokenSet> {
    Api::namespaced(target.client.clone(), &target.namespace)
}

/// The set `name`, or an error that says how to find the right one.
pub async fn get(target: &Target, name: &str) -> Result<Vx11TokenSet> {
    match api(target).get(name).await {
        Ok(set) => Ok(set),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            if no_such_resource(&status.message) {
                Err(Error::NoCrd(status.message))
            } else {
                Err(Error::SetNotFound {
                    namespace: target.namespace.clone(),
                    name: name.to_owned(),
                })
            }
        }
        Err(error) => Err(Error::kube(
            format!("reading Vx11TokenSet {}/{name}", target.namespace),
            error,
        )),
    }
}

/// Every set of the namespace, by name.
pub async fn list(target: &Target) -> Result<Vec<Vx11TokenSet>> {
    match api(target).list(&Default::default()).await {
        Ok(list) => {
            let mut sets = list.items;
            sets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            Ok(sets)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::NoCrd(status.message)),
        Err(error) => Err(Error::kube(
            format!("listing Vx11TokenSets in namespace {}", target.namespace),
            error,
        )),
    }
}

/// The Secret `name`, `None` if it does not exist.
pub async fn secret(target: &Target, name: &str) -> Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(target.client.clone(), &target.namespace);
    api.get_opt(name)
        .await
        .map_err(|error| Error::kube(format!("reading Secret {}/{name}", target.namespace), error))
}

fn no_such_resource(message: &str) -> bool {
    message.contains("could not find the requested resource")
}

/// Which kind of token `name` is in the set's spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup<'a> {
    Generated(&'a TokenSpec),
    SecretRef(&'a SecretKeyRef),
}

/// Finds token `name` in the spec; an error lists the set's tokens.
pub fn lookup<'a>(set: &'a Vx11TokenSet, name: &str) -> Result<Lookup<'a>> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    let Some(token) = set.spec.tokens.iter().find(|t| t.name == name) else {
        let names: Vec<&str> = set.spec.tokens.iter().map(|t| t.name.as_str()).collect();
        let known = if names.is_empty() {
            "it has no tokens".to_owned()
        } else {
            format!("its tokens: {}", names.join(", "))
        };
        return Err(Error::Refused(format!(
            "Vx11TokenSet {namespace}/{set_name} has no token named {name} ({known}); add it to spec.tokens, or see `kubectl vx11 status {set_name}`"
        )));
    };
    match (&token.generate, &token.secret_ref) {
        (_, Some(reference)) => Ok(Lookup::SecretRef(reference)),
        _ => Ok(Lookup::Generated(token)),
    }
}

/// The names of the set's generated tokens, in spec order.
pub fn generated_names(set: &Vx11TokenSet) -> Vec<String> {
    set.spec
        .tokens
        .iter()
        .filter(|t| t.generate.is_some())
        .map(|t| t.name.clone())
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use vx11_controller::crd::{GenerateSpec, Vx11TokenSetSpec};

    /// A set `vx11/vx11` with generated `operator` and `gateway` and secretRef `ci`.
    pub fn sample() -> Vx11TokenSet {
        let generated = |name: &str| TokenSpec {
            name: name.into(),
            generate: Some(GenerateSpec { bytes: 32 }),
            secret_ref: None,
            expires_at: None,
        };
        let mut set = Vx11TokenSet::new(
            "vx11",
            Vx11TokenSetSpec {
                secret_name: "vx11-tokens".into(),
                client_secret_name: "vx11-client-tokens".into(),
                tokens: vec![
                    generated("operator"),
                    generated("gateway"),
                    TokenSpec {
                        name: "ci".into(),
                        generate: None,
                        secret_ref: Some(SecretKeyRef {
                            name: "ci-token".into(),
                            key: "token".into(),
                        }),
                        expires_at: None,
                    },
                ],
                rotation: None,
                propagation: None,
            },
        );
        set.metadata.namespace = Some("vx11".into());
        set.metadata.generation = Some(3);
        set
    }

    #[test]
    fn looks_tokens_up() {
        let set = sample();
        assert!(
            matches!(lookup(&set, "operator"), Ok(Lookup::Generated(t)) if t.name == "operator")
        );
        assert!(matches!(lookup(&set, "ci"), Ok(Lookup::SecretRef(r)) if r.name == "ci-token"));
        let error = lookup(&set, "nope").unwrap_err().to_string();
        assert!(error.contains("has no token named nope"), "{error}");
        assert!(error.contains("operator, gateway, ci"), "{error}");
        assert_eq!(generated_names(&set), ["operator", "gateway"]);
    }
}
