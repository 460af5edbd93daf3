//! The control stream (ENet payloads on UDP 47999): AES-GCM framing, client → host messages
//! and the host → client encoders.
//!
//! Every ENet packet payload, both directions (spec §8.2):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | `0x0001` u16le (encrypted) |
//! | 2 | 2 | length u16le = packet length − 4 |
//! | 4 | 4 | sequence u32le (each sender counts from 0) |
//! | 8 | 16 | AES-128-GCM tag (key = rikey, no AAD) |
//! | 24 | n | ciphertext of `type u16le ‖ payloadLength u16le ‖ payload` |
//!
//! IV: with control v2 (ANNOUNCE `encryptionEnabled & 0x1`) 12 bytes `seq u32le ‖ 0×6 ‖ 'C'
//! 'C'` from the client, `… 'H' 'C'` from the host; without it the legacy 16-byte IV
//! `seq & 0xFF ‖ 0×15` (what NVIDIA did; IVs repeat every 256 messages, which is the
//! client's choice, not ours).
//!
//! # Call order ([`ControlSession`], one per ENet peer bound to a launch)
//!
//! * every received ENet packet → [`ControlSession::handle_packet`]`(now, bytes)` →
//!   a [`ClientMessage`] to act on (IDR request, RFI, input, ...), or an error to count and
//!   drop (the session continues: a forged, damaged or replayed packet cannot end it;
//!   replays of authentic packets are refused by a [`REPLAY_WINDOW`]-message window);
//! * to send → [`ControlSession::seal`]`(&HostMessage)`, then ENet reliable on channel 0;
//!   to end a session, seal [`HostMessage::Termination`]`(`[`TERMINATION_GRACEFUL`]`)`, flush
//!   and disconnect the peer;
//! * [`ControlSession::poll_timeout`]: no authenticated packet for [`CONTROL_TIMEOUT_NS`]
//!   (the client pings every 100 ms) → [`ControlSession::handle_timeout`] says the session
//!   is dead.

use crate::input::{InputEvent, decode_input};
use aes::Aes128;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, AesGcm, KeyInit, Nonce};
use punktfunk_wire::{Replay, ReplayWindow};

/// `encryptedHeaderType`.
pub const ENCRYPTED_HEADER_TYPE: u16 = 0x0001;
/// Largest control payload accepted or sent (plaintext; the largest real one, HDR mode, is
/// 27 bytes).
pub const MAX_CONTROL_PAYLOAD: usize = 1024;
/// A session with no authenticated packet for this long is dead (Sunshine's ping timeout).
pub const CONTROL_TIMEOUT_NS: u64 = 10_000_000_000;
/// Termination reason "graceful end" (the client reports the stream ended normally).
pub const TERMINATION_GRACEFUL: u32 = 0x8003_0023;
/// The ENet channel count the client connects with; the host must accept at least this many.
pub const ENET_CHANNELS: usize = 48;
/// Client sequence numbers remembered against replays. The client numbers every message of
/// the session from one counter, but messages on different ENet channels (and unreliable
/// ones) may arrive out of order; this many (seconds of input at the highest rates) are
/// tolerated.
pub const REPLAY_WINDOW: usize = 4096;

const HEADER: usize = 4 + 4 + 16;

