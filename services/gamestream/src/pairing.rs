//! GameStream PIN pairing (`/pair`, five phases, SHA-256 generation) and the host identity.
//!
//! # The ceremony (host view)
//!
//! ```text
//! 1 HTTP  phrase=getservercert&salt=S&clientcert=hex(PEM)   held open until the PIN is typed
//!         → paired=1, plaincert=hex(host PEM)                  K = SHA-256(S ‖ PIN)[..16]
//! 2 HTTP  clientchallenge=hex(AES_K(c))
//!         → challengeresponse=hex(AES_K(SHA-256(c ‖ sig(host) ‖ server_secret) ‖ server_challenge))
//! 3 HTTP  serverchallengeresp=hex(AES_K(client_hash))
//!         → pairingsecret=hex(server_secret ‖ RSA-SHA256(host key, server_secret))
//! 4 HTTP  clientpairingsecret=hex(client_secret ‖ RSA-SHA256(client key, client_secret))
//!         host checks client_hash == SHA-256(server_challenge ‖ sig(client) ‖ client_secret)
//!         and the signature → the client certificate is paired ([`PairingEvent::Paired`])
//! 5 HTTPS phrase=pairchallenge, with the new certificate → paired=1 if it is now trusted
//! ```
//! `AES` is AES-128-ECB without padding; `sig(cert)` the raw signatureValue of the certificate.
//! The clients detect a wrong PIN themselves after phase 2 and call `/unpair`; the host
//! detects it in phase 4.
//!
//! # Call order ([`PairingHost`])
//!
//! * `/pair` → [`PairingHost::handle_pair`]`(now, query, https)`. It returns either the reply
//!   ([`PairStep::Reply`]) or, for phase 1, [`PairStep::AwaitPin`]: the shell keeps that HTTP
//!   request open and calls [`PairingHost::poll_pending`] whenever the machine may have moved
//!   (after `submit_pin` and at `poll_timeout`) until it yields the reply.
//! * the host user (`punktfunkctl pair --pin NNNN`) → [`PairingHost::submit_pin`].
//! * `/unpair` → [`PairingHost::handle_unpair`].
//! * time → [`PairingHost::handle_timeout`] at [`PairingHost::poll_timeout`].
//! * [`PairingHost::poll_event`] after each call: pending, paired (persist the certificate,
//!   then authorize HTTPS with it), failed, locked.
//!
//! # Security rules
//!
//! * One pairing waits at a time; a PIN is accepted only for it, within
//!   [`PairingPolicy::pin_deadline_ns`] of phase 1; phases 2-4 must follow within
//!   [`PairingPolicy::completion_deadline_ns`] of the PIN.
//! * A pairing that had a PIN but did not complete (wrong PIN, bad signature, abandoned,
//!   out of order, timed out) is a failure; [`PairingPolicy::max_failures`] consecutive
//!   failures lock pairing for [`PairingPolicy::lockout_ns`] (no phase 1, no PIN).
//! * Keys, secrets, the PIN and the pairing key never appear in `Debug` output or errors.

use crate::http::{Query, hex_encode};
use crate::xml;
use aes::Aes128;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// Longest client certificate accepted in phase 1 (PEM bytes; RSA-4096 PEM is ~1.9 KB).
pub const MAX_CLIENT_CERT_PEM: usize = 6 * 1024;
/// Longest `clientpairingsecret` (16 bytes of secret plus an RSA-4096 signature).
pub const MAX_CLIENT_PAIRING_SECRET: usize = 16 + 512;
/// Longest accepted device name / uniqueid (they are shown to the user).
pub const MAX_NAME_LEN: usize = 64;
/// Accepted PIN lengths (Moonlight shows 4 digits).
pub const PIN_DIGITS: std::ops::RangeInclusive<usize> = 4..=8;

const NS: u64 = 1_000_000_000;

