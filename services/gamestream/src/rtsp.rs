//! RTSP (TCP 48010): the request parser, the responder of one launched session, and the
//! negotiated [`StreamConfig`] from ANNOUNCE.
//!
//! # Transport rules the shell must follow
//!
//! One request per TCP connection: read until [`parse_request`] returns `Some`, answer with
//! [`RtspResponse::to_bytes`], then **close** the connection (the client reads until EOF). The
//! clients send plaintext RTSP because this host never returns an `rtspenc://` session URL;
//! a request that starts with the encrypted framing's top bit is refused
//! ([`RtspError::Encrypted`]).
//!
//! # Call order ([`RtspSession`], one per launch)
//!
//! `OPTIONS`, `DESCRIBE`, `SETUP audio`, `SETUP video`, `SETUP control`, `ANNOUNCE`, `PLAY`,
//! each fed to [`RtspSession::handle`], which returns the response and an [`RtspEvent`]:
//! [`RtspEvent::AudioSetup`] (audio pings start now), [`RtspEvent::Announced`] (the stream
//! configuration: authoritative for the session), [`RtspEvent::Play`].

use crate::xml::CodecSupport;
use std::fmt::Write as _;

/// Longest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest request body accepted (the client's ANNOUNCE is ~1.5 KB).
pub const MAX_BODY: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 32;
/// Most SDP attribute lines accepted in ANNOUNCE.
pub const MAX_SDP_ATTRIBUTES: usize = 128;
/// Smallest and largest `x-nv-video[0].packetSize` accepted (multiple of 16).
pub const PACKET_SIZE_RANGE: std::ops::RangeInclusive<u32> = 256..=8192;
/// Largest `x-nv-vqos[0].fec.minRequiredFecPackets` accepted.
pub const MAX_MIN_FEC_PACKETS: u32 = 32;

/// Why a request could not be parsed (answer 400 and close).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtspError {
    /// The head is longer than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] lines.
    #[error("RTSP request head too large")]
    HeadTooLarge,
    /// `Content-length` above [`MAX_BODY`].
    #[error("RTSP body of {0} bytes exceeds {MAX_BODY}")]
    BodyTooLarge(usize),
    /// The request line or a header is malformed.
    #[error("malformed RTSP request: {0}")]
    Malformed(&'static str),
    /// Encrypted RTSP framing (this host never offers `rtspenc://`).
    #[error("encrypted RTSP is not offered by this host")]
    Encrypted,
}

/// RTSP methods the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// OPTIONS.
    Options,
    /// DESCRIBE.
    Describe,
    /// SETUP.
    Setup,
    /// ANNOUNCE.
    Announce,
    /// PLAY.
    Play,
    /// Anything else.
    Other,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspRequest {
    /// The method.
    pub method: Method,
    /// The request target (`streamid=audio/0/0`, `rtsp://…`, `/`).
    pub target: String,
    /// Header lines in order (names as sent; look up with [`RtspRequest::header`]).
    pub headers: Vec<(String, String)>,
    /// The body (`Content-length` bytes).
    pub body: Vec<u8>,
}