/// Message types (the plaintext `type`).
pub mod msg {
    /// Client: reference frame invalidation.
    pub const RFI: u16 = 0x0301;
    /// Client: IDR request.
    pub const IDR_REQUEST: u16 = 0x0302;
    /// Client: "start B".
    pub const START_B: u16 = 0x0307;
    /// Client: periodic ping.
    pub const PING: u16 = 0x0200;
    /// Client: legacy loss statistics.
    pub const LOSS_STATS: u16 = 0x0201;
    /// Client: frame statistics.
    pub const FRAME_STATS: u16 = 0x0204;
    /// Client: an input packet.
    pub const INPUT: u16 = 0x0206;
    /// Client: LTR frame acknowledgement.
    pub const LTR_ACK: u16 = 0x0350;
    /// Client: per-frame FEC status. Host: RGB LED (same number, other direction).
    pub const FEC_STATUS_OR_LED: u16 = 0x5502;
    /// Host: termination.
    pub const TERMINATION: u16 = 0x0109;
    /// Host: rumble.
    pub const RUMBLE: u16 = 0x010B;
    /// Host: HDR mode.
    pub const HDR_MODE: u16 = 0x010E;
    /// Host: trigger rumble.
    pub const TRIGGER_RUMBLE: u16 = 0x5500;
    /// Host: motion event state.
    pub const MOTION_STATE: u16 = 0x5501;
    /// Host: DualSense adaptive triggers.
    pub const ADAPTIVE_TRIGGERS: u16 = 0x5503;
}

/// Why a control packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Too short for the framing, or `length` disagrees with the packet.
    #[error("control packet framing invalid")]
    Framing,
    /// Not `0x0001` (an unencrypted packet on an encrypted session).
    #[error("unencrypted control packet type {0:#06x} refused")]
    NotEncrypted(u16),
    /// The tag did not verify (wrong key, damage, forgery).
    #[error("control packet failed authentication")]
    AuthFailed,
    /// The plaintext's inner header is inconsistent or nested.
    #[error("control message malformed")]
    Malformed,
    /// A payload too short for its type.
    #[error("control message {0:#06x} too short")]
    Truncated(u16),
    /// The input packet inside is invalid.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// A payload larger than [`MAX_CONTROL_PAYLOAD`] (send side).
    #[error("control payload too large")]
    TooLarge,
    /// An authentic packet whose sequence number was already seen or is older than the
    /// replay window ([`REPLAY_WINDOW`]): a replay.
    #[error("control packet replayed")]
    Replayed,
}

/// Per-frame FEC statistics the client reports (Sunshine extension; big-endian on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecStatus {
    /// Frame.
    pub frame_index: u32,
    /// Highest received sequence number.
    pub highest_received_seq: u16,
    /// Next contiguous sequence number.
    pub next_contiguous_seq: u16,
    /// Missing packets before the highest.
    pub missing_before_highest: u16,
    /// Data shards of the block.
    pub total_data: u16,
    /// Parity shards of the block.
    pub total_parity: u16,
    /// Data shards received.
    pub received_data: u16,
    /// Parity shards received.
    pub received_parity: u16,
    /// FEC percentage of the block.
    pub fec_percent: u8,
    /// Block index.
    pub block_index: u8,
    /// Block count.
    pub block_count: u8,
}

/// A message from the client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClientMessage {
    /// Encode the next frame as an IDR.
    IdrRequest,
    /// "Start B" (informational).
    StartB,
    /// Frames `first..=last` were lost: answer with an IDR (or an RFI-recovery frame).
    RefInvalidation {
        /// First lost frame.
        first: u64,
        /// Last lost frame.
        last: u64,
    },
    /// Keep-alive.
    Ping,
    /// An input event for the seat.
    Input(InputEvent),
    /// Per-frame FEC statistics.
    FecStatus(FecStatus),
    /// A long-term reference frame arrived.
    LtrAck {
        /// Frame.
        frame: u32,
    },
    /// Legacy loss statistics (ignored).
    LossStats,
    /// Frame statistics (ignored).
    FrameStats,
    /// A type this host does not act on.
    Unknown(u16),
}

