//! The SPAKE2 PIN pairing ceremony (its own QUIC stream, before any session).
//!
//! ```text
//! client (side A)                                         host (side B, PIN armed)
//!   PairStart { client_name, spake_message = X* }  ──▶
//!                                                   ◀──  PairChallenge { spake_message = Y*,
//!                                                                        host_confirm = MAC_h }
//!   verify MAC_h (wrong PIN / MITM detected here)
//!   PairConfirm { client_confirm = MAC_c }          ──▶
//!                                                        verify MAC_c
//!                                                   ◀──  PairResult { paired, error, host_name }
//! ```
//!
//! SPAKE2 over Ed25519 (crate `spake2` 0.4) with the 6-digit PIN as password and identities
//! [`CLIENT_IDENTITY`] (side A) / [`HOST_IDENTITY`] (side B), which bind the key to this
//! protocol. Both derive the same 32-byte key `K` only if they used the same PIN. The
//! confirmations bind `K` to both TLS certificate fingerprints as each side saw them:
//!
//! ```text
//! MAC_h = HMAC-SHA256(K, "punktfunk/1 host confirm"   ‖ host_fp ‖ client_fp)
//! MAC_c = HMAC-SHA256(K, "punktfunk/1 client confirm" ‖ host_fp ‖ client_fp)
//! ```
//!
//! On success both sides pin the other's fingerprint (the shells store it).
//!
//! # Security argument
//!
//! * **One online guess per armed PIN.** A [`PairingHost`] is single-use: it answers exactly one
//!   `PairStart` and then never again, whatever happens next. The shell must *disarm the PIN
//!   the moment it hands a `PairStart` to [`PairingHost::on_pair_start`]* (take it out of its
//!   slot; re-arming needs the operator, `punktfunkctl pair`), not only after a failed
//!   confirmation: the challenge alone lets the sender test its one guess (see next point), so
//!   an attacker that simply hangs up after the challenge has still spent the PIN. With a
//!   uniformly random 6-digit PIN an attacker therefore succeeds with probability 10⁻⁶ per
//!   operator action.
//! * **Sending the host's confirmation first does not enable an offline dictionary attack.**
//!   The client's SPAKE2 message `X* = x·G + pw'·M` commits it to exactly one password guess
//!   `pw'`. The host's key is `K = H(…, X*, Y*, y·(X* − pw·M))`. For the attacker, who knows
//!   `x` and `pw'`, `K` is computable only if `pw = pw'`; for any other candidate `pw''`
//!   computing the host's key would mean computing `y·(pw'−pw'')·M` from `Y*`, i.e. solving
//!   computational Diffie–Hellman. So `MAC_h` lets the attacker check only the guess it
//!   committed to — the online guess it already spent — and nothing about other PINs. A
//!   passive eavesdropper learns nothing either: SPAKE2 transcripts are independent of the
//!   password without the private scalars.
//! * **Man in the middle.** A MITM that terminates TLS towards both sides presents its own
//!   certificate to each, so `host_fp`/`client_fp` differ between the two sides' views and the
//!   MACs (which cover both fingerprints) fail — unless the MITM runs SPAKE2 with each side
//!   itself, which costs it one online guess per side (and the PIN after the first).
//! * MAC comparisons are constant-time (`hmac`'s `verify_slice`); every field is length-checked
//!   before use; PINs are exactly six ASCII digits.

use crate::error;
use hmac::{Hmac, Mac};
use punktfunk_proto::control::{
    ClientMessage, HostMessage, PairChallenge, PairConfirm, PairResult, PairStart, client_message,
    host_message,
};
use rand::Rng;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// A TLS certificate's SHA-256 fingerprint.
pub type Fingerprint = [u8; 32];

