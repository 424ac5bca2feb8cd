//! How a client reached a listener: in the clear or over TLS. Every request carries it in
//! its extensions (put there by [`crate::serve_until_shutdown`]), so that the gateway can
//! set `X-Forwarded-Proto` and rewrite a backend's `Location` to what the client used.

/// The scheme of the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientScheme {
    /// Plain TCP (HTTP/1.1 or h2c).
    #[default]
    Http,
    /// TLS (HTTP/1.1 or h2 by ALPN).
    Https,
}

impl ClientScheme {
    /// `http` or `https`, as in a URL and in `X-Forwarded-Proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}
