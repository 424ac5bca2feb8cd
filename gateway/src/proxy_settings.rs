//! The proxying settings: the limits of a backend's response head and whether absolute
//! `Location`/`Refresh` URLs that point at the backend are rewritten to the gateway.

use std::sync::Arc;

use crate::h2c_fallback::H2cFallbacks;

/// The smallest `VX11_MAX_RESPONSE_HEADER_BYTES`: hyper's smallest read buffer.
pub const MIN_RESPONSE_HEADER_BYTES: usize = 8 * 1024;

/// Flags and environment variables (flattened into [`crate::config::Args`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Largest response head (status line and headers) a backend may send, in bytes, at
    /// least 8192; a larger one is answered `502 upstream_response_too_large`. It is also the
    /// most an HTTP/1.1 backend connection's read buffer grows to, so it bounds the memory of
    /// every such connection (an event stream over HTTP/1.1 holds one).
    #[arg(long, env = "VX11_MAX_RESPONSE_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_response_header_bytes: usize,

    /// Most header fields in a backend's HTTP/1.1 response head; more is answered
    /// `502 upstream_response_too_large`.
    #[arg(long, env = "VX11_MAX_RESPONSE_HEADERS", default_value_t = 256)]
    pub max_response_headers: usize,

    /// `default`: an absolute URL in a response's `Location` or `Refresh` header that points
    /// at the module's backend (`http://<backend host:port>`) is rewritten to the gateway as
    /// the client reached it (its scheme and `Host`), as nginx's `proxy_redirect default`.
    /// `off`: passed on unchanged.
    #[arg(long, env = "VX11_PROXY_REDIRECT", default_value = "default")]
    pub proxy_redirect: String,
}

/// Checked [`ProxyArgs`], and what all workers share about the backends.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub max_response_header_bytes: usize,
    pub max_response_headers: usize,
    pub rewrite_redirects: bool,
    /// Backends found not to speak h2c, for the whole process (every worker's gateway holds
    /// this one).
    pub h2c_fallbacks: Arc<H2cFallbacks>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxySettingsError {
    #[error(
        "VX11_MAX_RESPONSE_HEADER_BYTES must be at least {MIN_RESPONSE_HEADER_BYTES} (hyper's smallest read buffer), got {0}"
    )]
    HeaderBytes(usize),
    #[error("VX11_MAX_RESPONSE_HEADERS must be more than zero")]
    Headers,
    #[error("VX11_PROXY_REDIRECT must be `default` or `off`, got `{0}`")]
    Redirect(String),
}

impl ProxySettings {
    pub fn from_args(args: &ProxyArgs) -> Result<Self, ProxySettingsError> {
        if args.max_response_header_bytes < MIN_RESPONSE_HEADER_BYTES
            || u32::try_from(args.max_response_header_bytes).is_err()
        {
            return Err(ProxySettingsError::HeaderBytes(
                args.max_response_header_bytes,
            ));
        }
        if args.max_response_headers == 0 {
            return Err(ProxySettingsError::Headers);
        }
        let rewrite_redirects = match args.proxy_redirect.trim() {
            "default" => true,
            "off" => false,
            other => return Err(ProxySettingsError::Redirect(other.to_owned())),
        };
        Ok(Self {
            max_response_header_bytes: args.max_response_header_bytes,
            max_response_headers: args.max_response_headers,
            rewrite_redirects,
            h2c_fallbacks: Arc::default(),
        })
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            max_response_header_bytes: 16 * 1024,
            max_response_headers: 256,
            rewrite_redirects: true,
            h2c_fallbacks: Arc::default(),
        }
    }
}