/// Digits in a PIN.
pub const PIN_LEN: usize = 6;
/// SPAKE2 identity of side A (the client).
pub const CLIENT_IDENTITY: &[u8] = b"punktfunk/1 client";
/// SPAKE2 identity of side B (the host).
pub const HOST_IDENTITY: &[u8] = b"punktfunk/1 host";
/// Label of the host's confirmation MAC.
pub const HOST_CONFIRM_LABEL: &[u8] = b"punktfunk/1 host confirm";
/// Label of the client's confirmation MAC.
pub const CLIENT_CONFIRM_LABEL: &[u8] = b"punktfunk/1 client confirm";
/// Length of a SPAKE2 (Ed25519) message: side byte + compressed point.
pub const SPAKE_MESSAGE_LEN: usize = 33;
/// Length of a confirmation MAC (HMAC-SHA256).
pub const CONFIRM_LEN: usize = 32;
/// Longest client or host name accepted, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// Why pairing failed. Every variant ends the ceremony; the PIN is spent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// The PIN is not exactly six ASCII digits.
    #[error("the PIN must be exactly {PIN_LEN} digits")]
    InvalidPin,
    /// The confirmation did not verify: the PINs differ, or the connection is intercepted
    /// (the fingerprints the two sides see differ).
    #[error("wrong PIN (or the connection is being intercepted)")]
    WrongPin,
    /// A field has the wrong size or content.
    #[error("malformed pairing message: {0}")]
    Malformed(&'static str),
    /// A name is empty, too long, or contains control characters.
    #[error("invalid name: must be 1..={MAX_NAME_LEN} bytes without control characters")]
    InvalidName,
    /// A message arrived that this side does not expect now.
    #[error("unexpected pairing message: {0}")]
    Unexpected(&'static str),
    /// The ceremony is already over (success or failure); a new one needs a new PIN.
    #[error("this pairing attempt is already finished")]
    Finished,
    /// The host refused (its `PairResult.error` or `Error.message`).
    #[error("the host refused pairing: {0}")]
    Rejected(String),
}

impl PairingError {
    /// Machine-readable code for an `Error`/`PairResult`.
    pub fn code(&self) -> &'static str {
        match self {
            PairingError::InvalidPin | PairingError::WrongPin => error::CODE_WRONG_PIN,
            PairingError::Malformed(_) | PairingError::InvalidName => error::CODE_PROTOCOL,
            PairingError::Unexpected(_) | PairingError::Finished => error::CODE_PROTOCOL,
            PairingError::Rejected(_) => error::CODE_PAIRING_REJECTED,
        }
    }

    /// What the host tells the client: the reason itself. A [`PairingError::Rejected`] is sent
    /// without its "the host refused pairing" prefix, because the client wraps what it receives
    /// in `Rejected` again (the prefix would appear twice).
    pub fn host_words(&self) -> String {
        match self {
            PairingError::Rejected(why) => why.clone(),
            other => other.to_string(),
        }
    }

    /// The `PairResult { paired: false }` the host sends for this error before closing.
    pub fn to_host_message(&self, host_name: &str) -> HostMessage {
        HostMessage {
            msg: Some(host_message::Msg::PairResult(PairResult {
                paired: false,
                error: self.host_words(),
                host_name: host_name.to_owned(),
            })),
        }
    }
}

/// Checks a PIN: exactly [`PIN_LEN`] ASCII digits.
pub fn validate_pin(pin: &str) -> Result<(), PairingError> {
    if pin.len() == PIN_LEN && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(PairingError::InvalidPin)
    }
}

/// A fresh PIN: six digits, uniform over 000000..=999999, from the thread-local CSPRNG
/// (`rand::rng()`, ChaCha seeded from the OS).
pub fn generate_pin() -> String {
    let n: u32 = rand::rng().random_range(0..1_000_000);
    format!("{n:06}")
}

/// Checks a peer-supplied name.
pub fn validate_name(name: &str) -> Result<(), PairingError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        Err(PairingError::InvalidName)
    } else {
        Ok(())
    }
}

fn confirm_mac(
    key: &[u8],
    label: &[u8],
    host_fp: &Fingerprint,
    client_fp: &Fingerprint,
) -> Result<HmacSha256, PairingError> {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|_| PairingError::Malformed("unusable key"))?;
    mac.update(label);
    mac.update(host_fp);
    mac.update(client_fp);
    Ok(mac)
}