/// Deadlines and the lockout of [`PairingHost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairingPolicy {
    /// A waiting pairing takes a PIN for this long after phase 1.
    pub pin_deadline_ns: u64,
    /// Phases 2-4 must complete within this long after the PIN.
    pub completion_deadline_ns: u64,
    /// Consecutive failed pairings (with a PIN) that lock pairing.
    pub max_failures: u32,
    /// How long pairing stays locked.
    pub lockout_ns: u64,
}

impl Default for PairingPolicy {
    fn default() -> Self {
        Self {
            pin_deadline_ns: 120 * NS,
            completion_deadline_ns: 30 * NS,
            max_failures: 3,
            lockout_ns: 300 * NS,
        }
    }
}

/// Why an identity or certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not PEM, or not the expected PEM block.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// Not a parsable X.509 certificate.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// The key is not an RSA PKCS#8 key ring accepts.
    #[error("invalid RSA private key: {0}")]
    Key(String),
    /// Generating the key or certificate failed.
    #[error("cannot generate the host identity: {0}")]
    Generate(String),
}

/// A parsed certificate: PEM text, DER, raw signature and RSA public key.
#[derive(Clone)]
pub struct Certificate {
    pem: String,
    der: Vec<u8>,
    signature: Vec<u8>,
    public_key: Vec<u8>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Certificate({})",
            hex_encode(&fingerprint(&self.der)[..8])
        )
    }
}

impl Certificate {
    /// Parses one PEM `CERTIFICATE` block.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, IdentityError> {
        let p = pem::parse(pem_text).map_err(|e| IdentityError::Pem(e.to_string()))?;
        if p.tag() != "CERTIFICATE" {
            return Err(IdentityError::Pem(format!(
                "expected CERTIFICATE, got {}",
                p.tag()
            )));
        }
        let text = std::str::from_utf8(pem_text)
            .map_err(|_| IdentityError::Pem("not UTF-8".into()))?
            .to_owned();
        Self::from_parts(text, p.into_contents())
    }

    /// Parses a DER certificate (as TLS presents it).
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        Self::from_parts(text, der.to_vec())
    }

    fn from_parts(pem: String, der: Vec<u8>) -> Result<Self, IdentityError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(IdentityError::Certificate("trailing bytes".into()));
        }
        let signature = cert.signature_value.data.to_vec();
        let public_key = cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        Ok(Self {
            pem,
            der,
            signature,
            public_key,
        })
    }

    /// The PEM text (what `plaincert` carries, hex-encoded).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The DER bytes (what TLS presents; compare these to authorize).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The raw signatureValue bytes (what the pairing hashes).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// SHA-256 of the DER (the identity punktfunk stores for every client).
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.der)
    }

    /// Verifies an RSA PKCS#1 v1.5 SHA-256 signature made with this certificate's key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &self.public_key,
        )
        .verify(message, signature)
        .is_ok()
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The host's stable RSA-2048 identity: the certificate served on HTTPS and in `plaincert`,
/// and its key (signs phase 3). Debug never shows the key.
pub struct HostIdentity {
    cert: Certificate,
    key: ring::signature::RsaKeyPair,
    key_pem: String,
}

impl fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostIdentity")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// The common name of generated host certificates (what Sunshine uses).
pub const HOST_CERT_CN: &str = "Sunshine Gamestream Host";

