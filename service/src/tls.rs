//! TLS on a listener, its certificate hot-reloaded from a mounted `kubernetes.io/tls`
//! Secret (`VX11_TLS_DIR`). The directory is watched as the token directory is
//! ([`DirWatcher`]: kubelet's `..data` swap, a poll behind the events); a new pair is served
//! to the handshakes that follow, connections already open keep theirs. A pair that cannot
//! be served (unreadable, garbage, key not the certificate's, half written) leaves the last
//! good one in place, logged once and counted. HTTP/2 and HTTP/1.1 are offered by ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use vx11_tokenset::{DirWatchConfig, DirWatcher};

use crate::tls_pair::{PairError, TlsPair, read_pair};

/// The protocols offered by ALPN, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok` or `error`.
    result: &'static str,
}

/// `vx11_tls_reloads_total{result}` and `vx11_tls_certificate_not_after_seconds`.
#[derive(Debug, Clone, Default)]
pub struct TlsMetrics {
    reloads: Family<ResultLabel, Counter>,
    not_after: Gauge,
}

impl TlsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "vx11_tls_reloads",
            "Certificate pairs read from VX11_TLS_DIR: ok (served from then on, the first at start included) or error (not served; the last good pair stays)",
            metrics.reloads.clone(),
        );
        registry.register(
            "vx11_tls_certificate_not_after_seconds",
            "notAfter of the certificate served, in seconds since the Unix epoch",
            metrics.not_after.clone(),
        );
        metrics
    }

    fn loaded(&self, pair: &TlsPair) {
        self.reloads
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        self.not_after.set(pair.leaf.not_after);
    }

    fn failed(&self) {
        self.reloads
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
    }
}

/// The server side of TLS for a listener; clones share the served certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Keeps the directory watched while any listener serves with it.
    _watcher: Arc<DirWatcher>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// No pair to start with.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "VX11_TLS_DIR={dir}: {error}; mount a kubernetes.io/tls Secret there (tls.crt and tls.key), or leave VX11_TLS_DIR empty to serve without TLS"
    )]
    NoPair { dir: PathBuf, error: PairError },
    #[error("VX11_TLS_DIR: cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
    #[error("VX11_TLS_DIR: cannot watch {dir}: {error}")]
    Watch { dir: PathBuf, error: std::io::Error },
}

impl Tls {
    /// Loads the pair in `dir` (an error if there is none that can be served), then keeps
    /// it in step with the directory, re-read at least every `poll_interval`.
    pub fn start(
        dir: &Path,
        poll_interval: Duration,
        metrics: TlsMetrics,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let first = read_pair(dir, &provider).map_err(|error| TlsError::NoPair {
            dir: dir.to_path_buf(),
            error,
        })?;
        tracing::info!(
            dir = %dir.display(),
            serial = %first.leaf.serial,
            subject = %first.leaf.subject,
            not_after = first.leaf.not_after,
            "TLS certificate loaded"
        );
        metrics.loaded(&first);
        let served = Arc::new(Served(ArcSwap::new(first.certified.clone())));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(served.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();

        let mut reloader = Reloader {
            dir: dir.to_path_buf(),
            provider,
            served,
            metrics,
            installed: first.content,
            reported: None,
        };
        let mut watch = DirWatchConfig::new(dir, "TLS certificate");
        watch.poll_interval = poll_interval;
        let watcher = DirWatcher::start(watch, "vx11-tls-watch", move || reloader.reload())
            .map_err(|error| TlsError::Watch {
                dir: dir.to_path_buf(),
                error,
            })?;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            _watcher: Arc::new(watcher),
        })
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

/// The pair every new handshake gets.
#[derive(Debug)]
struct Served(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Served {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Reads the directory again on each change; installs a new good pair, keeps the last
/// good one otherwise.
struct Reloader {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    served: Arc<Served>,
    metrics: TlsMetrics,
    /// The content of the pair being served.
    installed: [u8; 32],
    /// The failure last logged and counted, so a poll does not repeat it.
    reported: Option<PairError>,
}

impl Reloader {
    fn reload(&mut self) {
        match read_pair(&self.dir, &self.provider) {
            Ok(pair) if pair.content == self.installed => {
                if self.reported.take().is_some() {
                    tracing::info!(dir = %self.dir.display(), "TLS directory is back to the pair being served");
                }
            }
            Ok(pair) => {
                self.served.0.store(pair.certified.clone());
                self.metrics.loaded(&pair);
                self.installed = pair.content;
                self.reported = None;
                tracing::info!(
                    dir = %self.dir.display(),
                    serial = %pair.leaf.serial,
                    subject = %pair.leaf.subject,
                    not_after = pair.leaf.not_after,
                    "TLS certificate reloaded; new connections get it"
                );
            }
            Err(error) => {
                if self.reported.as_ref() == Some(&error) {
                    return;
                }
                tracing::warn!(%error, dir = %self.dir.display(),
                    "TLS certificate not reloaded; keeping the last good one");
                self.metrics.failed();
                self.reported = Some(error);
            }
        }
    }
}