impl RtspRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `CSeq` (0 if absent or not a number).
    pub fn cseq(&self) -> u32 {
        self.header("CSeq")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// Parses one request from the bytes received so far: `Ok(None)` = incomplete, read more.
/// Returns the request and the number of bytes it used.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RtspRequest, usize)>, RtspError> {
    if buf.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(RtspError::Encrypted);
    }
    let Some((head_len, body_start)) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(RtspError::HeadTooLarge);
        }
        return Ok(None);
    };
    if head_len > MAX_HEAD {
        return Err(RtspError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| RtspError::Malformed("head is not UTF-8"))?;
    let mut lines = head.lines();
    let request_line = lines.next().ok_or(RtspError::Malformed("empty request"))?;
    let mut parts = request_line.split(' ').filter(|s| !s.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RtspError::Malformed("request line"));
    };
    if version != "RTSP/1.0" {
        return Err(RtspError::Malformed("protocol is not RTSP/1.0"));
    }
    let method = match method {
        "OPTIONS" => Method::Options,
        "DESCRIBE" => Method::Describe,
        "SETUP" => Method::Setup,
        "ANNOUNCE" => Method::Announce,
        "PLAY" => Method::Play,
        _ => Method::Other,
    };
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(RtspError::HeadTooLarge);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(RtspError::Malformed("header without ':'"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut req = RtspRequest {
        method,
        target: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    let body_len = match req.header("Content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| RtspError::Malformed("Content-length"))?,
    };
    if body_len > MAX_BODY {
        return Err(RtspError::BodyTooLarge(body_len));
    }
    let end = body_start + body_len;
    if buf.len() < end {
        return Ok(None);
    }
    req.body = buf[body_start..end].to_vec();
    Ok(Some((req, end)))
}

/// A response. Serialize with [`RtspResponse::to_bytes`]; the shell then closes the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspResponse {
    /// Status code (the clients abort the handshake on anything but 200).
    pub status: u16,
    /// Headers after `CSeq` (names exactly as the clients compare them).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
    cseq: u32,
}

impl RtspResponse {
    fn new(status: u16, cseq: u32) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            cseq,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// A bare error response (also for requests that did not parse: `cseq` 0).
    pub fn error(status: u16, cseq: u32) -> Self {
        Self::new(status, cseq)
    }

    /// The wire form: `RTSP/1.0 <code> <text>`, `CSeq` first, `Name: value` with exactly one
    /// space, a blank line, the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            454 => "Session Not Found",
            455 => "Method Not Valid In This State",
            _ => "Error",
        };
        let mut s = format!(
            "RTSP/1.0 {} {reason}\r\nCSeq: {}\r\n",
            self.status, self.cseq
        );
        for (n, v) in &self.headers {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        if !self.body.is_empty() {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        s.push_str(&self.body);
        s.into_bytes()
    }
}

/// Encryption bits of `x-ss-general.encryption*`.
pub mod encryption {
    /// Control stream v2 (12-byte IVs).
    pub const CONTROL_V2: u32 = 0x1;
    /// Video AES-GCM.
    pub const VIDEO: u32 = 0x2;
    /// Audio AES-CBC.
    pub const AUDIO: u32 = 0x4;
}

/// `x-nv-general.featureFlags` bit: the client will decrypt audio (so the host must encrypt).
pub const NV_FEATURE_AUDIO_ENCRYPTION: u32 = 0x20;

/// What this host offers in DESCRIBE and the ports it answers SETUP with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspConfig {
    /// UDP audio port.
    pub audio_port: u16,
    /// UDP video port.
    pub video_port: u16,
    /// ENet control port.
    pub control_port: u16,
    /// Session token of `Session:` (opaque, no `;`).
    pub session_token: String,
    /// `X-SS-Ping-Payload`: 16 ASCII characters the client puts into its UDP pings.
    pub ping_payload: [u8; 16],
    /// `X-SS-Connect-Data`: the value the client puts into its ENet CONNECT.
    pub connect_data: u32,
    /// Codecs media can encode here.
    pub codecs: CodecSupport,
    /// Offer 5.1/7.1 audio (`surround-params`).
    pub surround: bool,
    /// `x-ss-general.encryptionSupported` ([`encryption`] bits).
    pub encryption_supported: u32,
    /// `x-ss-general.encryptionRequested`.
    pub encryption_requested: u32,
    /// Refuse (403) an ANNOUNCE that does not enable every requested bit.
    pub encryption_mandatory: bool,
    /// `x-ss-general.featureFlags`: 0x1 pen/touch, 0x2 controller touchpad + motion.
    pub feature_flags: u32,
}