/// Decodes a client message from its type and payload.
pub fn decode_client_message(msg_type: u16, p: &[u8]) -> Result<ClientMessage, ControlError> {
    let need = |n: usize| {
        if p.len() < n {
            Err(ControlError::Truncated(msg_type))
        } else {
            Ok(())
        }
    };
    let u64le = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
    let u16be = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
    Ok(match msg_type {
        msg::IDR_REQUEST => ClientMessage::IdrRequest,
        msg::START_B => ClientMessage::StartB,
        msg::PING => ClientMessage::Ping,
        msg::LOSS_STATS => ClientMessage::LossStats,
        msg::FRAME_STATS => ClientMessage::FrameStats,
        msg::RFI => {
            need(16)?;
            ClientMessage::RefInvalidation {
                first: u64le(0),
                last: u64le(8),
            }
        }
        msg::INPUT => ClientMessage::Input(decode_input(p)?),
        msg::LTR_ACK => {
            need(4)?;
            ClientMessage::LtrAck {
                frame: u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
            }
        }
        msg::FEC_STATUS_OR_LED => {
            need(21)?;
            ClientMessage::FecStatus(FecStatus {
                frame_index: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                highest_received_seq: u16be(4),
                next_contiguous_seq: u16be(6),
                missing_before_highest: u16be(8),
                total_data: u16be(10),
                total_parity: u16be(12),
                received_data: u16be(14),
                received_parity: u16be(16),
                fec_percent: p[18],
                block_index: p[19],
                block_count: p[20],
            })
        }
        other => ClientMessage::Unknown(other),
    })
}

/// A message from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMessage {
    /// End the stream with this HRESULT ([`TERMINATION_GRACEFUL`] for a clean end).
    Termination(u32),
    /// Persistent rumble; 0/0 stops.
    Rumble {
        /// Controller number.
        controller: u16,
        /// Low-frequency motor 0..65535.
        low: u16,
        /// High-frequency motor.
        high: u16,
    },
    /// Trigger rumble.
    TriggerRumble {
        /// Controller number.
        controller: u16,
        /// Left trigger motor.
        left: u16,
        /// Right trigger motor.
        right: u16,
    },
    /// Ask the client to send (or stop) motion samples of a pad.
    MotionState {
        /// Controller number.
        controller: u16,
        /// Report rate in Hz (0 = stop).
        report_rate_hz: u16,
        /// 1 accelerometer, 2 gyroscope.
        motion_type: u8,
    },
    /// Set a pad's RGB LED.
    RgbLed {
        /// Controller number.
        controller: u16,
        /// Red.
        r: u8,
        /// Green.
        g: u8,
        /// Blue.
        b: u8,
    },
    /// DualSense adaptive triggers.
    AdaptiveTriggers {
        /// Controller number.
        controller: u16,
        /// 0x04 right, 0x08 left.
        event_flags: u8,
        /// Left effect type.
        type_left: u8,
        /// Right effect type.
        type_right: u8,
        /// Left effect parameters.
        left: [u8; 10],
        /// Right effect parameters.
        right: [u8; 10],
    },
    /// HDR on/off with the display metadata (13 × u16: primaries, white point, luminances).
    HdrMode {
        /// HDR active.
        enabled: bool,
        /// Metadata in the spec's order.
        metadata: [u16; 13],
    },
}

