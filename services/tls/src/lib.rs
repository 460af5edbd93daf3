//! Identities of punktfunk/1 peers and how they verify each other.
//!
//! Host and client each own a self-signed certificate, created on first start and kept as 0600
//! PEM files in the config directory. The SHA-256 of the certificate's DER is the peer's
//! **fingerprint**, its identity. There is no CA: trust comes from pairing (a SPAKE2 PIN
//! ceremony that authenticates both fingerprints), after which
//! - the host admits a client to a session only if its fingerprint is in the paired list (an
//!   application check after the handshake: the TLS layer accepts any client certificate but
//!   verifies the handshake signature, so the client provably holds the key);
//! - the client pins the host's fingerprint: the TLS handshake fails on any other certificate.
//!
//! Only TLS 1.3 (QUIC requires it), ALPN `punktfunk/1`, the ring crypto provider.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// The ALPN protocol id of punktfunk/1: the protocol's name ([`punktfunk_proto::PROTOCOL_NAME`]).
pub const ALPN: &[u8] = punktfunk_proto::PROTOCOL_NAME.as_bytes();

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert: &[u8]) -> Self {
        Self(Sha256::digest(cert).into())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }

    /// A short form for humans: the first 16 hex digits, grouped.
    pub fn short(&self) -> String {
        let h = self.to_hex();
        format!("{}:{}:{}:{}", &h[0..4], &h[4..8], &h[8..12], &h[12..16])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// Why a TLS identity could not be loaded, created or turned into a TLS config.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not the PEM it should be.
    #[error("{path} is not a valid PEM {what}: {detail}")]
    Pem {
        /// The file concerned.
        path: PathBuf,
        /// What it should hold (certificate or private key).
        what: &'static str,
        /// Why parsing failed.
        detail: String,
    },
    #[error("{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    /// The private key file is readable by group or others.
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Generating a self-signed certificate failed (the reason is given).
    #[error("cannot create a certificate: {0}")]
    Generate(String),
    /// rustls rejected the certificate, key or configuration (the reason is given).
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A peer's certificate and private key.
pub struct Identity {
    /// The DER-encoded self-signed certificate.
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    /// The certificate's SHA-256 fingerprint, the peer's identity.
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads `<dir>/<name>.crt` + `<dir>/<name>.key`, or creates them (0600) on first use.
    /// A key file readable by group or others is refused, not silently used.
    pub fn load_or_create(dir: &Path, name: &str, subject: &str) -> Result<Self, IdentityError> {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        if cert_path.exists() && key_path.exists() {
            return Self::load(&cert_path, &key_path);
        }
        let generated = rcgen::generate_simple_self_signed(vec![subject.to_string()])
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        write_private(&cert_path, generated.cert.pem().as_bytes()).map_err(io(&cert_path))?;
        tracing::info!(cert = %cert_path.display(), "created a new identity");
        Self::load(&cert_path, &key_path)
    }

    /// Loads an existing certificate and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let meta = std::fs::metadata(key_path).map_err(|source| IdentityError::Io {
            path: key_path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: key_path.to_path_buf(),
                mode,
            });
        }
        let cert = CertificateDer::from_pem_file(cert_path).map_err(|e| IdentityError::Pem {
            path: cert_path.to_path_buf(),
            what: "certificate",
            detail: e.to_string(),
        })?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| IdentityError::Pem {
            path: key_path.to_path_buf(),
            what: "private key",
            detail: e.to_string(),
        })?;
        let fingerprint = Fingerprint::of(&cert);
        Ok(Self {
            cert,
            key,
            fingerprint,
        })
    }

    /// rustls server config: TLS 1.3, ALPN punktfunk/1, client certificates required (any
    /// self-signed one; the fingerprint is checked by the application against paired clients).
    pub fn server_config(
        &self,
    ) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, IdentityError> {
        let provider = provider();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(Arc::new(AnyClientCert::quic(provider)))
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(tls)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(cfg).map_err(tls)?;
        Ok(Arc::new(quic))
    }

    /// rustls client config presenting this identity. With `pinned = Some(fp)` the handshake
    /// fails unless the host's certificate has that fingerprint; `None` accepts any host
    /// certificate (discovery and pairing only — the pairing ceremony then authenticates it).
    pub fn client_config(
        &self,
        pinned: Option<Fingerprint>,
    ) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, IdentityError> {
        let provider = provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedHost { pinned, provider }))
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(tls)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(tls)?;
        Ok(Arc::new(quic))
    }
}

fn tls(e: impl fmt::Display) -> IdentityError {
    IdentityError::Tls(e.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes a file readable by its owner only (created 0600, never briefly wider).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The fingerprint of the peer of an established QUIC connection.
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| Fingerprint::of(c))
}