impl RtspConfig {
    /// The DESCRIBE body (spec §4.5).
    pub fn describe_body(&self) -> String {
        let mut b = String::new();
        let _ = writeln!(b, "a=x-ss-general.featureFlags:{}", self.feature_flags);
        let _ = writeln!(
            b,
            "a=x-ss-general.encryptionSupported:{}",
            self.encryption_supported
        );
        let _ = writeln!(
            b,
            "a=x-ss-general.encryptionRequested:{}",
            self.encryption_requested
        );
        if self.codecs.hevc {
            b.push_str("sprop-parameter-sets=AAAAAU\n");
        }
        if self.codecs.av1 {
            b.push_str("a=rtpmap:98 AV1/90000\n");
        }
        if self.surround {
            for layout in SURROUND_PARAMS {
                let _ = writeln!(b, "a=fmtp:97 surround-params={layout}");
            }
        }
        b
    }
}

/// The Opus layouts we advertise, in the order the client reads them (normal then high
/// quality per channel count). Normal-quality mappings are written so that the client's
/// reorder (last digit moved to position 3) yields the identity.
pub const SURROUND_PARAMS: [&str; 6] = [
    "21101",
    "21101",
    "642012453",
    "660012345",
    "85301245673",
    "88001234567",
];

/// The negotiated codec (`x-nv-vqos[0].bitStreamFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264.
    H264,
    /// HEVC.
    Hevc,
    /// AV1.
    Av1,
}

/// The stream configuration the client announced: authoritative for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Encode width.
    pub width: u32,
    /// Encode height.
    pub height: u32,
    /// Encode frame rate.
    pub fps: u32,
    /// Exact refresh rate × 100 if the client gave one (0 = none).
    pub refresh_rate_x100: u32,
    /// `x-nv-video[0].packetSize`: NV header + payload bytes per video packet.
    pub packet_size: u32,
    /// `x-nv-vqos[0].bw.maximumBitrateKbps`.
    pub max_bitrate_kbps: u32,
    /// `x-ml-video.configuredBitrateKbps` (the user's full setting), if sent.
    pub configured_bitrate_kbps: Option<u32>,
    /// Minimum parity shards per FEC block.
    pub min_fec_packets: u32,
    /// Codec.
    pub codec: VideoCodec,
    /// 10-bit / HDR stream.
    pub hdr: bool,
    /// 4:4:4 chroma.
    pub chroma_444: bool,
    /// `encoderCscMode`: `(colorspace << 1) | full_range`.
    pub csc_mode: u32,
    /// Slices per frame the decoder wants.
    pub slices_per_frame: u32,
    /// 1 = encode with a single reference frame.
    pub max_reference_frames: u32,
    /// Control stream with v2 (12-byte) IVs; otherwise the legacy 16-byte IVs.
    pub control_v2: bool,
    /// Encrypt video (AES-GCM).
    pub video_encryption: bool,
    /// Encrypt audio (AES-CBC): `encryptionEnabled & 0x4` or NV featureFlags `0x20`.
    pub audio_encryption: bool,
    /// Audio channels: 2, 6 or 8.
    pub audio_channels: u32,
    /// WAVE channel mask.
    pub audio_channel_mask: u32,
    /// High-quality audio (surround AudioQuality=1, or stereo with a real `Host:` address).
    pub audio_high_quality: bool,
    /// Opus frame duration in ms.
    pub audio_packet_duration_ms: u32,
    /// `x-ml-general.featureFlags` (0x1 FEC status, 0x2 ping payload + connect data).
    pub ml_feature_flags: u32,
    /// DSCP-mark video/audio packets.
    pub qos: bool,
}

impl StreamConfig {
    /// The encoder bitrate as Sunshine derives it: from the configured bitrate when sent
    /// (minus FEC, audio and a 10 % headroom), else `maximumBitrateKbps`.
    pub fn encoder_bitrate_kbps(&self, fec_percent: u32) -> u32 {
        let Some(configured) = self.configured_bitrate_kbps.filter(|&c| c > 0) else {
            return self.max_bitrate_kbps;
        };
        let mut b =
            u64::from(configured) * u64::from(100u32.saturating_sub(fec_percent.min(100))) / 100;
        let per_channel: u64 = if self.audio_high_quality { 256 } else { 96 };
        b -= (per_channel * u64::from(self.audio_channels)).min(b / 5);
        b -= 500u64.min(b / 10);
        u32::try_from(b).unwrap_or(u32::MAX)
    }
}