impl HostMessage {
    /// The plaintext `type` and payload.
    pub fn encode(&self) -> (u16, Vec<u8>) {
        let mut p = Vec::with_capacity(32);
        let t = match *self {
            Self::Termination(hresult) => {
                p.extend(hresult.to_be_bytes());
                msg::TERMINATION
            }
            Self::Rumble {
                controller,
                low,
                high,
            } => {
                p.extend(0x00C0_FFEEu32.to_le_bytes());
                for v in [controller, low, high] {
                    p.extend(v.to_le_bytes());
                }
                msg::RUMBLE
            }
            Self::TriggerRumble {
                controller,
                left,
                right,
            } => {
                for v in [controller, left, right] {
                    p.extend(v.to_le_bytes());
                }
                msg::TRIGGER_RUMBLE
            }
            Self::MotionState {
                controller,
                report_rate_hz,
                motion_type,
            } => {
                p.extend(controller.to_le_bytes());
                p.extend(report_rate_hz.to_le_bytes());
                p.push(motion_type);
                msg::MOTION_STATE
            }
            Self::RgbLed {
                controller,
                r,
                g,
                b,
            } => {
                p.extend(controller.to_le_bytes());
                p.extend([r, g, b]);
                msg::FEC_STATUS_OR_LED
            }
            Self::AdaptiveTriggers {
                controller,
                event_flags,
                type_left,
                type_right,
                left,
                right,
            } => {
                p.extend(controller.to_le_bytes());
                p.extend([event_flags, type_left, type_right]);
                p.extend(left);
                p.extend(right);
                msg::ADAPTIVE_TRIGGERS
            }
            Self::HdrMode { enabled, metadata } => {
                p.push(u8::from(enabled));
                for v in metadata {
                    p.extend(v.to_le_bytes());
                }
                msg::HDR_MODE
            }
        };
        (t, p)
    }
}

enum Cipher {
    V2(AesGcm<Aes128, U12>),
    Legacy(AesGcm<Aes128, U16>),
}

/// Which side sealed a packet (selects the IV's direction bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → host (`'C' 'C'`).
    ClientToHost,
    /// Host → client (`'H' 'C'`).
    HostToClient,
}

/// The control stream's AES-GCM framing under one session key.
pub struct ControlCrypto {
    cipher: Cipher,
}

impl std::fmt::Debug for ControlCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlCrypto { .. }")
    }
}

impl ControlCrypto {
    /// Framing with `rikey`; `v2` = ANNOUNCE enabled control v2 (12-byte IVs).
    pub fn new(rikey: &[u8; 16], v2: bool) -> Self {
        let key = aes_gcm::Key::<AesGcm<Aes128, U12>>::from(*rikey);
        let cipher = if v2 {
            Cipher::V2(AesGcm::new(&key))
        } else {
            Cipher::Legacy(AesGcm::new(&key))
        };
        Self { cipher }
    }

    fn apply(
        &self,
        dir: Direction,
        seq: u32,
        buf: &mut [u8],
        tag: Option<&[u8]>,
    ) -> Result<[u8; 16], ControlError> {
        let (a, b) = match dir {
            Direction::ClientToHost => (b'C', b'C'),
            Direction::HostToClient => (b'H', b'C'),
        };
        match &self.cipher {
            Cipher::V2(c) => {
                let mut iv = [0u8; 12];
                iv[..4].copy_from_slice(&seq.to_le_bytes());
                iv[10] = a;
                iv[11] = b;
                let nonce = Nonce::<U12>::from(iv);
                gcm(c, &nonce, buf, tag)
            }
            Cipher::Legacy(c) => {
                let mut iv = [0u8; 16];
                iv[0] = seq as u8;
                let nonce = Nonce::<U16>::from(iv);
                gcm(c, &nonce, buf, tag)
            }
        }
    }

