//! A GameStream session's video through the orchestrator: media encodes at exactly the mode
//! ANNOUNCE negotiated, the pump hands access units to the protocol-agnostic paced sender, and
//! the core's `VideoPacketizer` (RTP + NV header + GF(2^8) Cauchy FEC) turns them into
//! datagrams for the address the client's video pings came from.

use std::net::SocketAddr;
use std::sync::Arc;

use punktfunk_gamestream::audio::{AudioPacketizer, AudioPackets};
use punktfunk_gamestream::rtsp::{StreamConfig, VideoCodec};
use punktfunk_gamestream::video::{VideoConfig, VideoPacketizer};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_tls::Fingerprint;
use punktfunk_wire::{FrameRef, PacketBatch, Packetize, PacketizeError};

use crate::host::Host;
use crate::session::{Protocol, Refusal, Session, SessionSpec};

/// FEC percentage this host uses (Sunshine's default).
pub const FEC_PERCENT: u32 = 20;

/// The core's video packetizer behind the pump's AU envelope (stripped here: GameStream
/// carries the bare Annex-B access unit).
struct EnvelopedVideo(VideoPacketizer);

impl Packetize for EnvelopedVideo {
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut PacketBatch,
    ) -> Result<(), PacketizeError> {
        let payload = match punktfunk_wire::au::AuTiming::parse(frame.data) {
            Ok((_, payload)) => payload,
            // Not enveloped (cannot happen with the pump): send as it is.
            Err(_) => frame.data,
        };
        self.0.packetize(
            FrameRef {
                data: payload,
                ..frame
            },
            out,
        )
    }

    fn next_sequence(&self) -> u64 {
        self.0.next_sequence()
    }

    fn new_batch(&self) -> PacketBatch {
        self.0.new_batch()
    }
}

/// The core's audio packetizer behind the pump's AU envelope: one Opus packet (5 ms, CBR,
/// from media) per call, one RTP datagram out. The RS(4,2) parity datagrams are NOT sent yet:
/// they are 12 bytes longer than the data datagrams, and the paced sender's batches have one
/// stride (a batch of different sizes is the missing piece). Without them the client cannot
/// recover lost audio packets; everything that arrives decodes.
struct EnvelopedAudio {
    inner: AudioPacketizer,
    out: AudioPackets,
}

impl Packetize for EnvelopedAudio {
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        batch: &mut PacketBatch,
    ) -> Result<(), PacketizeError> {
        let opus = match punktfunk_wire::au::AuTiming::parse(frame.data) {
            Ok((_, payload)) => payload,
            Err(_) => frame.data,
        };
        let too_large = || PacketizeError::FrameTooLarge {
            len: opus.len(),
            max: punktfunk_gamestream::audio::MAX_OPUS_PACKET as u32,
        };
        self.inner
            .packetize(opus, &mut self.out)
            .map_err(|_| too_large())?;
        let data = self.out.data();
        batch.prepare(data.len(), 1);
        if let Some(p) = batch.packet_mut(0) {
            p.copy_from_slice(data);
        }
        Ok(())
    }

    fn next_sequence(&self) -> u64 {
        0
    }
}

/// Who streams: the paired client and the pads it announced so far.
pub struct StreamClient {
    /// The client's certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// The seat's pads (controller arrival, or a pad's first state).
    pub pads: Vec<punktfunk_proto::input::PadKind>,
    /// The app Moonlight launched (its `appid`).
    pub app_id: u32,
}

/// Starts the orchestrator's session for an announced GameStream stream.
pub async fn start_session(
    host: &Arc<Host>,
    cfg: &StreamConfig,
    video_addr: SocketAddr,
    audio_addr: Option<SocketAddr>,
    keys: &punktfunk_gamestream::http::SessionKeys,
    client: StreamClient,
    end: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Session, Refusal> {
    let StreamClient {
        fingerprint: client,
        pads,
        app_id,
    } = client;
    let codec = match cfg.codec {
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Hevc => Codec::Hevc,
        other => {
            return Err(Refusal::internal(format!(
                "the client asked for {other:?}, which this host does not offer"
            )));
        }
    };
    let fps = cfg.fps.max(1);
    // (Only the frame interval, for pacing, and the largest frame matter here.)
    let data_plane = punktfunk_control::keys::fec_to_wire(
        &host.config.fec.to_proto(),
        1_000_000_000 / u64::from(fps),
    )
    .map_err(|e| Refusal::internal(e.to_string()))?;
    let packetizer = VideoPacketizer::new(VideoConfig::for_stream(
        cfg,
        keys,
        FEC_PERCENT,
        data_plane.max_frame_bytes as usize,
    ))
    .map_err(|e| Refusal::internal(e.to_string()))?;
    let spec = SessionSpec {
        protocol: Protocol::GameStream,
        id: host.next_session_id(),
        client_name: super::client_name(&client),
        fingerprint: client,
        client_addr: video_addr,
        mode: Mode {
            width: cfg.width,
            height: cfg.height,
            refresh_mhz: fps * 1000,
        },
        codec,
        bitrate_kbps: cfg.encoder_bitrate_kbps(FEC_PERCENT),
        // Audio once the client's audio pings told where it goes (they start at RTSP SETUP,
        // before the first video ping; stereo only: surround is not offered in DESCRIBE).
        audio: audio_addr.is_some(),
        probe_only: false,
        // The pads Moonlight announced so far (controller arrival, or a pad's first state);
        // later ones reopen the seat (`SeatInput::Pads`).
        pads,
        data_plane,
        // Unused with a custom packetizer; random so that nothing could reuse it.
        key: punktfunk_wire::SessionKey {
            key: rand::random(),
            salt: rand::random(),
        },
        end,
        video_packetizer: Some(Box::new(EnvelopedVideo(packetizer))),
        pacing: punktfunk_dataplane::PacingChoice::Auto,
        // An app id the file no longer has streams the desktop rather than failing a launch
        // Moonlight already accepted.
        app: super::http::app_by_id(app_id).map(|a| a.title),
        compositor: None,
        audio_packetizer: audio_addr.map(|addr| {
            let p: Box<dyn Packetize> = Box::new(EnvelopedAudio {
                inner: AudioPacketizer::for_stream(cfg, keys),
                out: AudioPackets::new(),
            });
            (p, addr)
        }),
    };
    Session::start(host, spec).await
}
