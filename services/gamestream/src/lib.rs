//! # punktfunk-gamestream: the sans-IO core of GameStream (Moonlight) hosting
//!
//! Protocol logic only: bytes and `CLOCK_MONOTONIC` nanoseconds (`u64`) in, bytes and events
//! out. No sockets, no TLS, no tokio. The shells in `punktfunk-transport` (HTTP/HTTPS, RTSP
//! over TCP, ENet, UDP through the paced sender) call it. The protocol is described in
//! `docs/gamestream-protocol.md`; the baseline is Sunshine's: we advertise [`APP_VERSION`] and
//! [`GFE_VERSION`], which select SHA-256 pairing, TCP RTSP, the encrypted control stream and
//! every Sunshine extension in the clients.
//!
//! | module | job | shell entry points |
//! |---|---|---|
//! | [`http`] | request targets, the query parser, `/launch` parameters | [`http::parse_target`], [`http::LaunchRequest::from_query`] |
//! | [`xml`] | every XML reply (serverinfo, pair, applist, launch/resume/cancel, unpair, the XML 401) | [`xml::server_info`], [`xml::unauthorized`], ... |
//! | [`pairing`] | the host identity and the five-phase PIN pairing | [`pairing::PairingHost`], [`pairing::HostIdentity`] |
//! | [`rtsp`] | RTSP parser, the per-launch responder (DESCRIBE SDP, SETUP ports, ping payload, connect data), ANNOUNCE → [`rtsp::StreamConfig`] | [`rtsp::parse_request`], [`rtsp::RtspSession`] |
//! | [`control`] | control stream: AES-GCM framing (v2 and legacy IVs), client messages, host feedback encoders, liveness | [`control::ControlSession`] |
//! | [`input`] | input packets → [`input::InputEvent`] | [`input::decode_input`] (via [`control::ClientMessage::Input`]) |
//! | [`video`] | RTP + NV header + Cauchy FEC + optional AES-GCM, a `punktfunk_wire::Packetize` | [`video::VideoPacketizer`] → `Sender::spawn_with(Box::new(..))` |
//! | [`audio`] | RTP Opus + AES-CBC + RS(4,2) FEC | [`audio::AudioPacketizer`] |
//! | [`fec`] | GF(2^8) Reed-Solomon as moonlight-common-c decodes it, the block plan | [`fec::plan_frame`] |
//!
//! ## Session recipe (after `/launch`)
//!
//! 1. `/launch` → keep [`http::SessionKeys`] (rikey, rikeyid); make an [`rtsp::RtspConfig`]
//!    with fresh [`rtsp::new_ping_payload`] and [`rtsp::new_connect_data`].
//! 2. RTSP connections → [`rtsp::parse_request`] + [`rtsp::RtspSession::handle`], answer,
//!    close. [`rtsp::RtspEvent::Announced`] carries the [`rtsp::StreamConfig`].
//! 3. UDP pings ([`rtsp::parse_ping`]: the 16-byte ping payload + a u32be counter) tell the
//!    audio and video endpoints: send each stream to its ping's source address.
//! 4. ENet CONNECT whose `data` equals the connect data → [`control::ControlSession::new`]
//!    with `rikey` and [`rtsp::StreamConfig::control_v2`].
//! 5. Video: [`video::VideoPacketizer::new`]`(`[`video::VideoConfig::for_stream`]`)`: `packet_size`, `min_fec_packets`, `fps`
//!    and the key if [`rtsp::StreamConfig::video_encryption`]; the first frame is an IDR.
//!    Audio: [`audio::AudioPacketizer::for_stream`]: `audio_packet_duration_ms` and the key if
//!    [`rtsp::StreamConfig::audio_encryption`].
//! 6. End: seal [`control::HostMessage::Termination`]`(`[`control::TERMINATION_GRACEFUL`]`)`.
//!
//! ## HTTP shell recipe
//!
//! 1. `let (verb, query) = http::parse_target(target)?` (error → HTTP 400).
//! 2. Plain HTTP serves only verbs with [`http::Verb::served_over_http`]. On HTTPS, compare
//!    the presented client certificate (DER) with the paired set; if it is not there, answer
//!    every verb except `/pair` with [`xml::unauthorized`]`(path)` (`/pair` gets
//!    `https = Some(false)`, so `pairchallenge` answers `paired=0`).
//! 3. `/serverinfo` → [`xml::server_info`]; `/pair` → [`pairing::PairingHost::handle_pair`];
//!    `/unpair` → [`pairing::PairingHost::handle_unpair`] + [`xml::unpair`]; `/applist` →
//!    [`xml::app_list`]; `/launch`/`/resume` → [`http::LaunchRequest::from_query`] then
//!    [`xml::launch`]/[`xml::resume`] (or [`xml::error`]); `/cancel` → [`xml::cancel`].
//! 4. Reply HTTP 200 with `Content-Type: `[`xml::HTTP_CONTENT_TYPE`] and `Connection: close`.
//!
//! ## Rules
//!
//! * Every parser is total (fuzzed, no panics) and bounded by a constant of its module or a
//!   negotiated parameter; no length read from the network sizes an allocation unchecked.
//! * Secrets (the rikey, pairing keys, PINs, private keys) never appear in `Debug` output or
//!   error messages.

#![forbid(unsafe_code)]

pub mod audio;
pub mod control;
pub mod fec;
pub mod http;
pub mod input;
pub mod pairing;
pub mod rtsp;
pub mod video;
pub mod xml;

/// `appversion` we advertise: major 7 (SHA-256 pairing, Gen 7), 7.1.431 (TCP RTSP, encrypted
/// control stream, multi-block FEC), negative 4th component = "Sunshine" (every extension).
pub const APP_VERSION: &str = "7.1.431.-1";
/// `GfeVersion` we advertise (Moonlight-qt marks newer unknown values unsupported).
pub const GFE_VERSION: &str = "3.23.0.74";

/// Default ports (Sunshine's convention: offsets from the HTTP port).
pub mod ports {
    /// HTTP API (plain): the base port.
    pub const HTTP: u16 = 47989;
    /// HTTPS API (mutual TLS): base − 5.
    pub const HTTPS: u16 = 47984;
    /// Video RTP (UDP): base + 9.
    pub const VIDEO: u16 = 47998;
    /// Control stream (ENet over UDP): base + 10.
    pub const CONTROL: u16 = 47999;
    /// Audio RTP (UDP): base + 11.
    pub const AUDIO: u16 = 48000;
    /// RTSP (TCP): base + 21.
    pub const RTSP: u16 = 48010;
}
