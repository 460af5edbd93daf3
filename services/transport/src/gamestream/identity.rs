//! The host's GameStream identity: a self-signed RSA-2048 certificate (Moonlight clients verify
//! pairing signatures with RSA and pin this certificate byte for byte, so it must be RSA and must
//! never change), kept 0600 in the config dir beside punktfunk/1's identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File names inside the config dir.
const CERT_FILE: &str = "gamestream-host.crt";
const KEY_FILE: &str = "gamestream-host.key";
/// The subject Moonlight shows nowhere; Sunshine uses "Sunshine Gamestream Host".
const SUBJECT: &str = "punktfunk GameStream host";

/// Why the identity cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the GameStream host key: {0}")]
    Create(String),
}

/// The loaded identity.
pub struct HostIdentity {
    /// The certificate as PEM text (sent hex-encoded as `plaincert` during pairing).
    pub cert_pem: String,
    /// The certificate as DER (presented on HTTPS).
    pub cert_der: CertificateDer<'static>,
    /// The certificate's signatureValue bytes (what the pairing hashes cover).
    pub cert_signature: Vec<u8>,
    key_der: Vec<u8>,
    signer: RsaKeyPair,
    /// A stable host id for `/serverinfo` (derived from the certificate: it changes exactly
    /// when the pinned certificate does).
    pub unique_id: String,
}

impl HostIdentity {
    /// Loads `gamestream-host.{crt,key}` from `dir`, creating them on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if !cert_path.exists() || !key_path.exists() {
            create(&cert_path, &key_path)?;
        }
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| IdentityError::Read {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let bad = |path: &Path, detail: String| IdentityError::Read {
            path: path.to_path_buf(),
            detail: format!(
                "{detail}; remove it to create a new one (Moonlight clients then pair again)"
            ),
        };
        let cert_der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| bad(&cert_path, e.to_string()))?;
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad(&key_path, e.to_string()))?;
        let signer = RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der())
            .map_err(|e| bad(&key_path, e.to_string()))?;
        let cert_signature = super::pairing::cert_signature(&cert_der)
            .map_err(|e| bad(&cert_path, e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &cert_der);
        let h: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let unique_id = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        Ok(Self {
            cert_pem: String::from_utf8_lossy(&cert_pem).into_owned(),
            cert_der,
            cert_signature,
            key_der: key_der.secret_pkcs8_der().to_vec(),
            signer,
            unique_id,
        })
    }

    /// RSA PKCS#1 v1.5 SHA-256 signature of `msg` with the host key.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.signer.public().modulus_len()];
        // Signing with a valid key into a buffer of the modulus size cannot fail.
        if self
            .signer
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .is_err()
        {
            sig.clear();
        }
        sig
    }

    /// The HTTPS server configuration: this certificate, TLS 1.2 and 1.3, HTTP/1.1, a client
    /// certificate requested but not required (authorization happens per request).
    pub fn tls_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(super::tls::AnyClientCert::new(provider.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Generates the RSA-2048 key and a 20-year self-signed certificate, both written 0600.
fn create(cert_path: &Path, key_path: &Path) -> Result<(), IdentityError> {
    use rsa::pkcs8::EncodePrivateKey;
    let err = |e: &dyn std::fmt::Display| IdentityError::Create(e.to_string());
    let key = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 2048).map_err(|e| err(&e))?;
    let pkcs8 = key.to_pkcs8_der().map_err(|e| err(&e))?;
    let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| err(&e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SUBJECT);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2054, 1, 1);
    let cert = params.self_signed(&pair).map_err(|e| err(&e))?;
    let write = |path: &Path, bytes: &[u8]| {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|source| IdentityError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        punktfunk_tls::write_private(path, bytes).map_err(|source| IdentityError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    write(key_path, pair.serialize_pem().as_bytes())?;
    write(cert_path, cert.pem().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_rsa_stable_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostIdentity::load_or_create(dir.path()).unwrap();
        let b = HostIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(
            a.cert_der, b.cert_der,
            "a restart keeps the pinned certificate"
        );
        assert_eq!(a.unique_id, b.unique_id);
        assert_eq!(a.cert_signature.len(), 256, "RSA-2048 signature bytes");
        let sig = a.sign(b"secret");
        assert_eq!(sig.len(), 256);
        super::super::pairing::verify_signature(&a.cert_der, b"secret", &sig).unwrap();
        assert!(a.tls_config().is_ok());
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
