//! A certificate and its key as a `kubernetes.io/tls` Secret holds them (and cert-manager
//! writes them): `tls.crt`, the PEM chain, leaf first; `tls.key`, the PEM private key
//! (PKCS#8, PKCS#1 RSA or SEC1 EC). Read together and checked together: a key that is not
//! the leaf's is refused, as a pair half-written by a rotation would be. No error carries a
//! byte of the key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The chain's file in the directory.
pub const CERT_FILE: &str = "tls.crt";
/// The key's file in the directory.
pub const KEY_FILE: &str = "tls.key";

/// Larger files are not read (a chain is a few KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A pair ready to serve, and what is told about it.
#[derive(Debug, Clone)]
pub struct TlsPair {
    pub certified: Arc<CertifiedKey>,
    pub leaf: LeafInfo,
    /// The bytes of both files, to tell an unchanged pair from a new one without parsing.
    pub content: [u8; 32],
}

/// What the logs and metrics say of the leaf certificate (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// Why a directory's pair cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: PathBuf },
    #[error("{path} has a PEM block that cannot be read: {reason}")]
    BadCertificatePem { path: PathBuf, reason: String },
    #[error("the first certificate of {path} is not a valid X.509 certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "{path} holds no PEM private key (PKCS#8 `PRIVATE KEY`, RSA `RSA PRIVATE KEY` or EC `EC PRIVATE KEY`)"
    )]
    NoKey { path: PathBuf },
    #[error("the key in {path} cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {key} is not the key of the first certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// Reads and checks the pair in `dir`.
pub fn read_pair(dir: &Path, provider: &CryptoProvider) -> Result<TlsPair, PairError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert_pem = read_limited(&cert_path)?;
    let key_pem = zeroize::Zeroizing::new(read_limited(&key_path)?);
    let content = content_key(&cert_pem, &key_pem);

    let mut chain = Vec::new();
    for block in CertificateDer::pem_slice_iter(&cert_pem) {
        chain.push(block.map_err(|error| PairError::BadCertificatePem {
            path: cert_path.clone(),
            reason: error.to_string(),
        })?);
    }
    let Some(first) = chain.first() else {
        return Err(PairError::NoCertificate { path: cert_path });
    };
    let leaf = leaf_info(first).map_err(|reason| PairError::BadCertificate {
        path: cert_path.clone(),
        reason,
    })?;
    // The PEM parser's messages are not passed on: they could quote a line of the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| PairError::NoKey {
        path: key_path.clone(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| PairError::BadKey {
            path: key_path.clone(),
            reason: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(PairError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        Err(error) => {
            return Err(PairError::BadCertificate {
                path: cert_path,
                reason: error.to_string(),
            });
        }
    }
    Ok(TlsPair {
        certified: Arc::new(certified),
        leaf,
        content,
    })
}

fn read_limited(path: &Path) -> Result<Vec<u8>, PairError> {
    use std::io::Read as _;
    let read_error = |error: std::io::Error| PairError::Read {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(PairError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn content_key(cert: &[u8], key: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update((cert.len() as u64).to_be_bytes());
    hash.update(cert);
    hash.update(key);
    hash.finalize().into()
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(LeafInfo {
        serial: cert.raw_serial_as_string().replace(':', ""),
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) {
        std::fs::write(dir.join(CERT_FILE), cert).unwrap();
        std::fs::write(dir.join(KEY_FILE), key).unwrap();
    }

    #[test]
    fn a_matching_pair_is_read_with_its_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("gateway.example");
        write(dir.path(), &cert, &key);
        let read = read_pair(dir.path(), &provider()).unwrap();
        assert!(
            read.leaf.subject.contains("gateway.example"),
            "{:?}",
            read.leaf
        );
        assert!(read.leaf.not_after > 0);
        assert!(!read.leaf.serial.is_empty());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair("a.example");
        let (_, other_key) = pair("b.example");
        write(dir.path(), &cert, &other_key);
        let error = read_pair(dir.path(), &provider()).unwrap_err();
        assert!(matches!(error, PairError::KeyMismatch { .. }), "{error}");
        let body: String = other_key.lines().skip(1).take(1).collect();
        assert!(!error.to_string().contains(&body[..20]));
    }

    #[test]
    fn garbage_and_missing_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_pair(dir.path(), &provider()).unwrap_err();
        assert!(error.to_string().contains(CERT_FILE), "{error}");

        let (cert, key) = pair("a.example");
        write(dir.path(), "not a certificate", &key);
        let error = read_pair(dir.path(), &provider()).unwrap_err();
        assert!(matches!(error, PairError::NoCertificate { .. }), "{error}");

        write(
            dir.path(),
            &cert,
            "-----BEGIN PRIVATE KEY-----\nsecretsecret\n",
        );
        let error = read_pair(dir.path(), &provider()).unwrap_err();
        assert!(matches!(error, PairError::NoKey { .. }), "{error}");
        assert!(!error.to_string().contains("secretsecret"), "{error}");

        // Half a rotation: the certificate is cut short.
        write(dir.path(), &cert[..cert.len() / 2], &key);
        assert!(read_pair(dir.path(), &provider()).is_err());
    }
}