/// Why an ANNOUNCE was refused (the response status says which way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// A required attribute is missing.
    #[error("ANNOUNCE lacks {0}")]
    Missing(&'static str),
    /// An attribute is out of range.
    #[error("ANNOUNCE attribute {0} out of range")]
    Invalid(&'static str),
    /// The codec was not offered.
    #[error("ANNOUNCE asks for a codec this host does not offer")]
    Codec,
    /// Mandatory encryption not enabled, or unsupported encryption enabled.
    #[error("ANNOUNCE encryption does not match the host's policy")]
    Encryption,
    /// Too many attributes or not UTF-8.
    #[error("ANNOUNCE body malformed")]
    Malformed,
}

/// The `a=name:value` attributes of an SDP body (value trimmed; first occurrence wins).
fn sdp_attributes(body: &[u8]) -> Result<Vec<(&str, &str)>, AnnounceError> {
    let text = std::str::from_utf8(body).map_err(|_| AnnounceError::Malformed)?;
    let mut out: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("a=") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(':') else {
            continue;
        };
        if out.len() == MAX_SDP_ATTRIBUTES {
            return Err(AnnounceError::Malformed);
        }
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, value.trim()));
        }
    }
    Ok(out)
}

struct Attrs<'a>(Vec<(&'a str, &'a str)>);

impl Attrs<'_> {
    fn opt(&self, name: &'static str) -> Result<Option<u32>, AnnounceError> {
        match self.0.iter().find(|(n, _)| *n == name) {
            None => Ok(None),
            Some((_, v)) => v
                .parse()
                .map(Some)
                .map_err(|_| AnnounceError::Invalid(name)),
        }
    }
    fn req(&self, name: &'static str) -> Result<u32, AnnounceError> {
        self.opt(name)?.ok_or(AnnounceError::Missing(name))
    }
    fn or(&self, name: &'static str, default: u32) -> Result<u32, AnnounceError> {
        Ok(self.opt(name)?.unwrap_or(default))
    }
}

fn check(ok: bool, name: &'static str) -> Result<(), AnnounceError> {
    if ok {
        Ok(())
    } else {
        Err(AnnounceError::Invalid(name))
    }
}