    /// Seals one message (`type`, `payload`) as packet `seq` of `dir`.
    pub fn seal(
        &self,
        dir: Direction,
        seq: u32,
        msg_type: u16,
        payload: &[u8],
    ) -> Result<Vec<u8>, ControlError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(ControlError::TooLarge);
        }
        let plain_len = 4 + payload.len();
        let mut out = Vec::with_capacity(HEADER + plain_len);
        out.extend(ENCRYPTED_HEADER_TYPE.to_le_bytes());
        out.extend(((HEADER - 4 + plain_len) as u16).to_le_bytes());
        out.extend(seq.to_le_bytes());
        out.extend([0u8; 16]);
        out.extend(msg_type.to_le_bytes());
        out.extend((payload.len() as u16).to_le_bytes());
        out.extend(payload);
        let tag = self.apply(dir, seq, &mut out[HEADER..], None)?;
        out[8..24].copy_from_slice(&tag);
        Ok(out)
    }

    /// Authenticates and decrypts one packet sent in `dir`; returns its `seq`, `type` and
    /// payload.
    pub fn open(&self, dir: Direction, packet: &[u8]) -> Result<(u32, u16, Vec<u8>), ControlError> {
        if packet.len() < HEADER + 4 || packet.len() > HEADER + 4 + MAX_CONTROL_PAYLOAD {
            return Err(ControlError::Framing);
        }
        let header_type = u16::from_le_bytes([packet[0], packet[1]]);
        if header_type != ENCRYPTED_HEADER_TYPE {
            return Err(ControlError::NotEncrypted(header_type));
        }
        let len = usize::from(u16::from_le_bytes([packet[2], packet[3]]));
        if len != packet.len() - 4 {
            return Err(ControlError::Framing);
        }
        let seq = u32::from_le_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let mut plain = packet[HEADER..].to_vec();
        self.apply(dir, seq, &mut plain, Some(&packet[8..24]))?;
        let msg_type = u16::from_le_bytes([plain[0], plain[1]]);
        let payload_len = usize::from(u16::from_le_bytes([plain[2], plain[3]]));
        if msg_type == ENCRYPTED_HEADER_TYPE || payload_len > plain.len() - 4 {
            return Err(ControlError::Malformed);
        }
        plain.truncate(4 + payload_len);
        plain.drain(..4);
        Ok((seq, msg_type, plain))
    }
}

fn gcm<A: AeadInOut>(
    c: &A,
    nonce: &aes_gcm::aead::Nonce<A>,
    buf: &mut [u8],
    tag: Option<&[u8]>,
) -> Result<[u8; 16], ControlError> {
    match tag {
        None => {
            let t = c
                .encrypt_inout_detached(nonce, &[], InOutBuf::from(buf))
                .map_err(|_| ControlError::TooLarge)?;
            let mut out = [0u8; 16];
            out.copy_from_slice(&t);
            Ok(out)
        }
        Some(t) => {
            let t = aes_gcm::aead::Tag::<A>::try_from(t).map_err(|_| ControlError::Framing)?;
            c.decrypt_inout_detached(nonce, &[], InOutBuf::from(buf), &t)
                .map_err(|_| ControlError::AuthFailed)?;
            Ok([0; 16])
        }
    }
}

/// Counters of dropped packets (for the shell's status and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Packets that decoded into a message.
    pub received: u64,
    /// Packets refused by authentication.
    pub auth_failures: u64,
    /// Packets with bad framing or content.
    pub malformed: u64,
    /// Authentic packets refused as replays.
    pub replayed: u64,
    /// Messages sent.
    pub sent: u64,
}

/// The host side of one control stream (see the module docs for the call order).
pub struct ControlSession {
    crypto: ControlCrypto,
    replay: ReplayWindow,
    send_seq: u32,
    last_rx: u64,
    stats: ControlStats,
}

