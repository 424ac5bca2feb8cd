//! The gateway's TLS setting: where the `kubernetes.io/tls` Secret is mounted.

use std::path::Path;

/// TLS on the gateway's port.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Directory holding `tls.crt` (PEM chain) and `tls.key` (PEM key), as a mounted
    /// `kubernetes.io/tls` Secret: the gateway's port then speaks TLS only (HTTP/2 and
    /// HTTP/1.1 by ALPN) and serves a new pair to new connections when it changes.
    /// Empty: no TLS (HTTP/1.1 and HTTP/2 with prior knowledge).
    #[arg(long, env = "VX11_TLS_DIR", default_value = "")]
    pub tls_dir: String,
}

impl TlsArgs {
    /// The directory, when TLS is on.
    pub fn dir(&self) -> Option<&Path> {
        (!self.tls_dir.is_empty()).then(|| Path::new(&self.tls_dir))
    }
}
