//! GameStream PIN pairing (spec §3.3), the host's side of one attempt, fed the phases' query
//! values and the PIN; no I/O. Moonlight shows the 4-digit PIN, the user types it on the host
//! (`punktfunkctl pair --pin NNNN`), which completes the waiting first phase.
//!
//! ADAPTER: this state machine belongs in the sans-IO `punktfunk-gamestream` crate (branch
//! gs-core); it lives here, clearly separated, until that crate's pairing lands, and is then
//! replaced by it (the shell only calls the five methods below).
//!
//! Call order: [`Attempt::start`] (phase 1, `getservercert`) → [`Attempt::set_pin`] →
//! [`Attempt::client_challenge`] (phase 2) → [`Attempt::server_challenge_response`] (phase 3)
//! → [`Attempt::client_pairing_secret`] (phase 4, which yields the certificate to trust).
//! Phase 5 (`pairchallenge` over HTTPS) is an authorization check in the shell. Any call out of
//! order, or any failure, is an error: the shell then drops the attempt.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// Bytes of the salt, challenges and secrets.
const NONCE: usize = 16;
/// Bytes of a pairing hash (SHA-256, appversion major 7).
const HASH: usize = 32;
/// Upper bound of a client certificate's PEM text (real ones are ~1.1 KB).
pub const MAX_CLIENT_CERT_PEM: usize = 16 * 1024;
/// Upper bound of a client's RSA signature (RSA-8192).
const MAX_SIGNATURE: usize = 1024;

/// What went wrong in an attempt; the message is what the host logs and counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    #[error("malformed pairing request: {0}")]
    Malformed(&'static str),
    #[error("pairing phase out of order: {0}")]
    OutOfOrder(&'static str),
    #[error("the client certificate is unusable: {0}")]
    BadCertificate(String),
    #[error("the PIN did not match (the client's proof of the PIN is wrong)")]
    WrongPin,
    #[error("the client's signature does not verify with its certificate")]
    BadSignature,
}

enum Phase {
    WaitingForPin,
    Keyed {
        key: [u8; NONCE],
    },
    Challenged {
        key: [u8; NONCE],
        server_secret: [u8; NONCE],
        server_challenge: [u8; NONCE],
    },
    Responded {
        server_challenge: [u8; NONCE],
        client_hash: [u8; HASH],
    },
    Done,
}

/// One pairing attempt of one client.
pub struct Attempt {
    /// The client's certificate from phase 1 (trusted after phase 4).
    pub client_cert: CertificateDer<'static>,
    client_signature: Vec<u8>,
    salt: [u8; NONCE],
    phase: Phase,
}

impl Attempt {
    /// Phase 1: `salt` (32 hex) and `clientcert` (hex of the PEM text).
    pub fn start(salt_hex: &str, cert_hex: &str) -> Result<Self, PairingError> {
        let salt = fixed::<NONCE>(salt_hex, "salt must be 16 bytes of hex")?;
        if cert_hex.len() > 2 * MAX_CLIENT_CERT_PEM {
            return Err(PairingError::Malformed("clientcert is too long"));
        }
        let pem = unhex(cert_hex).ok_or(PairingError::Malformed("clientcert is not hex"))?;
        let client_cert = CertificateDer::from_pem_slice(&pem)
            .map_err(|e| PairingError::BadCertificate(format!("not a PEM certificate: {e}")))?;
        let client_signature = cert_signature(&client_cert)?;
        Ok(Self {
            client_cert,
            client_signature,
            salt,
            phase: Phase::WaitingForPin,
        })
    }

    /// Whether phase 1 still waits for the PIN.
    pub fn waiting_for_pin(&self) -> bool {
        matches!(self.phase, Phase::WaitingForPin)
    }

    /// The PIN the user typed: K = SHA-256(salt ‖ PIN)[..16].
    pub fn set_pin(&mut self, pin: &str) -> Result<(), PairingError> {
        if !matches!(self.phase, Phase::WaitingForPin) {
            return Err(PairingError::OutOfOrder("the PIN is already set"));
        }
        let digest = Sha256::new()
            .chain_update(self.salt)
            .chain_update(pin.as_bytes())
            .finalize();
        let mut key = [0u8; NONCE];
        key.copy_from_slice(&digest[..NONCE]);
        self.phase = Phase::Keyed { key };
        Ok(())
    }

    /// Phase 2: the client's encrypted challenge; returns `challengeresponse` =
    /// AES_K(SHA-256(challenge ‖ sig(host cert) ‖ server_secret) ‖ server_challenge).
    pub fn client_challenge(
        &mut self,
        challenge_hex: &str,
        host_cert_signature: &[u8],
        random: [[u8; NONCE]; 2],
    ) -> Result<Vec<u8>, PairingError> {
        let Phase::Keyed { key } = self.phase else {
            return Err(PairingError::OutOfOrder("clientchallenge before the PIN"));
        };
        let mut challenge = fixed::<NONCE>(challenge_hex, "clientchallenge must be 16 bytes")?;
        ecb(&key, &mut challenge, false);
        let [server_secret, server_challenge] = random;
        let hash = Sha256::new()
            .chain_update(challenge)
            .chain_update(host_cert_signature)
            .chain_update(server_secret)
            .finalize();
        let mut reply = Vec::with_capacity(HASH + NONCE);
        reply.extend_from_slice(&hash);
        reply.extend_from_slice(&server_challenge);
        ecb(&key, &mut reply, true);
        self.phase = Phase::Challenged {
            key,
            server_secret,
            server_challenge,
        };
        Ok(reply)
    }

    /// Phase 3: the client's encrypted hash; returns the server secret (the shell appends its
    /// signature to make `pairingsecret`).
    pub fn server_challenge_response(
        &mut self,
        response_hex: &str,
    ) -> Result<[u8; NONCE], PairingError> {
        let Phase::Challenged {
            key,
            server_secret,
            server_challenge,
        } = self.phase
        else {
            return Err(PairingError::OutOfOrder(
                "serverchallengeresp before clientchallenge",
            ));
        };
        let mut client_hash = fixed::<HASH>(response_hex, "serverchallengeresp must be 32 bytes")?;
        ecb(&key, &mut client_hash, false);
        self.phase = Phase::Responded {
            server_challenge,
            client_hash,
        };
        Ok(server_secret)
    }

    /// Phase 4: `clientpairingsecret` = client_secret ‖ Sign(client key, client_secret). The
    /// client proved the PIN if SHA-256(server_challenge ‖ sig(client cert) ‖ client_secret)
    /// equals its phase-3 hash; its signature must verify with the phase-1 certificate.
    pub fn client_pairing_secret(&mut self, secret_hex: &str) -> Result<(), PairingError> {
        let Phase::Responded {
            server_challenge,
            client_hash,
        } = self.phase
        else {
            return Err(PairingError::OutOfOrder(
                "clientpairingsecret before serverchallengeresp",
            ));
        };
        self.phase = Phase::Done;
        if secret_hex.len() > 2 * (NONCE + MAX_SIGNATURE) {
            return Err(PairingError::Malformed("clientpairingsecret is too long"));
        }
        let bytes =
            unhex(secret_hex).ok_or(PairingError::Malformed("clientpairingsecret is not hex"))?;
        if bytes.len() <= NONCE {
            return Err(PairingError::Malformed("clientpairingsecret is too short"));
        }
        let (client_secret, signature) = bytes.split_at(NONCE);
        let expected = Sha256::new()
            .chain_update(server_challenge)
            .chain_update(&self.client_signature)
            .chain_update(client_secret)
            .finalize();
        // Compared without an early exit (the hash is the client's proof of the PIN).
        let diff = expected
            .iter()
            .zip(client_hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(PairingError::WrongPin);
        }
        verify_signature(&self.client_cert, client_secret, signature)
    }
}

/// AES-128-ECB without padding over whole blocks (`data.len()` is a multiple of 16 here).
fn ecb(key: &[u8; NONCE], data: &mut [u8], encrypt: bool) {
    let cipher = aes::Aes128::new(&(*key).into());
    for chunk in data.chunks_exact_mut(16) {
        let mut block = aes::Block::default();
        block.copy_from_slice(chunk);
        if encrypt {
            cipher.encrypt_block(&mut block);
        } else {
            cipher.decrypt_block(&mut block);
        }
        chunk.copy_from_slice(&block);
    }
}

/// The raw signatureValue bytes of a certificate (what the pairing hashes cover).
pub fn cert_signature(der: &[u8]) -> Result<Vec<u8>, PairingError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PairingError::BadCertificate(e.to_string()))?;
    Ok(cert.signature_value.data.to_vec())
}

