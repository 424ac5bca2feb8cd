//! A backend's base URL.

use hyper::Uri;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};

/// Where a module's requests go: scheme and authority; the request's own path and query
/// are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub url: String,
    authority: Authority,
}

impl Upstream {
    /// Accepts `http://host[:port]` (a trailing `/` is fine); in-cluster traffic is plain
    /// HTTP behind the NetworkPolicy.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("`{url}` is not a URL; expected http://host:port"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("`{url}`: only http:// backends are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no host; expected http://host:port"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{url}` has a path or query; give only http://host:port (requests keep their own path)"
            ));
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            authority,
        })
    }

    /// The backend URI for a request's path and query.
    pub fn uri_for(
        &self,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<Uri, hyper::http::Error> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query.map_or("/", PathAndQuery::as_str))
            .build()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins() {
        let up = Upstream::parse("http://vx11-operator-backend:8011/").unwrap();
        let pq: PathAndQuery = "/operator/api/events/stream?token=x&follow=true"
            .parse()
            .unwrap();
        assert_eq!(
            up.uri_for(Some(&pq)).unwrap().to_string(),
            "http://vx11-operator-backend:8011/operator/api/events/stream?token=x&follow=true"
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        assert!(
            Upstream::parse("https://x:1")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(
            Upstream::parse("http://x:1/base")
                .unwrap_err()
                .contains("path")
        );
        assert!(
            Upstream::parse("not a url")
                .unwrap_err()
                .contains("not a URL")
        );
    }
}
