//! Where the host's GameStream identity lives: `gamestream-host.crt` and `gamestream-host.key`
//! (0600) in the config dir, beside punktfunk/1's identity. The identity itself (RSA-2048, what
//! Moonlight pins byte for byte) is `punktfunk_gamestream::pairing::HostIdentity`; this module
//! only persists it and builds the HTTPS server configuration around it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use punktfunk_gamestream::pairing::HostIdentity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File names inside the config dir.
const CERT_FILE: &str = "gamestream-host.crt";
const KEY_FILE: &str = "gamestream-host.key";

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
    #[error("cannot create the GameStream host identity: {0}")]
    Create(String),
}

/// Loads the identity from `dir`, creating and storing it on first start.
pub fn load_or_create(dir: &Path) -> Result<Arc<HostIdentity>, IdentityError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        let id = HostIdentity::generate().map_err(|e| IdentityError::Create(e.to_string()))?;
        write(&key_path, id.key_pem().as_bytes())?;
        write(&cert_path, id.cert().pem().as_bytes())?;
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| IdentityError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    };
    let (cert, key) = (read(&cert_path)?, read(&key_path)?);
    HostIdentity::from_pem(&cert, &key)
        .map(Arc::new)
        .map_err(|e| IdentityError::Read {
            path: cert_path,
            detail: format!(
                "{e}; remove {CERT_FILE} and {KEY_FILE} to create a new identity (Moonlight clients then pair again)"
            ),
        })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    punktfunk_tls::write_private(path, bytes).map_err(err)
}

/// A stable host id for `/serverinfo`, derived from the certificate: it changes exactly when
/// the pinned certificate does (a UUID-shaped rendering of its SHA-256).
pub fn unique_id(id: &HostIdentity) -> String {
    let fp = id.cert().fingerprint();
    let h: String = fp[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The HTTPS server configuration: this certificate, TLS 1.2 and 1.3, HTTP/1.1, a client
/// certificate requested but not required (authorization happens per request).
pub fn tls_config(id: &HostIdentity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(punktfunk_tls::AnyClientCert::gamestream(provider.clone()));
    let key = PrivatePkcs8KeyDer::from_pem_slice(id.key_pem().as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(id.cert().der().to_vec())],
            PrivateKeyDer::Pkcs8(key),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_stored_0600_and_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(
            a.cert().der(),
            b.cert().der(),
            "a restart keeps the pinned certificate"
        );
        assert_eq!(unique_id(&a), unique_id(&b));
        assert!(tls_config(&a).is_ok());
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