fn compute_confirm(
    key: &[u8],
    label: &[u8],
    host_fp: &Fingerprint,
    client_fp: &Fingerprint,
) -> Result<Vec<u8>, PairingError> {
    Ok(confirm_mac(key, label, host_fp, client_fp)?
        .finalize()
        .into_bytes()
        .to_vec())
}

fn verify_confirm(
    key: &[u8],
    label: &[u8],
    host_fp: &Fingerprint,
    client_fp: &Fingerprint,
    tag: &[u8],
) -> Result<(), PairingError> {
    if tag.len() != CONFIRM_LEN {
        return Err(PairingError::Malformed("confirmation must be 32 bytes"));
    }
    confirm_mac(key, label, host_fp, client_fp)?
        .verify_slice(tag)
        .map_err(|_| PairingError::WrongPin)
}

fn check_spake_len(msg: &[u8]) -> Result<(), PairingError> {
    if msg.len() == SPAKE_MESSAGE_LEN {
        Ok(())
    } else {
        Err(PairingError::Malformed("SPAKE2 message must be 33 bytes"))
    }
}

/// A client the host has paired with: the shell stores `client_fp` as trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paired {
    /// The name the client gave in `PairStart`.
    pub client_name: String,
    /// The client's certificate fingerprint (from the TLS handshake).
    pub client_fp: Fingerprint,
}

/// A host the client has paired with: the shell pins `host_fp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairedHost {
    /// The name the host gave in `PairResult`.
    pub host_name: String,
    /// The host's certificate fingerprint (from the TLS handshake).
    pub host_fp: Fingerprint,
}

/// What [`PairingHost::on_message`] asks the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingHostStep {
    /// Send this (the `PairChallenge`) and wait for the next message.
    Reply(HostMessage),
    /// Send `reply` (`PairResult { paired: true }`), store `client` as paired, close the stream.
    Paired {
        /// The message to send.
        reply: HostMessage,
        /// The new trusted client.
        client: Paired,
    },
}

enum HostState {
    AwaitStart,
    AwaitConfirm { key: Vec<u8>, client_name: String },
    Done,
}

/// Host side (SPAKE2 side B) of one pairing attempt. Single-use.
pub struct PairingHost {
    pin: String,
    host_fp: Fingerprint,
    client_fp: Fingerprint,
    host_name: String,
    state: HostState,
}

impl core::fmt::Debug for PairingHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PairingHost")
            .field("host_name", &self.host_name)
            .finish_non_exhaustive()
    }
}

impl PairingHost {
    /// Arms one attempt with `pin`, the host's own fingerprint and the connecting client's
    /// fingerprint as seen in the TLS handshake.
    pub fn new(
        pin: &str,
        host_fp: Fingerprint,
        client_fp: Fingerprint,
        host_name: impl Into<String>,
    ) -> Result<Self, PairingError> {
        validate_pin(pin)?;
        Ok(Self {
            pin: pin.to_owned(),
            host_fp,
            client_fp,
            host_name: host_name.into(),
            state: HostState::AwaitStart,
        })
    }