/// RSA PKCS#1 v1.5 SHA-256 verification of `sig` over `msg` with the key of `cert_der`.
pub fn verify_signature(cert_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), PairingError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PairingError::BadCertificate(e.to_string()))?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        cert.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(msg, sig).map_err(|_| PairingError::BadSignature)
}

/// Exactly `N` bytes from hex.
fn fixed<const N: usize>(hex: &str, what: &'static str) -> Result<[u8; N], PairingError> {
    if hex.len() != 2 * N {
        return Err(PairingError::Malformed(what));
    }
    let bytes = unhex(hex).ok_or(PairingError::Malformed(what))?;
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Hex (either case) to bytes; `None` for odd lengths or other characters.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Bytes to upper-case hex (what Sunshine sends).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appendix C: salt 00..0f, PIN "1234" → K = bad0b4f7cae08eb7c1b5acc763a8ed25.
    #[test]
    fn the_pairing_key_matches_the_spec_vector() {
        let salt: Vec<u8> = (0u8..16).collect();
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let mut a = Attempt::start(&hex(&salt), &hex(cert.cert.pem().as_bytes())).unwrap();
        a.set_pin("1234").unwrap();
        let Phase::Keyed { key } = a.phase else {
            panic!("keyed")
        };
        assert_eq!(hex(&key), "BAD0B4F7CAE08EB7C1B5ACC763A8ED25");
    }

    #[test]
    fn phases_out_of_order_and_bad_hex_are_errors() {
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let pem = hex(cert.cert.pem().as_bytes());
        assert!(Attempt::start("00", &pem).is_err());
        assert!(Attempt::start(&"0".repeat(32), "zz").is_err());
        let mut a = Attempt::start(&"0".repeat(32), &pem).unwrap();
        assert_eq!(
            a.client_challenge(&"0".repeat(32), &[], [[0; 16]; 2]),
            Err(PairingError::OutOfOrder("clientchallenge before the PIN"))
        );
        a.set_pin("1234").unwrap();
        assert!(a.client_challenge("xyz", &[], [[0; 16]; 2]).is_err());
        assert!(a.client_pairing_secret("00").is_err());
        assert_eq!(unhex("0aF1"), Some(vec![0x0a, 0xf1]));
        assert_eq!(unhex("0"), None);
    }
}