impl std::fmt::Debug for ControlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSession")
            .field("send_seq", &self.send_seq)
            .field("last_rx", &self.last_rx)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ControlSession {
    /// A session keyed with the launch's `rikey`, `v2` from ANNOUNCE, connected at `now`.
    pub fn new(rikey: &[u8; 16], v2: bool, now: u64) -> Self {
        Self {
            crypto: ControlCrypto::new(rikey, v2),
            replay: ReplayWindow::new(REPLAY_WINDOW),
            send_seq: 0,
            last_rx: now,
            stats: ControlStats::default(),
        }
    }

    /// Handles one received ENet payload.
    pub fn handle_packet(
        &mut self,
        now: u64,
        packet: &[u8],
    ) -> Result<ClientMessage, ControlError> {
        let r = self
            .crypto
            .open(Direction::ClientToHost, packet)
            .and_then(|(seq, t, p)| {
                // Authenticated: only now may the sequence number move the window.
                if self.replay.check(u64::from(seq)) != Replay::Fresh {
                    return Err(ControlError::Replayed);
                }
                self.replay.commit(u64::from(seq));
                decode_client_message(t, &p)
            });
        match &r {
            Ok(_) => {
                self.stats.received += 1;
                self.last_rx = now;
            }
            Err(ControlError::AuthFailed) => self.stats.auth_failures += 1,
            Err(ControlError::Replayed) => self.stats.replayed += 1,
            Err(ControlError::Input(_)) => {
                // Authenticated, so the peer is alive; its input packet was bad.
                self.last_rx = now;
                self.stats.malformed += 1;
            }
            Err(_) => self.stats.malformed += 1,
        }
        r
    }

    /// Seals `m` with the next host sequence number.
    pub fn seal(&mut self, m: &HostMessage) -> Result<Vec<u8>, ControlError> {
        let (t, p) = m.encode();
        let out = self
            .crypto
            .seal(Direction::HostToClient, self.send_seq, t, &p)?;
        self.send_seq = self.send_seq.wrapping_add(1);
        self.stats.sent += 1;
        Ok(out)
    }

    /// When the session times out unless a packet arrives.
    pub fn poll_timeout(&self) -> u64 {
        self.last_rx.saturating_add(CONTROL_TIMEOUT_NS)
    }

    /// Whether the session is dead at `now` (no authenticated packet for
    /// [`CONTROL_TIMEOUT_NS`]).
    pub fn handle_timeout(&self, now: u64) -> bool {
        now >= self.poll_timeout()
    }

    /// Counters.
    pub fn stats(&self) -> ControlStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{hex_decode, hex_encode};

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    #[test]
    fn appendix_c_client_idr_request() {
        let c = ControlCrypto::new(&KEY, true);
        let sealed = c
            .seal(Direction::ClientToHost, 0, msg::IDR_REQUEST, &[0, 0])
            .unwrap();
        assert_eq!(
            hex_encode(&sealed),
            "01001A000000000022302723537811166CB9BFEAD7DAD4575CD629F5CAFE"
        );
        let mut s = ControlSession::new(&KEY, true, 0);
        assert_eq!(s.handle_packet(5, &sealed), Ok(ClientMessage::IdrRequest));
        assert_eq!(s.poll_timeout(), 5 + CONTROL_TIMEOUT_NS);
    }

    #[test]
    fn appendix_c_host_termination() {
        let mut s = ControlSession::new(&KEY, true, 0);
        let sealed = s
            .seal(&HostMessage::Termination(TERMINATION_GRACEFUL))
            .unwrap();
        assert_eq!(
            hex_encode(&sealed),
            "01001C0000000000B835A2B8ACE857DDCBAD385DCE166AA9F2DD4EDACF3BE801"
        );
        let c = ControlCrypto::new(&KEY, true);
        let (seq, t, p) = c.open(Direction::HostToClient, &sealed).unwrap();
        assert_eq!(
            (seq, t, p),
            (0, msg::TERMINATION, vec![0x80, 0x03, 0x00, 0x23])
        );
        // The next host message uses seq 1.
        let next = s
            .seal(&HostMessage::Rumble {
                controller: 0,
                low: 1,
                high: 2,
            })
            .unwrap();
        assert_eq!(&next[4..8], &[1, 0, 0, 0]);
    }

    #[test]
    fn legacy_16_byte_iv_matches_openssl() {
        // Vector computed with OpenSSL's AES-128-GCM and the 16-byte IV `0x2C ‖ 0×15`
        // (seq 300 & 0xFF), plaintext = ping (type 0x0200, length 8).
        let c = ControlCrypto::new(&KEY, false);
        let sealed = c
            .seal(
                Direction::ClientToHost,
                300,
                msg::PING,
                &[4, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap();
        assert_eq!(
            hex_encode(&sealed),
            "010020002C010000EA17D117DF469B6FEE2016EADD3041607827C9C1FFEE32DEF98D8AC2"
        );
    }

    #[test]
    fn legacy_iv_roundtrip_and_direction_separation() {
        let c = ControlCrypto::new(&KEY, false);
        let sealed = c
            .seal(
                Direction::ClientToHost,
                300,
                msg::PING,
                &[4, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap();
        let (seq, t, _) = c.open(Direction::ClientToHost, &sealed).unwrap();
        assert_eq!((seq, t), (300, msg::PING));
        // v2 and legacy do not open each other's packets; neither does the wrong direction.
        assert_eq!(
            ControlCrypto::new(&KEY, true).open(Direction::ClientToHost, &sealed),
            Err(ControlError::AuthFailed)
        );
        let v2 = ControlCrypto::new(&KEY, true)
            .seal(Direction::HostToClient, 0, msg::PING, &[])
            .unwrap();
        assert_eq!(
            ControlCrypto::new(&KEY, true).open(Direction::ClientToHost, &v2),
            Err(ControlError::AuthFailed)
        );
    }

    #[test]
    fn input_inside_the_control_stream() {
        // §9.3's first mouse move, as the control plaintext the spec shows.
        let plain = hex_decode("06020C00000000080700000000010001").unwrap();
        let c = ControlCrypto::new(&KEY, true);
        let sealed = c
            .seal(Direction::ClientToHost, 7, msg::INPUT, &plain[4..])
            .unwrap();
        let mut s = ControlSession::new(&KEY, true, 0);
        assert_eq!(
            s.handle_packet(1, &sealed),
            Ok(ClientMessage::Input(InputEvent::MouseMove { dx: 1, dy: 1 }))
        );
    }

    #[test]
    fn refusals_are_counted_and_do_not_refresh_liveness() {
        let mut s = ControlSession::new(&KEY, true, 0);
        let c = ControlCrypto::new(&KEY, true);
        let mut sealed = c
            .seal(Direction::ClientToHost, 0, msg::IDR_REQUEST, &[0, 0])
            .unwrap();
        sealed[29] ^= 1;
        assert_eq!(s.handle_packet(9, &sealed), Err(ControlError::AuthFailed));
        assert_eq!(
            s.handle_packet(9, &[2, 0, 4, 0, 1, 2, 3, 4]),
            Err(ControlError::Framing)
        );
        let mut plain_type = c.seal(Direction::ClientToHost, 0, msg::PING, &[]).unwrap();
        plain_type[0] = 2;
        assert_eq!(
            s.handle_packet(9, &plain_type),
            Err(ControlError::NotEncrypted(2))
        );
        let mut bad_len = c.seal(Direction::ClientToHost, 0, msg::PING, &[]).unwrap();
        bad_len[2] += 1;
        assert_eq!(s.handle_packet(9, &bad_len), Err(ControlError::Framing));
        let nested = c
            .seal(Direction::ClientToHost, 0, ENCRYPTED_HEADER_TYPE, &[])
            .unwrap();
        assert_eq!(s.handle_packet(9, &nested), Err(ControlError::Malformed));
        let short_rfi = c
            .seal(Direction::ClientToHost, 0, msg::RFI, &[1, 2])
            .unwrap();
        assert_eq!(
            s.handle_packet(9, &short_rfi),
            Err(ControlError::Truncated(msg::RFI))
        );
        assert_eq!(s.stats().auth_failures, 1);
        assert_eq!(s.stats().malformed, 5);
        assert!(
            s.handle_timeout(CONTROL_TIMEOUT_NS),
            "no packet refreshed the session"
        );
    }

    #[test]
    fn replays_are_refused_reordering_is_not() {
        let c = ControlCrypto::new(&KEY, true);
        let p = |seq| {
            c.seal(
                Direction::ClientToHost,
                seq,
                msg::PING,
                &[4, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap()
        };
        let mut s = ControlSession::new(&KEY, true, 0);
        assert_eq!(s.handle_packet(1, &p(5)), Ok(ClientMessage::Ping));
        assert_eq!(
            s.handle_packet(2, &p(3)),
            Ok(ClientMessage::Ping),
            "late but fresh"
        );
        assert_eq!(s.handle_packet(3, &p(5)), Err(ControlError::Replayed));
        assert_eq!(s.handle_packet(4, &p(3)), Err(ControlError::Replayed));
        let far = REPLAY_WINDOW as u32 + 10;
        assert_eq!(s.handle_packet(5, &p(far)), Ok(ClientMessage::Ping));
        assert_eq!(
            s.handle_packet(6, &p(4)),
            Err(ControlError::Replayed),
            "older than the window"
        );
        assert_eq!(s.stats().replayed, 3);
        assert_eq!(
            s.poll_timeout(),
            5 + CONTROL_TIMEOUT_NS,
            "replays do not refresh liveness"
        );
    }

    #[test]
    fn client_messages() {
        let mut rfi = 10u64.to_le_bytes().to_vec();
        rfi.extend(12u64.to_le_bytes());
        rfi.extend([0; 8]);
        assert_eq!(
            decode_client_message(msg::RFI, &rfi),
            Ok(ClientMessage::RefInvalidation {
                first: 10,
                last: 12
            })
        );
        let fec: Vec<u8> = vec![
            0, 0, 1, 0, 0, 5, 0, 6, 0, 1, 0, 22, 0, 5, 0, 21, 0, 1, 20, 0, 1,
        ];
        let ClientMessage::FecStatus(f) =
            decode_client_message(msg::FEC_STATUS_OR_LED, &fec).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                f.frame_index,
                f.total_data,
                f.received_parity,
                f.fec_percent,
                f.block_count
            ),
            (256, 22, 1, 20, 1)
        );
        assert_eq!(
            decode_client_message(msg::LTR_ACK, &[5, 0, 0, 0, 0, 0, 0, 0]),
            Ok(ClientMessage::LtrAck { frame: 5 })
        );
        assert_eq!(
            decode_client_message(0x7777, &[]),
            Ok(ClientMessage::Unknown(0x7777))
        );
    }

    #[test]
    fn host_message_layouts() {
        let enc = |m: HostMessage| m.encode();
        assert_eq!(
            enc(HostMessage::Rumble {
                controller: 1,
                low: 0x1234,
                high: 0xFFFF
            }),
            (
                0x010B,
                vec![0xEE, 0xFF, 0xC0, 0, 1, 0, 0x34, 0x12, 0xFF, 0xFF]
            )
        );
        assert_eq!(
            enc(HostMessage::TriggerRumble {
                controller: 2,
                left: 1,
                right: 2
            }),
            (0x5500, vec![2, 0, 1, 0, 2, 0])
        );
        assert_eq!(
            enc(HostMessage::MotionState {
                controller: 3,
                report_rate_hz: 100,
                motion_type: 2
            }),
            (0x5501, vec![3, 0, 100, 0, 2])
        );
        assert_eq!(
            enc(HostMessage::RgbLed {
                controller: 0,
                r: 1,
                g: 2,
                b: 3
            }),
            (0x5502, vec![0, 0, 1, 2, 3])
        );
        let (t, p) = enc(HostMessage::AdaptiveTriggers {
            controller: 0,
            event_flags: 0x0C,
            type_left: 1,
            type_right: 2,
            left: [7; 10],
            right: [9; 10],
        });
        assert_eq!((t, p.len(), p[2], p[5], p[15]), (0x5503, 25, 0x0C, 7, 9));
        let (t, p) = enc(HostMessage::HdrMode {
            enabled: true,
            metadata: [0x0102; 13],
        });
        assert_eq!((t, p.len(), p[0], p[1], p[2]), (0x010E, 27, 1, 2, 1));
    }
}