    /// The host name sent in `PairResult`.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// True once the attempt is over (success or failure).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, HostState::Done)
    }

    /// Runs SPAKE2 side B on the client's message and returns the challenge (with the host's
    /// confirmation). From here on the PIN counts as used (see the module docs).
    pub fn on_pair_start(&mut self, start: PairStart) -> Result<PairChallenge, PairingError> {
        match self.state {
            HostState::AwaitStart => {}
            HostState::AwaitConfirm { .. } => {
                self.state = HostState::Done;
                return Err(PairingError::Unexpected("second PairStart"));
            }
            HostState::Done => return Err(PairingError::Finished),
        }
        self.state = HostState::Done;
        validate_name(&start.client_name)?;
        check_spake_len(&start.spake_message)?;
        let (spake, msg_b) = Spake2::<Ed25519Group>::start_b(
            &Password::new(self.pin.as_bytes()),
            &Identity::new(CLIENT_IDENTITY),
            &Identity::new(HOST_IDENTITY),
        );
        let key = spake
            .finish(&start.spake_message)
            .map_err(|_| PairingError::Malformed("invalid SPAKE2 message"))?;
        let host_confirm =
            compute_confirm(&key, HOST_CONFIRM_LABEL, &self.host_fp, &self.client_fp)?;
        self.state = HostState::AwaitConfirm {
            key,
            client_name: start.client_name,
        };
        Ok(PairChallenge {
            spake_message: msg_b,
            host_confirm,
        })
    }

    /// Checks the client's confirmation (constant time). On success the client is paired.
    pub fn on_pair_confirm(&mut self, confirm: PairConfirm) -> Result<Paired, PairingError> {
        let (key, client_name) = match core::mem::replace(&mut self.state, HostState::Done) {
            HostState::AwaitConfirm { key, client_name } => (key, client_name),
            HostState::AwaitStart => {
                return Err(PairingError::Unexpected("PairConfirm before PairStart"));
            }
            HostState::Done => return Err(PairingError::Finished),
        };
        verify_confirm(
            &key,
            CLIENT_CONFIRM_LABEL,
            &self.host_fp,
            &self.client_fp,
            &confirm.client_confirm,
        )?;
        Ok(Paired {
            client_name,
            client_fp: self.client_fp,
        })
    }

    /// Dispatches a message read from the pairing stream. On `Err` the shell sends
    /// [`PairingError::to_host_message`] and closes the stream.
    pub fn on_message(&mut self, msg: ClientMessage) -> Result<PairingHostStep, PairingError> {
        match msg.msg {
            Some(client_message::Msg::PairStart(s)) => {
                let c = self.on_pair_start(s)?;
                Ok(PairingHostStep::Reply(HostMessage {
                    msg: Some(host_message::Msg::PairChallenge(c)),
                }))
            }
            Some(client_message::Msg::PairConfirm(c)) => {
                let client = self.on_pair_confirm(c)?;
                Ok(PairingHostStep::Paired {
                    reply: self.success_message(),
                    client,
                })
            }
            Some(_) => {
                self.state = HostState::Done;
                Err(PairingError::Unexpected(
                    "session message on the pairing stream",
                ))
            }
            None => {
                self.state = HostState::Done;
                Err(PairingError::Unexpected("empty or unknown message"))
            }
        }
    }

    /// `PairResult { paired: true, host_name }`.
    pub fn success_message(&self) -> HostMessage {
        HostMessage {
            msg: Some(host_message::Msg::PairResult(PairResult {
                paired: true,
                error: String::new(),
                host_name: self.host_name.clone(),
            })),
        }
    }
}

/// What [`PairingClient::on_message`] asks the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingClientStep {
    /// Send this (the `PairConfirm`) and wait for the `PairResult`.
    Reply(ClientMessage),
    /// Pairing succeeded: pin `host.host_fp`, close the stream.
    Paired(PairedHost),
}

enum ClientState {
    AwaitChallenge(Box<Spake2<Ed25519Group>>),
    AwaitResult,
    Done,
}

/// Client side (SPAKE2 side A) of one pairing attempt. Single-use.
pub struct PairingClient {
    host_fp: Fingerprint,
    client_fp: Fingerprint,
    state: ClientState,
}

impl core::fmt::Debug for PairingClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PairingClient").finish_non_exhaustive()
    }
}