/// QUIC is TLS 1.3 only; a TLS 1.2 signature never reaches us, and is refused if it does.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// The handshake signature check both verifiers share: the peer holds its certificate's key.
fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Accepts any client certificate whose handshake signature verifies; who the client is, is
/// its fingerprint, checked against the paired set by the application. Two policies share it:
/// punktfunk/1's QUIC ([`AnyClientCert::quic`]: certificate mandatory, TLS 1.3 only) and
/// GameStream's HTTPS port ([`AnyClientCert::gamestream`]: a client without a certificate is let
/// in as unpaired, and TLS 1.2 signatures verify, as Moonlight may speak it).
#[derive(Debug)]
pub struct AnyClientCert {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
    tls12: bool,
}

impl AnyClientCert {
    /// punktfunk/1: a certificate is required, TLS 1.2 is refused.
    pub fn quic(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            mandatory: true,
            tls12: false,
        }
    }

    /// GameStream's HTTPS port (spec §2.3): asks for a certificate, lets a client without one
    /// in (it is then unpaired: the XML 401), and verifies TLS 1.2 signatures too. Aborting the
    /// handshake instead would make Moonlight believe the host's certificate changed.
    pub fn gamestream(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            mandatory: false,
            tls12: true,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Identity is the fingerprint, checked against the paired list by the application.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.tls12 {
            return tls12_refused();
        }
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts the host certificate with the pinned fingerprint (or any, when nothing is pinned).
#[derive(Debug)]
struct PinnedHost {
    pinned: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pinned {
            None => Ok(ServerCertVerified::assertion()),
            Some(want) => {
                let got = Fingerprint::of(end_entity);
                if got == want {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "host fingerprint {} does not match the paired {}; if the host was reinstalled, pair again",
                        got.short(),
                        want.short()
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn identity_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), "host", "punktfunk-host").unwrap();
        let b = Identity::load_or_create(dir.path(), "host", "punktfunk-host").unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        for f in ["host.crt", "host.key"] {
            assert_eq!(
                std::fs::metadata(dir.path().join(f)).unwrap().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn loose_key_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path(), "c", "x").unwrap();
        let key = dir.path().join("c.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load_or_create(dir.path(), "c", "x").unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn fingerprint_hex_round_trip() {
        let fp = Fingerprint::of(b"cert");
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert_eq!(Fingerprint::from_hex(&fp.to_hex().to_uppercase()), Some(fp));
        assert_eq!(Fingerprint::from_hex("abc"), None);
        assert_eq!(Fingerprint::from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn configs_build() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::load_or_create(dir.path(), "h", "h").unwrap();
        id.server_config().unwrap();
        id.client_config(None).unwrap();
        id.client_config(Some(id.fingerprint)).unwrap();
    }
}

#[cfg(test)]
mod quic_tests {
    use super::*;
    use std::net::SocketAddr;

    async fn handshake(
        server: &Identity,
        client: &Identity,
        pinned: Option<Fingerprint>,
    ) -> Result<(Fingerprint, Fingerprint), String> {
        let server_cfg = quinn::ServerConfig::with_crypto(server.server_config().unwrap());
        let ep = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse::<SocketAddr>().unwrap())
            .unwrap();
        let addr = ep.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let conn = ep.accept().await?.await.ok()?;
            peer_fingerprint(&conn)
        });
        let mut cep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        cep.set_default_client_config(quinn::ClientConfig::new(
            client.client_config(pinned).unwrap(),
        ));
        let conn = cep
            .connect(addr, "punktfunk")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let host_fp = peer_fingerprint(&conn).ok_or("no host certificate")?;
        let client_fp = accept
            .await
            .map_err(|e| e.to_string())?
            .ok_or("server saw no client certificate")?;
        Ok((host_fp, client_fp))
    }

    #[tokio::test]
    async fn pinned_handshake_sees_both_fingerprints_and_a_wrong_pin_fails() {
        let dir = tempfile::tempdir().unwrap();
        let host = Identity::load_or_create(dir.path(), "host", "host").unwrap();
        let client = Identity::load_or_create(dir.path(), "client", "client").unwrap();
        let (h, c) = handshake(&host, &client, Some(host.fingerprint))
            .await
            .unwrap();
        assert_eq!(h, host.fingerprint);
        assert_eq!(c, client.fingerprint);
        let (h, _) = handshake(&host, &client, None).await.unwrap();
        assert_eq!(h, host.fingerprint);
        let err = handshake(&host, &client, Some(Fingerprint([9; 32])))
            .await
            .unwrap_err();
        assert!(err.contains("does not match the paired"), "{err}");
    }
}
