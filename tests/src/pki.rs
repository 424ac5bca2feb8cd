//! The control plane's keys and certificates: a CA, the API server's serving certificate, client
//! certificates for the admin and the controller-manager, and the ServiceAccount signing key.
//!
//! They are generated once per state directory and kept: a long-lived dev cluster restarts with
//! the same CA, so a kubeconfig written earlier stays valid.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// The admin user of every control plane: a member of `system:masters`.
pub const ADMIN_USER: &str = "vx11-admin";
/// The controller-manager's user, bound by Kubernetes' bootstrap RBAC policy.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// The set of files a PKI directory holds; an older one is made anew.
const PKI_LAYOUT: &str = "2: with node certificates";

/// Paths of the PEM files under `<state>/pki/`.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub dir: PathBuf,
}

/// A certificate and its key, as PEM text.
#[derive(Debug, Clone)]
pub(crate) struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    /// The key that signs ServiceAccount tokens (ECDSA P-256, PKCS#8).
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("service-account.key")
    }
    /// Its public half, with which the API server verifies them.
    pub fn service_account_public_key(&self) -> PathBuf {
        self.dir.join("service-account.pub")
    }

    pub fn admin(&self) -> Result<CertPair> {
        self.read_pair("admin")
    }
    pub fn controller_manager(&self) -> Result<CertPair> {
        self.read_pair("controller-manager")
    }
    /// A client certificate by file name: `kubelet`, `kube-proxy`, `kube-scheduler`.
    pub fn client(&self, name: &str) -> Result<CertPair> {
        self.read_pair(name)
    }
    /// `<name>.crt` and `<name>.key`, e.g. for `kubelet-serving` and `apiserver-kubelet-client`.
    pub fn pair_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }
    pub fn ca_pem(&self) -> Result<String> {
        read(&self.ca_cert())
    }

    fn read_pair(&self, name: &str) -> Result<CertPair> {
        Ok(CertPair {
            cert_pem: read(&self.dir.join(format!("{name}.crt")))?,
            key_pem: read(&self.dir.join(format!("{name}.key")))?,
        })
    }

    /// Uses the PKI in `dir` if a complete one is there, or generates a new one.
    pub fn load_or_generate(dir: &Path) -> Result<Self> {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let complete = dir.join(".complete");
        // A PKI of an earlier layout (before the node's certificates) is made anew.
        if fs::read_to_string(&complete).is_ok_and(|v| v.trim() == PKI_LAYOUT) {
            return Ok(pki);
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.distinguished_name = name("vx11-test-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = Issuer::new(ca_params, ca_key);
        write(&pki.ca_cert(), &ca_cert.pem())?;

        let serving = issue(
            &ca,
            "kube-apiserver",
            None,
            &[
                "localhost",
                "127.0.0.1",
                "10.0.0.1",
                crate::node::network::NODE_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write(&pki.apiserver_cert(), &serving.cert_pem)?;
        write(&pki.apiserver_key(), &serving.key_pem)?;

        // A node's parts, each under the identity Kubernetes' bootstrap RBAC policy knows.
        let kubelet_serving = issue(
            &ca,
            crate::node::network::NODE_NAME,
            None,
            &[
                crate::node::network::NODE_IP,
                crate::node::network::NODE_NAME,
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write(&dir.join("kubelet-serving.crt"), &kubelet_serving.cert_pem)?;
        write(&dir.join("kubelet-serving.key"), &kubelet_serving.key_pem)?;
        let node_user = format!("system:node:{}", crate::node::network::NODE_NAME);
        for (file, user, group) in [
            ("admin", ADMIN_USER, Some("system:masters")),
            ("controller-manager", CONTROLLER_MANAGER_USER, None),
            ("kubelet", node_user.as_str(), Some("system:nodes")),
            ("kube-proxy", "system:kube-proxy", None),
            ("kube-scheduler", "system:kube-scheduler", None),
            // The API server's identity towards kubelets (logs, exec, port-forward).
            (
                "apiserver-kubelet-client",
                "vx11-apiserver",
                Some("system:masters"),
            ),
        ] {
            let pair = issue(&ca, user, group, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
            write(&dir.join(format!("{file}.crt")), &pair.cert_pem)?;
            write(&dir.join(format!("{file}.key")), &pair.key_pem)?;
        }

        let sa_key = KeyPair::generate()?;
        write(&pki.service_account_key(), &sa_key.serialize_pem())?;
        write(&pki.service_account_public_key(), &sa_key.public_key_pem())?;
        write(&complete, PKI_LAYOUT)?;
        Ok(pki)
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// Issues a certificate for `common_name` (user name, for client certificates) in group
/// `organization`, signed by `ca`.
fn issue(
    ca: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    subject_alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair> {
    let key = KeyPair::generate()?;
    let sans: Vec<String> = subject_alt_names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = name(common_name, organization);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// Writes a PEM file readable by its owner only: the private keys are among them.
fn write(path: &Path, contents: &str) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