impl PairingClient {
    /// Starts an attempt: `pin` as typed by the user, our name, our certificate fingerprint
    /// and the host's as seen in the TLS handshake. Returns the `PairStart` to send.
    pub fn start(
        pin: &str,
        client_name: &str,
        client_fp: Fingerprint,
        host_fp: Fingerprint,
    ) -> Result<(PairingClient, PairStart), PairingError> {
        validate_pin(pin)?;
        validate_name(client_name)?;
        let (spake, msg_a) = Spake2::<Ed25519Group>::start_a(
            &Password::new(pin.as_bytes()),
            &Identity::new(CLIENT_IDENTITY),
            &Identity::new(HOST_IDENTITY),
        );
        Ok((
            PairingClient {
                host_fp,
                client_fp,
                state: ClientState::AwaitChallenge(Box::new(spake)),
            },
            PairStart {
                client_name: client_name.to_owned(),
                spake_message: msg_a,
            },
        ))
    }

    /// [`PairingClient::start`] wrapped as a `ClientMessage`.
    pub fn start_message(start: PairStart) -> ClientMessage {
        ClientMessage {
            msg: Some(client_message::Msg::PairStart(start)),
        }
    }

    /// Finishes SPAKE2 and verifies the host's confirmation first (a wrong PIN or a MITM is
    /// detected here, before we reveal anything); returns our confirmation.
    pub fn on_challenge(&mut self, ch: PairChallenge) -> Result<PairConfirm, PairingError> {
        let spake = match core::mem::replace(&mut self.state, ClientState::Done) {
            ClientState::AwaitChallenge(s) => s,
            ClientState::AwaitResult => {
                return Err(PairingError::Unexpected("second PairChallenge"));
            }
            ClientState::Done => return Err(PairingError::Finished),
        };
        check_spake_len(&ch.spake_message)?;
        let key = spake
            .finish(&ch.spake_message)
            .map_err(|_| PairingError::Malformed("invalid SPAKE2 message"))?;
        verify_confirm(
            &key,
            HOST_CONFIRM_LABEL,
            &self.host_fp,
            &self.client_fp,
            &ch.host_confirm,
        )?;
        let client_confirm =
            compute_confirm(&key, CLIENT_CONFIRM_LABEL, &self.host_fp, &self.client_fp)?;
        self.state = ClientState::AwaitResult;
        Ok(PairConfirm { client_confirm })
    }

    /// The host's verdict. `paired = true` → [`PairedHost`] (pin its fingerprint).
    pub fn on_result(&mut self, res: PairResult) -> Result<PairedHost, PairingError> {
        let was = core::mem::replace(&mut self.state, ClientState::Done);
        if !res.paired {
            return Err(PairingError::Rejected(bounded(&res.error)));
        }
        match was {
            ClientState::AwaitResult => {}
            ClientState::AwaitChallenge(_) => {
                return Err(PairingError::Unexpected("PairResult before PairChallenge"));
            }
            ClientState::Done => return Err(PairingError::Finished),
        }
        validate_name(&res.host_name)?;
        Ok(PairedHost {
            host_name: res.host_name,
            host_fp: self.host_fp,
        })
    }

    /// Dispatches a message read from the pairing stream.
    pub fn on_message(&mut self, msg: HostMessage) -> Result<PairingClientStep, PairingError> {
        match msg.msg {
            Some(host_message::Msg::PairChallenge(c)) => {
                let confirm = self.on_challenge(c)?;
                Ok(PairingClientStep::Reply(ClientMessage {
                    msg: Some(client_message::Msg::PairConfirm(confirm)),
                }))
            }
            Some(host_message::Msg::PairResult(r)) => {
                Ok(PairingClientStep::Paired(self.on_result(r)?))
            }
            Some(host_message::Msg::Error(e)) => {
                self.state = ClientState::Done;
                Err(PairingError::Rejected(bounded(&e.message)))
            }
            Some(_) => {
                self.state = ClientState::Done;
                Err(PairingError::Unexpected(
                    "session message on the pairing stream",
                ))
            }
            None => {
                self.state = ClientState::Done;
                Err(PairingError::Unexpected("empty or unknown message"))
            }
        }
    }
}

/// A peer-supplied text, cut to 256 bytes (at a char boundary) for errors and logs.
pub(crate) fn bounded(s: &str) -> String {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