impl HostIdentity {
    /// Generates a new RSA-2048 key and a self-signed SHA-256 certificate valid for 20 years.
    /// Persist both PEMs (the key 0600): a new identity silently un-pairs every client.
    pub fn generate() -> Result<Self, IdentityError> {
        use rsa::pkcs8::EncodePrivateKey;
        let gen_err = |e: &dyn fmt::Display| IdentityError::Generate(e.to_string());
        let key =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| gen_err(&e))?;
        let der = key.to_pkcs8_der().map_err(|e| gen_err(&e))?;
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &der.as_bytes().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| gen_err(&e))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| gen_err(&e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, HOST_CERT_CN);
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let mut serial = [0u8; 16];
        rand::rng().fill_bytes(&mut serial);
        serial[0] &= 0x7F;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&kp).map_err(|e| gen_err(&e))?;
        Self::from_pem(&cert.pem(), &kp.serialize_pem())
    }

    /// Loads a persisted identity: the certificate PEM and the PKCS#8 `PRIVATE KEY` PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let cert = Certificate::from_pem(cert_pem.as_bytes())?;
        let k = pem::parse(key_pem).map_err(|e| IdentityError::Pem(e.to_string()))?;
        if k.tag() != "PRIVATE KEY" {
            return Err(IdentityError::Pem(format!(
                "expected PRIVATE KEY, got {}",
                k.tag()
            )));
        }
        let key = ring::signature::RsaKeyPair::from_pkcs8(k.contents())
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        Ok(Self {
            cert,
            key,
            key_pem: key_pem.to_owned(),
        })
    }

    /// The certificate.
    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    /// The private key as PKCS#8 PEM (for the TLS config and for persisting, mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// RSA PKCS#1 v1.5 SHA-256 signature of `message` with the host key (empty if signing
    /// failed, which the peer then refuses).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        // Signing with a valid key into a modulus-sized buffer cannot fail; an empty
        // signature makes the client refuse the pairing, which is the safe outcome.
        if self
            .key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .is_err()
        {
            sig.clear();
        }
        sig
    }
}

