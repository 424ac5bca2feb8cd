//! `kubectl vx11 token`: the published value of a generated token, from the client Secret's
//! key `<token>`. Never a `_staged.<token>` key: a staged value is not the client's yet.

use std::io::{IsTerminal as _, Write as _};

use k8s_openapi::api::core::v1::Secret;
use vx11_controller::crd::Vx11TokenSet;
use vx11_controller::state::STAGED_KEY_PREFIX;

use crate::cli::TokenArgs;
use crate::connect::Target;
use crate::error::{Error, Result};
use crate::sets::{self, Lookup};

/// Whether `name` is a token whose value this command may print: a generated token of the
/// spec (not a secretRef, never a staged key). Checked before any Secret is read.
pub fn printable(set: &Vx11TokenSet, name: &str) -> Result<()> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    if name.starts_with(STAGED_KEY_PREFIX) {
        return Err(Error::Refused(format!(
            "{name} is a staged value, which is never printed: it is published under its token's name once every consumer pod serves it (`kubectl vx11 wait {set_name}`)"
        )));
    }
    if let Lookup::SecretRef(reference) = sets::lookup(set, name)? {
        return Err(Error::Refused(format!(
            "token {name} of Vx11TokenSet {namespace}/{set_name} is not generated: its value lives in your Secret {namespace}/{}, key {} \
             (`kubectl -n {namespace} get secret {} -o jsonpath='{{.data.{}}}' | base64 -d`)",
            reference.name, reference.key, reference.name, reference.key
        )));
    }
    Ok(())
}

/// The published value of generated token `name` of `set`, from its client Secret (`None`:
/// the Secret does not exist): the key `name`, never a staged key.
pub fn published_value(set: &Vx11TokenSet, client: Option<&Secret>, name: &str) -> Result<Vec<u8>> {
    printable(set, name)?;
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    let secret_name = &set.spec.client_secret_name;
    let hint = format!(
        "the controller may still be creating or staging it: `kubectl vx11 wait {set_name}`, then try again (`kubectl vx11 status {set_name}` shows where it stands)"
    );
    let Some(secret) = client else {
        return Err(Error::Refused(format!(
            "the client Secret {namespace}/{secret_name} does not exist yet; {hint}"
        )));
    };
    match secret.data.as_ref().and_then(|data| data.get(name)) {
        Some(value) if !value.0.is_empty() => Ok(value.0.clone()),
        _ => Err(Error::Refused(format!(
            "the client Secret {namespace}/{secret_name} has no published value of token {name} yet; {hint}"
        ))),
    }
}

pub async fn run(target: &Target, args: &TokenArgs) -> Result<String> {
    let set = sets::get(target, &args.set).await?;
    printable(&set, &args.name)?;
    let client = sets::secret(target, &set.spec.client_secret_name).await?;
    let mut value = published_value(&set, client.as_ref(), &args.name)?;
    let mut stdout = std::io::stdout().lock();
    if stdout.is_terminal() {
        eprintln!(
            "warning: printing the value of token {} on a terminal; it is a secret: prefer piping it (`kubectl vx11 token {} {} | …`)",
            args.name, args.set, args.name
        );
    }
    value.push(b'\n');
    stdout.write_all(&value)?;
    stdout.flush()?;
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::tests::sample;
    use k8s_openapi::ByteString;

    fn client(keys: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn prints_only_the_published_value() {
        let set = sample();
        let secret = client(&[
            ("operator", "vx11_published"),
            ("_staged.operator", "vx11_staged"),
            ("_staged.gateway", "vx11_staged_gateway"),
        ]);
        assert_eq!(
            published_value(&set, Some(&secret), "operator").unwrap(),
            b"vx11_published"
        );
        // gateway has only a staged value: refused, and the error holds no value.
        let error = published_value(&set, Some(&secret), "gateway")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no published value of token gateway yet"),
            "{error}"
        );
        assert!(error.contains("kubectl vx11 wait vx11"), "{error}");
        assert!(!error.contains("vx11_staged"), "{error}");
        let error = published_value(&set, Some(&secret), "_staged.operator")
            .unwrap_err()
            .to_string();
        assert!(error.contains("never printed"), "{error}");
        assert!(!error.contains("vx11_staged"), "{error}");
    }

    #[test]
    fn says_what_to_do_otherwise() {
        let set = sample();
        let error = published_value(&set, None, "operator")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("client Secret vx11/vx11-client-tokens does not exist yet"),
            "{error}"
        );
        let error = published_value(&set, None, "ci").unwrap_err().to_string();
        assert!(
            error.contains("lives in your Secret vx11/ci-token, key token"),
            "{error}"
        );
        let error = published_value(&set, None, "nope").unwrap_err().to_string();
        assert!(error.contains("no token named nope"), "{error}");
    }
}
