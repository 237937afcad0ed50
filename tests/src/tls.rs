//! Certificates generated at test time: a CA, a server certificate for 127.0.0.1 and
//! `localhost`, and a client certificate, written as PEM files into a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A throwaway public key infrastructure for TLS tests: one CA that signs one server
/// certificate (for `127.0.0.1` and `localhost`) and one client certificate.
///
/// The files live in a temporary directory removed when the value is dropped; keep it alive as
/// long as a server or client uses them. Pass it to
/// [`NatsServerBuilder::tls`](crate::NatsServerBuilder::tls).
///
/// ```
/// let pki = kvtk_tests::TestPki::generate();
/// assert!(pki.ca_file().exists() && pki.client_key_file().exists());
/// ```
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

const CA: &str = "ca.pem";
const SERVER_CERT: &str = "server-cert.pem";
const SERVER_KEY: &str = "server-key.pem";
const CLIENT_CERT: &str = "client-cert.pem";
const CLIENT_KEY: &str = "client-key.pem";
const OTHER_CA: &str = "other-ca.pem";

impl TestPki {
    /// Generates the CA, the server and the client certificate (ECDSA P-256).
    ///
    /// # Panics
    ///
    /// When a key or certificate cannot be generated or written.
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("kv-tests-pki-")
            .tempdir()
            .expect("kvtk-tests: cannot create a temporary directory for certificates");
        let (other, _) = new_ca("kvtk-tests unrelated CA");
        let (ca, ca_key) = new_ca("kvtk-tests CA");
        let (server, server_key) = leaf(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
            &ca_key,
        );
        let (client, client_key) = leaf(
            &["kv-tests-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
            &ca_key,
        );
        let write = |name: &str, pem: String| {
            fs::write(dir.path().join(name), pem).expect("kvtk-tests: cannot write a PEM file");
        };
        write(CA, ca.pem());
        write(OTHER_CA, other.pem());
        write(SERVER_CERT, server.pem());
        write(SERVER_KEY, server_key.serialize_pem());
        write(CLIENT_CERT, client.pem());
        write(CLIENT_KEY, client_key.serialize_pem());
        TestPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate that signed the server and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.path(CA)
    }

    /// A CA certificate that signed nothing here: trusting only it, a client must refuse
    /// the server.
    pub fn unrelated_ca_file(&self) -> PathBuf {
        self.path(OTHER_CA)
    }

    /// The server certificate (SANs `127.0.0.1` and `localhost`).
    pub fn server_cert_file(&self) -> PathBuf {
        self.path(SERVER_CERT)
    }

    /// The server's private key.
    pub fn server_key_file(&self) -> PathBuf {
        self.path(SERVER_KEY)
    }

    /// The client certificate, for mutual TLS.
    pub fn client_cert_file(&self) -> PathBuf {
        self.path(CLIENT_CERT)
    }

    /// The client's private key.
    pub fn client_key_file(&self) -> PathBuf {
        self.path(CLIENT_KEY)
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn new_ca(name: &str) -> (Certificate, KeyPair) {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).expect("kvtk-tests: CA parameters are valid");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("kvtk-tests: cannot generate a key");
    let cert = params
        .self_signed(&key)
        .expect("kvtk-tests: cannot self-sign the CA");
    (cert, key)
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> (Certificate, KeyPair) {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("kvtk-tests: certificate names are valid");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("kvtk-tests"),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("kvtk-tests: cannot generate a key");
    let cert = params
        .signed_by(&key, ca, ca_key)
        .expect("kvtk-tests: cannot sign a certificate");
    (cert, key)
}