/// The pairing key: the first 16 bytes of SHA-256(salt ‖ PIN).
pub fn pairing_key(salt: &[u8; 16], pin: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(pin.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// AES-128-ECB without padding; `data.len()` must be a multiple of 16 (checked by callers).
fn ecb(key: &[u8; 16], data: &[u8], encrypt: bool) -> Vec<u8> {
    let c = Aes128::new(&Array::from(*key));
    let mut out = data.to_vec();
    for chunk in out.chunks_exact_mut(16) {
        let mut block = Array::<u8, _>::try_from(&*chunk).unwrap_or_default();
        if encrypt {
            c.encrypt_block(&mut block);
        } else {
            c.decrypt_block(&mut block);
        }
        chunk.copy_from_slice(&block);
    }
    out
}

/// AES-128-ECB encryption (the pairing's cipher), for clients and tests.
pub fn ecb_encrypt(key: &[u8; 16], data: &[u8]) -> Vec<u8> {
    ecb(key, data, true)
}

/// AES-128-ECB decryption.
pub fn ecb_decrypt(key: &[u8; 16], data: &[u8]) -> Vec<u8> {
    ecb(key, data, false)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Identifies a waiting phase-1 request (see [`PairStep::AwaitPin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingId(u64);

/// What the shell does with a `/pair` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairStep {
    /// Send this XML now.
    Reply(String),
    /// Phase 1: hold the request open and call [`PairingHost::poll_pending`] until it answers.
    AwaitPin(PendingId),
}

/// The answer for a held phase-1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinPoll {
    /// Still waiting for the PIN.
    Waiting,
    /// Send this XML now (the certificate, or a failure).
    Reply(String),
}

/// A waiting pairing, as the host user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInfo {
    /// The client's `uniqueid` (not an identity: many clients send `0123456789ABCDEF`).
    pub unique_id: String,
    /// The client certificate's SHA-256.
    pub fingerprint: [u8; 32],
    /// When phase 1 arrived.
    pub since_ns: u64,
    /// The PIN must be typed before this.
    pub pin_deadline_ns: u64,
    /// A PIN was typed and the client is completing phases 2-4.
    pub pin_entered: bool,
}

/// A newly paired client: persist the certificate, then authorize HTTPS requests with it.
#[derive(Clone, PartialEq, Eq)]
pub struct PairedClient {
    /// The client's `uniqueid`.
    pub unique_id: String,
    /// Its certificate (DER); compare TLS client certificates with it.
    pub cert_der: Vec<u8>,
    /// The same certificate as PEM text.
    pub cert_pem: String,
    /// SHA-256 of `cert_der`.
    pub fingerprint: [u8; 32],
}

impl fmt::Debug for PairedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairedClient")
            .field("unique_id", &self.unique_id)
            .field("fingerprint", &hex_encode(&self.fingerprint[..8]))
            .finish_non_exhaustive()
    }
}

/// Why a pairing failed (no secrets in here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    /// The client's proof did not match: the PIN typed was not the client's.
    #[error("wrong PIN")]
    WrongPin,
    /// The client's signature did not verify with its certificate.
    #[error("client signature invalid")]
    BadSignature,
    /// The client gave up (`/unpair`) or a newer phase 1 replaced it.
    #[error("client abandoned the pairing")]
    Abandoned,
    /// Nobody typed the PIN in time, or the client did not finish in time.
    #[error("pairing timed out")]
    TimedOut,
    /// A phase arrived out of order or malformed.
    #[error("pairing phase out of order or malformed")]
    Protocol,
}

/// What happened, for the shell (status line, persistence, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingEvent {
    /// A client waits for its PIN.
    Pending(PendingInfo),
    /// A client completed phase 4: persist it.
    Paired(PairedClient),
    /// A pairing ended without success.
    Failed {
        /// The client's `uniqueid`.
        unique_id: String,
        /// Why.
        reason: FailReason,
        /// It counted towards the lockout (a PIN had been typed).
        counted: bool,
    },
    /// Too many failures: pairing is refused until this time.
    Locked {
        /// Monotonic ns.
        until_ns: u64,
    },
}

/// Why [`PairingHost::submit_pin`] refused a PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// No Moonlight client is waiting: start pairing in Moonlight first.
    #[error("no Moonlight client is waiting for a PIN: start pairing in Moonlight first")]
    NoPendingPairing,
    /// The waiting client already got a PIN.
    #[error("a PIN was already entered for the waiting client")]
    AlreadyEntered,
    /// The PIN is not 4-8 decimal digits.
    #[error("a PIN is 4 to 8 digits, as Moonlight shows it")]
    BadFormat,
    /// Too many failed pairings; try again later.
    #[error("pairing is locked after repeated failures; try again in {remaining_s} s")]
    Locked {
        /// Seconds until pairing is possible again.
        remaining_s: u64,
    },
}

enum Phase {
    AwaitPin,
    CertReady {
        key: [u8; 16],
    },
    CertSent {
        key: [u8; 16],
    },
    ChallengeSent {
        key: [u8; 16],
        server_secret: [u8; 16],
        server_challenge: [u8; 16],
    },
    ResponseReceived {
        server_challenge: [u8; 16],
        client_hash: Vec<u8>,
    },
}

struct Pending {
    id: PendingId,
    unique_id: String,
    salt: [u8; 16],
    client: Certificate,
    since: u64,
    pin_at: Option<u64>,
    phase: Phase,
}

/// The host side of GameStream pairing. See the [module documentation](self) for the call
/// order and the rules.
pub struct PairingHost {
    identity: Arc<HostIdentity>,
    policy: PairingPolicy,
    pending: Option<Pending>,
    next_id: u64,
    /// Ids of phase-1 requests that ended without their certificate: they get a failure.
    failed_waiters: Vec<PendingId>,
    failures: u32,
    locked_until: Option<u64>,
    events: VecDeque<PairingEvent>,
}

impl fmt::Debug for PairingHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingHost")
            .field("pending", &self.pending.as_ref().map(|p| &p.unique_id))
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

fn fail_reply() -> PairStep {
    PairStep::Reply(xml::pair_failed("Pairing failed"))
}

impl PairingHost {
    /// A pairing host with `identity` (shared with the TLS config).
    pub fn new(identity: Arc<HostIdentity>, policy: PairingPolicy) -> Self {
        Self {
            identity,
            policy,
            pending: None,
            next_id: 1,
            failed_waiters: Vec::new(),
            failures: 0,
            locked_until: None,
            events: VecDeque::new(),
        }
    }

    /// The waiting pairing, if any.
    pub fn pending(&self) -> Option<PendingInfo> {
        self.pending.as_ref().map(|p| self.info(p))
    }

    /// Until when pairing is locked, if it is at `now`.
    pub fn locked_until(&self, now: u64) -> Option<u64> {
        self.locked_until.filter(|&t| t > now)
    }

    fn info(&self, p: &Pending) -> PendingInfo {
        PendingInfo {
            unique_id: p.unique_id.clone(),
            fingerprint: p.client.fingerprint(),
            since_ns: p.since,
            pin_deadline_ns: p.since.saturating_add(self.policy.pin_deadline_ns),
            pin_entered: p.pin_at.is_some(),
        }
    }

    /// Handles one `/pair` request. `https` is `None` on plain HTTP, `Some(authorized)` on
    /// HTTPS (whether the presented certificate is paired).
    pub fn handle_pair(&mut self, now: u64, query: &Query, https: Option<bool>) -> PairStep {
        self.handle_timeout(now);
        let unique_id = query.get("uniqueid").unwrap_or("");
        if unique_id.len() > MAX_NAME_LEN {
            return fail_reply();
        }
        let unique_id = unique_id.to_owned();
        if query.get("phrase") == Some("pairchallenge") {
            return PairStep::Reply(xml::pair_reply(https == Some(true), None));
        }
        // Phases 1-4 are plain-HTTP phases in every client we know, but Sunshine serves
        // `/pair` on both ports; they are accepted on either (the ceremony's crypto, not the
        // transport, protects them).
        if query.get("phrase") == Some("getservercert") {
            return self.phase1(now, unique_id, query);
        }
        // Phases 2-4 belong to the waiting pairing of the same uniqueid; anything else is
        // refused without touching it (another client cannot break someone's pairing).
        if self
            .pending
            .as_ref()
            .map(|p| p.unique_id != unique_id)
            .unwrap_or(true)
        {
            return fail_reply();
        }
        let step = if query.get("clientchallenge").is_some() {
            self.phase2(query)
        } else if query.get("serverchallengeresp").is_some() {
            self.phase3(query)
        } else if query.get("clientpairingsecret").is_some() {
            self.phase4(query)
        } else {
            Err(FailReason::Protocol)
        };
        match step {
            Ok(reply) => PairStep::Reply(reply),
            Err(reason) => {
                self.fail(now, reason);
                fail_reply()
            }
        }
    }

    fn phase1(&mut self, now: u64, unique_id: String, query: &Query) -> PairStep {
        if self.locked_until(now).is_some() {
            return PairStep::Reply(xml::pair_failed(
                "Pairing is locked after repeated failures",
            ));
        }
        let parsed = (|| {
            let salt: [u8; 16] = query.hex_exact("salt", 16).ok()?.try_into().ok()?;
            let pem = query.hex_bounded("clientcert", MAX_CLIENT_CERT_PEM).ok()?;
            Some((salt, Certificate::from_pem(&pem).ok()?))
        })();
        let Some((salt, client)) = parsed else {
            return fail_reply();
        };
        if let Some(p) = &self.pending {
            if p.unique_id != unique_id {
                // Someone else is pairing; an empty plaincert makes Moonlight-qt say
                // "pairing already in progress".
                return PairStep::Reply(xml::pair_reply(false, Some(("plaincert", ""))));
            }
            // The same client retried: the old attempt is abandoned.
            self.fail(now, FailReason::Abandoned);
        }
        let id = PendingId(self.next_id);
        self.next_id += 1;
        let p = Pending {
            id,
            unique_id,
            salt,
            client,
            since: now,
            pin_at: None,
            phase: Phase::AwaitPin,
        };
        self.events.push_back(PairingEvent::Pending(self.info(&p)));
        self.pending = Some(p);
        PairStep::AwaitPin(id)
    }

    /// The answer for the held phase-1 request `id`, once there is one.
    pub fn poll_pending(&mut self, now: u64, id: PendingId) -> PinPoll {
        self.handle_timeout(now);
        if let Some(i) = self.failed_waiters.iter().position(|w| *w == id) {
            self.failed_waiters.swap_remove(i);
            return PinPoll::Reply(xml::pair_failed("Pairing failed"));
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.id == id) else {
            return PinPoll::Reply(xml::pair_failed("Pairing failed"));
        };
        match p.phase {
            Phase::AwaitPin => PinPoll::Waiting,
            Phase::CertReady { key } => {
                p.phase = Phase::CertSent { key };
                let cert = hex_encode(self.identity.cert().pem().as_bytes());
                PinPoll::Reply(xml::pair_reply(true, Some(("plaincert", &cert))))
            }
            _ => PinPoll::Reply(xml::pair_failed("Pairing failed")),
        }
    }

    /// The host user typed `pin` for the waiting pairing.
    pub fn submit_pin(&mut self, now: u64, pin: &str) -> Result<PendingInfo, PinError> {
        self.handle_timeout(now);
        if let Some(until) = self.locked_until(now) {
            return Err(PinError::Locked {
                remaining_s: (until - now).div_ceil(NS),
            });
        }
        if !PIN_DIGITS.contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinError::BadFormat);
        }
        let p = self.pending.as_mut().ok_or(PinError::NoPendingPairing)?;
        if !matches!(p.phase, Phase::AwaitPin) {
            return Err(PinError::AlreadyEntered);
        }
        p.phase = Phase::CertReady {
            key: pairing_key(&p.salt, pin),
        };
        p.pin_at = Some(now);
        let p = self.pending.as_ref().ok_or(PinError::NoPendingPairing)?;
        Ok(self.info(p))
    }

    fn phase2(&mut self, query: &Query) -> Result<String, FailReason> {
        let p = self.pending.as_mut().ok_or(FailReason::Protocol)?;
        let Phase::CertSent { key } = p.phase else {
            return Err(FailReason::Protocol);
        };
        let enc = query
            .hex_exact("clientchallenge", 16)
            .map_err(|_| FailReason::Protocol)?;
        let challenge = ecb_decrypt(&key, &enc);
        let mut server_secret = [0u8; 16];
        let mut server_challenge = [0u8; 16];
        rand::rng().fill_bytes(&mut server_secret);
        rand::rng().fill_bytes(&mut server_challenge);
        let mut h = Sha256::new();
        h.update(&challenge);
        h.update(self.identity.cert().signature());
        h.update(server_secret);
        let mut plain = h.finalize().to_vec();
        plain.extend_from_slice(&server_challenge);
        let response = hex_encode(&ecb_encrypt(&key, &plain));
        p.phase = Phase::ChallengeSent {
            key,
            server_secret,
            server_challenge,
        };
        Ok(xml::pair_reply(
            true,
            Some(("challengeresponse", &response)),
        ))
    }

    fn phase3(&mut self, query: &Query) -> Result<String, FailReason> {
        let p = self.pending.as_mut().ok_or(FailReason::Protocol)?;
        let Phase::ChallengeSent {
            key,
            server_secret,
            server_challenge,
        } = p.phase
        else {
            return Err(FailReason::Protocol);
        };
        let enc = query
            .hex_exact("serverchallengeresp", 32)
            .map_err(|_| FailReason::Protocol)?;
        let client_hash = ecb_decrypt(&key, &enc);
        let mut secret = server_secret.to_vec();
        secret.extend_from_slice(&self.identity.sign(&server_secret));
        p.phase = Phase::ResponseReceived {
            server_challenge,
            client_hash,
        };
        Ok(xml::pair_reply(
            true,
            Some(("pairingsecret", &hex_encode(&secret))),
        ))
    }

    fn phase4(&mut self, query: &Query) -> Result<String, FailReason> {
        let p = self.pending.as_ref().ok_or(FailReason::Protocol)?;
        let Phase::ResponseReceived {
            server_challenge,
            ref client_hash,
        } = p.phase
        else {
            return Err(FailReason::Protocol);
        };
        let secret = query
            .hex_bounded("clientpairingsecret", MAX_CLIENT_PAIRING_SECRET)
            .map_err(|_| FailReason::Protocol)?;
        if secret.len() <= 16 {
            return Err(FailReason::Protocol);
        }
        let (client_secret, signature) = secret.split_at(16);
        let mut h = Sha256::new();
        h.update(server_challenge);
        h.update(p.client.signature());
        h.update(client_secret);
        if !ct_eq(&h.finalize(), client_hash) {
            return Err(FailReason::WrongPin);
        }
        if !p.client.verify(client_secret, signature) {
            return Err(FailReason::BadSignature);
        }
        let paired = PairedClient {
            unique_id: p.unique_id.clone(),
            cert_der: p.client.der().to_vec(),
            cert_pem: p.client.pem().to_owned(),
            fingerprint: p.client.fingerprint(),
        };
        self.pending = None;
        self.failures = 0;
        self.events.push_back(PairingEvent::Paired(paired));
        Ok(xml::pair_reply(true, None))
    }

    /// `/unpair` from `unique_id`: drops its waiting pairing (a client calls it when it
    /// detected a wrong PIN). Reply with [`xml::unpair`].
    pub fn handle_unpair(&mut self, now: u64, unique_id: &str) {
        self.handle_timeout(now);
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.unique_id == unique_id)
        {
            self.fail(now, FailReason::Abandoned);
        }
    }

    /// Ends the waiting pairing with `reason`, counting it if a PIN had been typed.
    fn fail(&mut self, now: u64, reason: FailReason) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if matches!(p.phase, Phase::AwaitPin | Phase::CertReady { .. }) {
            self.failed_waiters.push(p.id);
            // Bounded: one entry per replaced phase-1 request, removed when polled.
            if self.failed_waiters.len() > 16 {
                self.failed_waiters.remove(0);
            }
        }
        let counted = p.pin_at.is_some();
        self.events.push_back(PairingEvent::Failed {
            unique_id: p.unique_id,
            reason,
            counted,
        });
        if counted {
            self.failures += 1;
            if self.failures >= self.policy.max_failures {
                self.failures = 0;
                let until_ns = now.saturating_add(self.policy.lockout_ns);
                self.locked_until = Some(until_ns);
                self.events.push_back(PairingEvent::Locked { until_ns });
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let pending = self.pending.as_ref().map(|p| match p.pin_at {
            None => p.since.saturating_add(self.policy.pin_deadline_ns),
            Some(t) => t.saturating_add(self.policy.completion_deadline_ns),
        });
        match (pending, self.locked_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires the waiting pairing and the lockout whose deadlines passed.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.locked_until.is_some_and(|t| t <= now) {
            self.locked_until = None;
        }
        let expired = self.pending.as_ref().is_some_and(|p| match p.pin_at {
            None => now >= p.since.saturating_add(self.policy.pin_deadline_ns),
            Some(t) => now >= t.saturating_add(self.policy.completion_deadline_ns),
        });
        if expired {
            self.fail(now, FailReason::TimedOut);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PairingEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_key_vector() {
        // Appendix C: salt 00..0f, PIN "1234".
        let salt: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            hex_encode(&pairing_key(&salt, "1234")),
            "BAD0B4F7CAE08EB7C1B5ACC763A8ED25"
        );
    }

    #[test]
    fn ecb_roundtrip_is_blockwise() {
        let k = [7u8; 16];
        let data: Vec<u8> = (0..48).collect();
        let e = ecb_encrypt(&k, &data);
        assert_eq!(&e[..16], &ecb_encrypt(&k, &data[..16])[..]);
        assert_ne!(&e[..16], &e[16..32]);
        assert_eq!(ecb_decrypt(&k, &e), data);
    }
}
