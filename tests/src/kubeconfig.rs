//! The kubeconfig files the harness writes for its users and for the node's programs.

use std::fs;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::pki::{ADMIN_USER, CertPair};
use crate::{Error, Result};

/// Writes a kubeconfig with one cluster, user and context, all named `vx11`. JSON is YAML, and
/// kubectl, helm and kube-rs read it alike.
pub fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, user: &CertPair) -> Result<()> {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vx11", "cluster": {
            "server": server,
            "certificate-authority-data": BASE64.encode(ca_pem),
        }}],
        "users": [{"name": ADMIN_USER, "user": {
            "client-certificate-data": BASE64.encode(&user.cert_pem),
            "client-key-data": BASE64.encode(&user.key_pem),
        }}],
        "contexts": [{"name": "vx11", "context": {"cluster": "vx11", "user": ADMIN_USER}}],
        "current-context": "vx11",
    });
    let text = serde_json::to_string_pretty(&kubeconfig)
        .map_err(|e| Error::Kubeconfig(format!("serializing: {e}")))?;
    // Written whole and renamed into place: a kubectl reading it never sees half a file.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