/// Parses and validates an ANNOUNCE body against what `cfg` offered. `host_header` is the
/// request's `Host:` (stereo high quality is signalled by it not being `0.0.0.0`).
pub fn parse_announce(
    cfg: &RtspConfig,
    body: &[u8],
    host_header: Option<&str>,
) -> Result<StreamConfig, AnnounceError> {
    let a = Attrs(sdp_attributes(body)?);
    let width = a.req("x-nv-video[0].clientViewportWd")?;
    let height = a.req("x-nv-video[0].clientViewportHt")?;
    let fps = a.req("x-nv-video[0].maxFPS")?;
    check(
        (1..=crate::http::MAX_DIMENSION).contains(&width),
        "clientViewportWd",
    )?;
    check(
        (1..=crate::http::MAX_DIMENSION).contains(&height),
        "clientViewportHt",
    )?;
    check((1..=crate::http::MAX_FPS).contains(&fps), "maxFPS")?;
    let packet_size = a.req("x-nv-video[0].packetSize")?;
    check(
        PACKET_SIZE_RANGE.contains(&packet_size) && packet_size.is_multiple_of(16),
        "packetSize",
    )?;
    let min_fec_packets = a.req("x-nv-vqos[0].fec.minRequiredFecPackets")?;
    check(
        min_fec_packets <= MAX_MIN_FEC_PACKETS,
        "minRequiredFecPackets",
    )?;
    let codec = match a.or("x-nv-vqos[0].bitStreamFormat", 0)? {
        0 => VideoCodec::H264,
        1 if cfg.codecs.hevc => VideoCodec::Hevc,
        2 if cfg.codecs.av1 => VideoCodec::Av1,
        _ => return Err(AnnounceError::Codec),
    };
    let hdr = a.or("x-nv-video[0].dynamicRangeMode", 0)? != 0;
    if hdr
        && !matches!(codec, VideoCodec::Hevc if cfg.codecs.hevc_main10)
        && !matches!(codec, VideoCodec::Av1 if cfg.codecs.av1_main10)
    {
        return Err(AnnounceError::Codec);
    }
    let audio_channels = a.req("x-nv-audio.surround.numChannels")?;
    check(
        audio_channels == 2 || (cfg.surround && matches!(audio_channels, 6 | 8)),
        "numChannels",
    )?;
    let audio_packet_duration_ms = a.req("x-nv-aqos.packetDuration")?;
    check(
        matches!(audio_packet_duration_ms, 5 | 10 | 20),
        "packetDuration",
    )?;
    let enabled = a.or("x-ss-general.encryptionEnabled", 0)?;
    let nv_flags = a.or("x-nv-general.featureFlags", 135)?;
    if enabled & !cfg.encryption_supported != 0 {
        return Err(AnnounceError::Encryption);
    }
    if cfg.encryption_mandatory && enabled & cfg.encryption_requested != cfg.encryption_requested {
        return Err(AnnounceError::Encryption);
    }
    let hq = a.or("x-nv-audio.surround.AudioQuality", 0)? != 0;
    let stereo_hq = host_header.is_some_and(|h| h.trim() != "0.0.0.0");
    let configured = a.opt("x-ml-video.configuredBitrateKbps")?;
    Ok(StreamConfig {
        width,
        height,
        fps,
        refresh_rate_x100: a.or("x-nv-video[0].clientRefreshRateX100", 0)?,
        packet_size,
        max_bitrate_kbps: a.req("x-nv-vqos[0].bw.maximumBitrateKbps")?,
        configured_bitrate_kbps: configured,
        min_fec_packets,
        codec,
        hdr,
        chroma_444: a.or("x-ss-video[0].chromaSamplingType", 0)? == 1,
        csc_mode: a.or("x-nv-video[0].encoderCscMode", 0)?,
        slices_per_frame: a
            .or("x-nv-video[0].videoEncoderSlicesPerFrame", 1)?
            .clamp(1, 64),
        max_reference_frames: a.or("x-nv-video[0].maxNumReferenceFrames", 0)?,
        control_v2: enabled & encryption::CONTROL_V2 != 0,
        video_encryption: enabled & encryption::VIDEO != 0,
        audio_encryption: enabled & encryption::AUDIO != 0
            || nv_flags & NV_FEATURE_AUDIO_ENCRYPTION != 0,
        audio_channels,
        audio_channel_mask: a.req("x-nv-audio.surround.channelMask")?,
        audio_high_quality: if audio_channels == 2 { stereo_hq } else { hq },
        audio_packet_duration_ms,
        ml_feature_flags: a.or("x-ml-general.featureFlags", 0)?,
        qos: a.or("x-nv-vqos[0].qosTrafficType", 0)? != 0,
    })
}

/// What a request changed, for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtspEvent {
    /// SETUP audio answered: audio pings start now.
    AudioSetup,
    /// SETUP video answered.
    VideoSetup,
    /// SETUP control answered.
    ControlSetup,
    /// ANNOUNCE accepted: the session's stream configuration.
    Announced(StreamConfig),
    /// PLAY: the client connects ENet and starts its video pings next.
    Play,
}

/// The RTSP responder of one launched session (see the module docs for the call order).
#[derive(Debug)]
pub struct RtspSession {
    cfg: RtspConfig,
    announced: Option<StreamConfig>,
}

impl RtspSession {
    /// A responder offering `cfg`.
    pub fn new(cfg: RtspConfig) -> Self {
        Self {
            cfg,
            announced: None,
        }
    }

    /// The configuration ANNOUNCE negotiated, once it has.
    pub fn stream_config(&self) -> Option<&StreamConfig> {
        self.announced.as_ref()
    }

    /// Answers one request.
    pub fn handle(&mut self, req: &RtspRequest) -> (RtspResponse, Option<RtspEvent>) {
        let cseq = req.cseq();
        // After SETUP audio the client repeats the token; a different one is not ours.
        if let Some(s) = req.header("Session")
            && s.split(';').next().map(str::trim) != Some(self.cfg.session_token.as_str())
        {
            return (RtspResponse::error(454, cseq), None);
        }
        match req.method {
            Method::Options => (RtspResponse::new(200, cseq), None),
            Method::Describe => {
                let mut r = RtspResponse::new(200, cseq).header("Content-Type", "application/sdp");
                r.body = self.cfg.describe_body();
                (r, None)
            }
            Method::Setup => self.setup(req, cseq),
            Method::Announce => match parse_announce(&self.cfg, &req.body, req.header("Host")) {
                Ok(sc) => {
                    self.announced = Some(sc.clone());
                    (RtspResponse::new(200, cseq), Some(RtspEvent::Announced(sc)))
                }
                Err(AnnounceError::Encryption) => (RtspResponse::error(403, cseq), None),
                Err(_) => (RtspResponse::error(400, cseq), None),
            },
            Method::Play if self.announced.is_some() => {
                (RtspResponse::new(200, cseq), Some(RtspEvent::Play))
            }
            Method::Play => (RtspResponse::error(455, cseq), None),
            Method::Other => (RtspResponse::error(400, cseq), None),
        }
    }

    fn setup(&self, req: &RtspRequest, cseq: u32) -> (RtspResponse, Option<RtspEvent>) {
        let kind = req
            .target
            .split_once("streamid=")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
        let (port, event) = match kind {
            Some("audio") => (self.cfg.audio_port, RtspEvent::AudioSetup),
            Some("video") => (self.cfg.video_port, RtspEvent::VideoSetup),
            Some("control") => (self.cfg.control_port, RtspEvent::ControlSetup),
            _ => return (RtspResponse::error(404, cseq), None),
        };
        let mut r = RtspResponse::new(200, cseq)
            .header(
                "Session",
                format!("{};timeout = 90", self.cfg.session_token),
            )
            .header("Transport", format!("server_port={port}"));
        r = match event {
            RtspEvent::ControlSetup => {
                r.header("X-SS-Connect-Data", self.cfg.connect_data.to_string())
            }
            _ => r.header(
                "X-SS-Ping-Payload",
                String::from_utf8_lossy(&self.cfg.ping_payload).into_owned(),
            ),
        };
        (r, Some(event))
    }
}

/// A fresh `X-SS-Ping-Payload`: 8 random bytes as 16 upper-case hex characters.
pub fn new_ping_payload() -> [u8; 16] {
    use rand::RngCore;
    let mut raw = [0u8; 8];
    rand::rng().fill_bytes(&mut raw);
    let hex = crate::http::hex_encode(&raw);
    let mut out = [0u8; 16];
    out.copy_from_slice(hex.as_bytes());
    out
}

/// A fresh `X-SS-Connect-Data` value.
pub fn new_connect_data() -> u32 {
    rand::random()
}

/// Length of a v2 UDP ping: the 16-byte `X-SS-Ping-Payload` and a u32be counter.
pub const PING_LEN: usize = 20;

/// Parses a client's v2 UDP ping (sent every 500 ms to the audio and video ports): the ping
/// payload (match it against the sessions' [`RtspConfig::ping_payload`]) and the counter.
/// The datagram's source address is where that stream must be sent. Legacy 4-byte `PING`s
/// and anything else give `None`.
pub fn parse_ping(datagram: &[u8]) -> Option<([u8; 16], u32)> {
    if datagram.len() < PING_LEN {
        return None;
    }
    let mut payload = [0u8; 16];
    payload.copy_from_slice(&datagram[..16]);
    let counter = u32::from_be_bytes([datagram[16], datagram[17], datagram[18], datagram[19]]);
    Some((payload, counter))
}
