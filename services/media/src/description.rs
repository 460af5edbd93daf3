//! Pipeline descriptions: typed data → a gst-launch string (docs/architecture.md, "Media").
//!
//! Everything here is pure: no GStreamer calls, so every ladder rung — including the NVIDIA
//! zero-copy chain that cannot run on a machine without a GPU — is unit-tested as data. The
//! runtime ([`crate::worker`]) hands the string from [`PipelineDesc::launch`] to
//! `gst::parse::launch` and finds the elements it needs by their fixed names ([`names`]).
//!
//! ```text
//! source ! [queue] ! convert… ! caps ! encoder ! parser ! appsink
//! ```

use std::collections::HashSet;
use std::fmt::Write as _;

/// The element names the worker looks up in a built pipeline.
pub mod names {
    /// The source element (videotestsrc / pipewiresrc).
    pub const SOURCE: &str = "src";
    /// The capsfilter right after the source: its src pad carries captured frames (the
    /// counter and the capture stamp are applied there).
    pub const CAPTURED: &str = "captured";
    /// The encoder.
    pub const ENCODER: &str = "enc";
    /// The parser after the encoder.
    pub const PARSER: &str = "parse";
    /// The appsink that hands access units to the ring.
    pub const SINK: &str = "sink";
}

/// Video codecs the ladder knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
}

impl Codec {
    /// The codec's usual name, for people and logs.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H.264",
            Codec::Hevc => "HEVC",
        }
    }
}

/// The contract's codecs (`punktfunk.common.v1.Codec`) this ladder encodes; the one
/// conversion between the two vocabularies. `Unspecified` and AV1 have no rung: the error is
/// the contract's codec, for the caller's message.
impl TryFrom<punktfunk_proto::common::Codec> for Codec {
    type Error = punktfunk_proto::common::Codec;
    fn try_from(c: punktfunk_proto::common::Codec) -> Result<Self, Self::Error> {
        use punktfunk_proto::common::Codec as P;
        match c {
            P::H264 => Ok(Codec::H264),
            P::Hevc => Ok(Codec::Hevc),
            P::Av1 | P::Unspecified => Err(c),
        }
    }
}

impl From<Codec> for punktfunk_proto::common::Codec {
    fn from(c: Codec) -> Self {
        match c {
            Codec::H264 => punktfunk_proto::common::Codec::H264,
            Codec::Hevc => punktfunk_proto::common::Codec::Hevc,
        }
    }
}

/// A video mode: the contract's (`punktfunk.common.v1.Mode`): width × height at
/// `refresh_mhz` millihertz (59940 = 59.94 Hz). What media does with one is [`ModeExt`].
pub use punktfunk_proto::common::Mode;

/// Limits a mode must satisfy (beyond them a request is refused as INVALID_ARGUMENT): the
/// encoders' own, wider than the protocol's ([`punktfunk_proto::limits`]) except the refresh
/// ceiling, which is the protocol's. Media tells transport its largest mode (`Capabilities`).
pub const MAX_DIMENSION: u32 = 8192;
/// Smallest width or height an encoder is asked for.
pub const MIN_DIMENSION: u32 = 16;
/// Lowest refresh rate (mHz): 1 Hz.
pub const MIN_REFRESH_MHZ: u32 = 1_000;
pub use punktfunk_proto::limits::MAX_REFRESH_MHZ;
/// The largest mode the encoders are asked for (what `Capabilities.max_mode` reports).
pub const MAX_MODE: Mode = Mode {
    width: MAX_DIMENSION,
    height: MAX_DIMENSION,
    refresh_mhz: MAX_REFRESH_MHZ,
};

/// `width` × `height` at a whole `hz`.
pub const fn mode(width: u32, height: u32, hz: u32) -> Mode {
    Mode {
        width,
        height,
        refresh_mhz: hz * 1000,
    }
}

/// What the encoder pipeline needs to know about a [`Mode`].
pub trait ModeExt {
    /// Checks the mode is something an encoder can be asked for: even sizes (4:2:0), within
    /// [`MIN_DIMENSION`]..=[`MAX_DIMENSION`], refresh [`MIN_REFRESH_MHZ`]..=[`MAX_REFRESH_MHZ`].
    fn validate(&self) -> Result<(), String>;
    /// The frame rate as a reduced GStreamer fraction string, e.g. `60/1`, `60000/1001`.
    fn framerate(&self) -> String;
    /// The frame rate as (numerator, denominator): millihertz over 1000, with NTSC rates
    /// (x*1000/1001, given as e.g. 59940) mapped to their exact fractions.
    fn framerate_fraction(&self) -> (u32, u32);
    /// The nominal frame interval in nanoseconds.
    fn frame_interval_ns(&self) -> u64;
    /// `1280x720@60`, `1920x1080@59.94`.
    fn label(&self) -> String;
}

impl ModeExt for Mode {
    fn validate(&self) -> Result<(), String> {
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if !(MIN_DIMENSION..=MAX_DIMENSION).contains(&v) {
                return Err(format!(
                    "{what} {v} is outside {MIN_DIMENSION}..={MAX_DIMENSION}"
                ));
            }
            if !v.is_multiple_of(2) {
                return Err(format!("{what} {v} is odd; 4:2:0 video needs even sizes"));
            }
        }
        if !(MIN_REFRESH_MHZ..=MAX_REFRESH_MHZ).contains(&self.refresh_mhz) {
            return Err(format!(
                "refresh {} mHz is outside {MIN_REFRESH_MHZ}..={MAX_REFRESH_MHZ} mHz",
                self.refresh_mhz
            ));
        }
        Ok(())
    }

    fn framerate(&self) -> String {
        let (n, d) = self.framerate_fraction();
        format!("{n}/{d}")
    }

    fn framerate_fraction(&self) -> (u32, u32) {
        let m = self.refresh_mhz;
        // 59940 → 60000/1001, 29970 → 30000/1001, 119880 → 120000/1001.
        let ntsc_base = (m as u64 * 1001).div_ceil(1000);
        if !m.is_multiple_of(1000) && ntsc_base.is_multiple_of(1000) {
            return (ntsc_base as u32, 1001);
        }
        let g = gcd(m, 1000);
        (m / g, 1000 / g)
    }

    fn frame_interval_ns(&self) -> u64 {
        1_000_000_000_000 / self.refresh_mhz.max(1) as u64
    }

    fn label(&self) -> String {
        let hz = if self.refresh_mhz.is_multiple_of(1000) {
            format!("{}", self.refresh_mhz / 1000)
        } else {
            format!("{:.2}", self.refresh_mhz as f64 / 1000.0)
        };
        format!("{}x{}@{hz}", self.width, self.height)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The test source's default pattern: content that looks like a game to the encoder. An
/// animated zone plate (videotestsrc `zone-plate`, see [`GAME_ZONE_PLATE`]): fine rings that
/// sweep and drift every frame, so motion search finds little to reuse and x264 spends the rate
/// it is given (≥ 80 % of 20 Mbit/s at 720p60, where the ball on black reaches ~2 %). The frame
/// counter is drawn on top of it like on any other pattern.
pub const GAME_PATTERN: &str = "game";

/// The ball on black (videotestsrc's `ball`): nearly free to encode; kept by name.
pub const BALL_PATTERN: &str = "ball";

/// The test patterns media.toml's `test_pattern` accepts: [`GAME_PATTERN`], [`BALL_PATTERN`],
/// and videotestsrc's `snow` (incompressible) and `smpte` (still bars).
pub const TEST_PATTERNS: [&str; 4] = [GAME_PATTERN, BALL_PATTERN, "snow", "smpte"];

/// The videotestsrc properties of [`GAME_PATTERN`]: a zone plate with quadratic terms in x and y
/// (the rings), a linear x term and an x·t term (they drift sideways) and a linear time term
/// (they sweep). Measured with x264 ultrafast/zerolatency CBR at 20 Mbit/s, 720p60: ~20 Mbit/s,
/// the source costing ~0.25 of a core.
pub const GAME_ZONE_PLATE: [(&str, &str); 6] = [
    ("pattern", "zone-plate"),
    ("kx2", "12"),
    ("ky2", "12"),
    ("kx", "2"),
    ("kt", "2"),
    ("kxt", "1"),
];

/// Where frames come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceDesc {
    /// `videotestsrc is-live=true` at the mode; the worker stamps a frame counter into each frame.
    Test {
        /// [`GAME_PATTERN`] (the default), or a videotestsrc `pattern` nick: `ball`, `snow`
        /// (incompressible), `smpte`, …
        pattern: String,
    },
    /// A PipeWire screencast node reached through a remote fd.
    PipeWire {
        /// The raw number of the remote fd (the worker keeps the `OwnedFd` alive as long as the
        /// pipeline; pipewiresrc duplicates it). `None`: the default PipeWire daemon.
        fd: Option<i32>,
        /// The node id (`path=`).
        node_id: u32,
        /// Negotiate `video/x-raw(memory:DMABuf)` (GPU chains) instead of system memory.
        dmabuf: bool,
    },
}

/// videotestsrc's properties for `pattern` ([`GAME_PATTERN`] or a videotestsrc nick).
fn test_source_props(pattern: &str) -> Vec<(&'static str, String)> {
    let mut props = vec![("is-live", "true".to_string())];
    if pattern == GAME_PATTERN {
        props.extend(GAME_ZONE_PLATE.iter().map(|&(k, v)| (k, v.to_string())));
    } else {
        props.push(("pattern", pattern.to_string()));
    }
    props
}

/// One encoder element with its settings, in the order they are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderDesc {
    /// The GStreamer element factory name (e.g. `x264enc`).
    pub element: &'static str,
    /// Property names and values, in the order they are set.
    pub properties: Vec<(String, String)>,
}

impl EncoderDesc {
    /// The value of property `name`, if set.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A node of a linear pipeline: an element with properties, or a caps filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A GStreamer element.
    Element {
        /// The element factory name.
        factory: String,
        /// The element's name in the pipeline, if it needs one.
        name: Option<String>,
        /// Property names and values, in order.
        properties: Vec<(String, String)>,
    },
    /// A caps filter (the caps string is given).
    Caps(String),
}

impl Node {
    fn element(factory: &str, name: Option<&str>, props: &[(&str, String)]) -> Node {
        Node::Element {
            factory: factory.to_string(),
            name: name.map(str::to_string),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// The factory name of an element node (`None` for caps).
    pub fn factory(&self) -> Option<&str> {
        match self {
            Node::Element { factory, .. } => Some(factory),
            Node::Caps(_) => None,
        }
    }

    /// The value of property `name` of an element node.
    pub fn property(&self, name: &str) -> Option<&str> {
        match self {
            Node::Element { properties, .. } => properties
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            Node::Caps(_) => None,
        }
    }
}

/// The encoders of the ladder, best first per codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    /// NVIDIA NVENC HEVC (`nvh265enc`).
    NvH265,
    /// VA-API HEVC (`vah265enc`).
    VaH265,
    /// Software HEVC (`x265enc`).
    X265,
    /// NVIDIA NVENC H.264 (`nvh264enc`).
    NvH264,
    /// VA-API H.264 (`vah264enc`).
    VaH264,
    /// Software H.264 (`x264enc`).
    X264,
    /// Cisco's software H.264 (`openh264enc`).
    OpenH264,
}

/// HEVC: `nvh265enc` → `vah265enc` → `x265enc`.
pub const HEVC_LADDER: [EncoderKind; 3] =
    [EncoderKind::NvH265, EncoderKind::VaH265, EncoderKind::X265];
/// H.264: `nvh264enc` → `vah264enc` → `x264enc` → `openh264enc`.
pub const H264_LADDER: [EncoderKind; 4] = [
    EncoderKind::NvH264,
    EncoderKind::VaH264,
    EncoderKind::X264,
    EncoderKind::OpenH264,
];

/// x264's "infinite" keyframe interval (`X264_KEYINT_MAX_INFINITE` = 1<<30). x264enc's
/// `key-int-max` accepts up to `G_MAXINT`; x264 clips anything larger to this value anyway.
pub const X264_KEYINT_INFINITE: u32 = 1 << 30;
/// vah26xenc's largest `key-int-max` (1.22 has no infinite GOP there; 1024 frames ≈ 17 s @60).
pub const VA_KEYINT_MAX: u32 = 1024;

impl EncoderKind {
    /// The GStreamer element factory name.
    pub fn element(self) -> &'static str {
        match self {
            EncoderKind::NvH265 => "nvh265enc",
            EncoderKind::VaH265 => "vah265enc",
            EncoderKind::X265 => "x265enc",
            EncoderKind::NvH264 => "nvh264enc",
            EncoderKind::VaH264 => "vah264enc",
            EncoderKind::X264 => "x264enc",
            EncoderKind::OpenH264 => "openh264enc",
        }
    }

    /// The codec it produces.
    pub fn codec(self) -> Codec {
        match self {
            EncoderKind::NvH265 | EncoderKind::VaH265 | EncoderKind::X265 => Codec::Hevc,
            _ => Codec::H264,
        }
    }

    /// True for the NVIDIA NVENC encoders.
    pub fn is_nvenc(self) -> bool {
        matches!(self, EncoderKind::NvH264 | EncoderKind::NvH265)
    }

    /// A GPU encoder (NVENC, VA-API); the others encode on the CPU.
    pub fn is_hardware(self) -> bool {
        matches!(
            self,
            EncoderKind::NvH264 | EncoderKind::NvH265 | EncoderKind::VaH264 | EncoderKind::VaH265
        )
    }

    /// The parser that follows the encoder (`config-interval=-1`: SPS/PPS(/VPS) before every IDR).
    pub fn parser(self) -> &'static str {
        match self.codec() {
            Codec::H264 => "h264parse",
            Codec::Hevc => "h265parse",
        }
    }

    /// The raw format the encoder is fed in system memory.
    pub fn input_format(self) -> &'static str {
        match self {
            // x264enc would otherwise negotiate 4:4:4 (docs/testing.md); openh264 takes I420 only.
            EncoderKind::X264 | EncoderKind::OpenH264 | EncoderKind::X265 => "I420",
            _ => "NV12",
        }
    }

    /// The name of the bitrate property and how to express `kbps` in its unit.
    pub fn bitrate_property(self, kbps: u32) -> (&'static str, String) {
        match self {
            // openh264enc counts bit/s (docs/testing.md); the others kbit/s.
            EncoderKind::OpenH264 => ("bitrate", (kbps as u64 * 1000).to_string()),
            _ => ("bitrate", kbps.to_string()),
        }
    }

    /// The encoder element with our low-latency, infinite-GOP settings.
    pub fn describe(self, bitrate_kbps: u32) -> EncoderDesc {
        let (rate_name, rate) = self.bitrate_property(bitrate_kbps);
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut properties = match self {
            EncoderKind::NvH264 | EncoderKind::NvH265 => vec![
                p("preset", "p1"),
                p("tune", "ultra-low-latency"),
                p("rc-mode", "cbr"),
                p("bframes", "0"),
                // -1 = infinite ("Number of frames between intra frames (-1 = infinite)").
                p("gop-size", "-1"),
                p("zerolatency", "true"),
            ],
            EncoderKind::VaH264 | EncoderKind::VaH265 => vec![
                p("rate-control", "cbr"),
                p("b-frames", "0"),
                p("ref-frames", "1"),
                p("target-usage", "7"),
                p("key-int-max", &VA_KEYINT_MAX.to_string()),
            ],
            EncoderKind::X264 => vec![
                p("tune", "zerolatency"),
                p("speed-preset", "ultrafast"),
                p("pass", "cbr"),
                p("bframes", "0"),
                p("key-int-max", &X264_KEYINT_INFINITE.to_string()),
                p("byte-stream", "true"),
                p("aud", "true"),
                // No scene-cut IDRs: one IDR at the start, then only on request.
                p("option-string", "scenecut=0:repeat-headers=1"),
            ],
            EncoderKind::X265 => vec![
                p("tune", "zerolatency"),
                p("speed-preset", "ultrafast"),
                // x265enc's `key-int-max` stops at 0 (= x265's default 250); x265 itself takes
                // keyint=-1 as "infinite GOP", so it goes in the option string. `info=0`: x265's
                // ~2 KB "info" SEI (its whole option string) on every IDR pushes the IDR slice
                // out of the frame's first GameStream packet, where Moonlight looks for it
                // (docs/gamestream.md; Sunshine sets it for the same reason).
                p(
                    "option-string",
                    "keyint=-1:scenecut=0:open-gop=0:repeat-headers=1:bframes=0:info=0",
                ),
            ],
            EncoderKind::OpenH264 => vec![
                p("usage-type", "screen"),
                p("rate-control", "bitrate"),
                p("complexity", "low"),
                p("scene-change-detection", "false"),
                // openh264: gop-size 0 = only the first frame is an IDR.
                p("gop-size", "0"),
            ],
        };
        properties.push((rate_name.to_string(), rate));
        EncoderDesc {
            element: self.element(),
            properties,
        }
    }
}

/// The ladder for `codec`, best first.
pub fn ladder(codec: Codec) -> &'static [EncoderKind] {
    match codec {
        Codec::H264 => &H264_LADDER,
        Codec::Hevc => &HEVC_LADDER,
    }
}

/// The best encoder for `codec` whose element is in `available` (element factory names, as
/// `gst::ElementFactory::find` reports them).
pub fn choose_encoder(codec: Codec, available: &HashSet<String>) -> Option<EncoderKind> {
    ladder(codec)
        .iter()
        .copied()
        .find(|k| available.contains(k.element()))
}

/// The whole pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineDesc {
    /// Where the frames come from.
    pub source: SourceDesc,
    /// Resolution and frame rate to encode.
    pub mode: Mode,
    /// The encoder of the ladder to use.
    pub encoder: EncoderKind,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// appsink `max-buffers` (the callback writes into the ring at once, so this stays small).
    pub sink_max_buffers: u32,
}

impl PipelineDesc {
    /// A pipeline with the default appsink queue.
    pub fn new(source: SourceDesc, mode: Mode, encoder: EncoderKind, bitrate_kbps: u32) -> Self {
        PipelineDesc {
            source,
            mode,
            encoder,
            bitrate_kbps,
            sink_max_buffers: 4,
        }
    }

    /// True for the zero-copy GPU chain: PipeWire dmabuf → GL → NVENC.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.source, SourceDesc::PipeWire { dmabuf: true, .. }) && self.encoder.is_nvenc()
    }

    /// The encoder element with its settings.
    pub fn encoder_desc(&self) -> EncoderDesc {
        self.encoder.describe(self.bitrate_kbps)
    }

    /// The source element and the caps it is held to.
    fn source_nodes(&self) -> Vec<Node> {
        let m = &self.mode;
        let fr = m.framerate();
        match &self.source {
            SourceDesc::Test { pattern } => vec![
                Node::element(
                    "videotestsrc",
                    Some(names::SOURCE),
                    &test_source_props(pattern),
                ),
                // I420 straight from the source: the counter is drawn into this buffer.
                Node::Caps(format!(
                    "video/x-raw,format=I420,width={},height={},framerate={fr}",
                    m.width, m.height
                )),
            ],
            SourceDesc::PipeWire {
                fd,
                node_id,
                dmabuf,
            } => {
                // DMABuf first when the GPU chain can take it; glupload takes system memory too,
                // so a compositor that offers only shm still negotiates.
                let caps = if *dmabuf {
                    "video/x-raw(memory:DMABuf);video/x-raw".to_string()
                } else {
                    "video/x-raw".to_string()
                };
                let mut props = Vec::new();
                if let Some(fd) = fd {
                    props.push(("fd", fd.to_string()));
                }
                props.extend([
                    ("path", node_id.to_string()),
                    // Stamp buffers with the pipeline clock on arrival; never copy.
                    ("do-timestamp", "true".into()),
                    ("always-copy", "false".into()),
                ]);
                vec![
                    Node::element("pipewiresrc", Some(names::SOURCE), &props),
                    Node::Caps(caps),
                ]
            }
        }
    }

    /// Conversion from the source's output to what the encoder takes.
    fn convert_nodes(&self) -> Vec<Node> {
        let m = &self.mode;
        if self.is_zero_copy() {
            // dmabuf → EGL import into GL textures → colour conversion on the GPU → NVENC reads
            // the GL textures through CUDA-GL interop (nvh26xenc has GLMemory sink caps). In
            // 1.22 `cudaupload` accepts system memory only, so it would add a CPU copy.
            return vec![
                Node::element("glupload", None, &[]),
                Node::element("glcolorconvert", None, &[]),
                Node::Caps(format!(
                    "video/x-raw(memory:GLMemory),format=NV12,width={},height={}",
                    m.width, m.height
                )),
            ];
        }
        vec![
            Node::element("videoconvert", None, &[("n-threads", "2".into())]),
            Node::Caps(format!(
                "video/x-raw,format={},width={},height={}",
                self.encoder.input_format(),
                m.width,
                m.height
            )),
        ]
    }

    /// Every node of the pipeline, in order.
    pub fn nodes(&self) -> Vec<Node> {
        let mut v = self.source_nodes();
        // The capsfilter after the source is named so the worker can probe captured frames.
        if let Some(Node::Caps(c)) = v.pop() {
            v.push(Node::element(
                "capsfilter",
                Some(names::CAPTURED),
                &[("caps", c)],
            ));
        }
        // Decouple capture from encode: the source never blocks on the encoder; if the encoder
        // falls behind, the oldest waiting frame is dropped (and shows as a frame-index gap).
        v.push(Node::element(
            "queue",
            None,
            &[
                ("max-size-buffers", "2".into()),
                ("max-size-bytes", "0".into()),
                ("max-size-time", "0".into()),
                ("leaky", "downstream".into()),
            ],
        ));
        v.extend(self.convert_nodes());
        let enc = self.encoder_desc();
        v.push(Node::Element {
            factory: enc.element.to_string(),
            name: Some(names::ENCODER.to_string()),
            properties: enc.properties,
        });
        v.push(Node::element(
            self.encoder.parser(),
            Some(names::PARSER),
            &[("config-interval", "-1".into())],
        ));
        v.push(Node::Caps(match self.encoder.codec() {
            Codec::H264 => "video/x-h264,stream-format=byte-stream,alignment=au".into(),
            Codec::Hevc => "video/x-h265,stream-format=byte-stream,alignment=au".into(),
        }));
        v.push(Node::element(
            "appsink",
            Some(names::SINK),
            &[
                ("sync", "false".into()),
                ("max-buffers", self.sink_max_buffers.to_string()),
                ("drop", "false".into()),
                ("enable-last-sample", "false".into()),
            ],
        ));
        v
    }

    /// The gst-launch description of [`Self::nodes`].
    pub fn launch(&self) -> String {
        launch_string(&self.nodes())
    }
}

pub use punktfunk_proto::limits::{AUDIO_CHANNELS, AUDIO_RATE};
/// One Opus packet per this many milliseconds (also PipeWire's capture quantum, so a packet
/// never waits for a larger graph cycle).
pub const AUDIO_FRAME_MS: u32 = 5;
/// The Opus bitrate (CBR).
pub const AUDIO_BITRATE: u32 = 128_000;
/// The test tone's frequency (audiotestsrc's default sine).
pub const TEST_TONE_HZ: u32 = 440;

/// Where the stream's sound comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioSourceDesc {
    /// A [`TEST_TONE_HZ`] sine: the test source's sound, and a PipeWire source's when no sink
    /// was named.
    TestTone,
    /// What is played into an `Audio/Sink` node (its monitor), on the same PipeWire remote as
    /// the video: a compositor output's sink, which its apps play into.
    PipeWireSink {
        /// The raw remote fd the video's pipewiresrc uses too (pipewiresrc shares one core per
        /// fd inside the process); `None`: the default PipeWire daemon.
        fd: Option<i32>,
        /// The sink's `node.name`.
        sink: String,
    },
}

impl AudioSourceDesc {
    /// The audio pipeline: source → Opus (CBR, [`AUDIO_FRAME_MS`] frames) → the appsink.
    pub fn nodes(&self) -> Vec<Node> {
        let raw = format!(
            "audio/x-raw,format=S16LE,layout=interleaved,rate={AUDIO_RATE},channels={AUDIO_CHANNELS}"
        );
        let mut v = match self {
            AudioSourceDesc::TestTone => vec![Node::element(
                "audiotestsrc",
                Some(names::SOURCE),
                &[
                    ("is-live", "true".into()),
                    ("wave", "sine".into()),
                    ("freq", TEST_TONE_HZ.to_string()),
                ],
            )],
            AudioSourceDesc::PipeWireSink { fd, sink } => {
                let mut props = Vec::new();
                if let Some(fd) = fd {
                    props.push(("fd", fd.to_string()));
                }
                let quantum = AUDIO_RATE * AUDIO_FRAME_MS / 1000;
                props.extend([
                    ("target-object", sink.clone()),
                    // The sink's monitor, in small graph cycles. pipewiresrc does not stamp
                    // audio buffers itself.
                    (
                        "stream-properties",
                        format!(
                            "props,stream.capture.sink=true,\
                             node.latency=(string){quantum}/{AUDIO_RATE}"
                        ),
                    ),
                    ("do-timestamp", "true".into()),
                ]);
                vec![Node::element("pipewiresrc", Some(names::SOURCE), &props)]
            }
        };
        // pipewiresrc needs caps with a format after it to negotiate at all.
        v.push(Node::Caps(raw));
        v.push(Node::element("audioconvert", None, &[]));
        v.push(Node::element(
            "opusenc",
            Some(names::ENCODER),
            &[
                ("bitrate-type", "cbr".into()),
                ("frame-size", AUDIO_FRAME_MS.to_string()),
                ("bitrate", AUDIO_BITRATE.to_string()),
                ("audio-type", "restricted-lowdelay".into()),
            ],
        ));
        v.push(Node::element(
            "appsink",
            Some(names::SINK),
            &[
                ("sync", "false".into()),
                ("max-buffers", "8".into()),
                ("drop", "false".into()),
                ("enable-last-sample", "false".into()),
            ],
        ));
        v
    }

    /// The gst-launch description of [`Self::nodes`].
    pub fn launch(&self) -> String {
        launch_string(&self.nodes())
    }
}

/// Quotes a property value for gst-launch syntax when it needs it.
fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:+".contains(c));
    // (`;` separates caps structures and must be quoted.)
    if plain {
        v.to_string()
    } else {
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

/// `a k=v ! caps ! b name=x …`
pub fn launch_string(nodes: &[Node]) -> String {
    let mut out = String::new();
    for (i, n) in nodes.iter().enumerate() {
        if i > 0 {
            out.push_str(" ! ");
        }
        match n {
            Node::Element {
                factory,
                name,
                properties,
            } => {
                out.push_str(factory);
                if let Some(name) = name {
                    let _ = write!(out, " name={name}");
                }
                for (k, v) in properties {
                    let _ = write!(out, " {k}={}", quote(v));
                }
            }
            Node::Caps(c) => out.push_str(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_captures_the_named_sinks_monitor_on_the_videos_remote() {
        let tone = AudioSourceDesc::TestTone.launch();
        assert_eq!(
            tone,
            "audiotestsrc name=src is-live=true wave=sine freq=440 ! \
             audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2 ! audioconvert ! \
             opusenc name=enc bitrate-type=cbr frame-size=5 bitrate=128000 \
             audio-type=restricted-lowdelay ! \
             appsink name=sink sync=false max-buffers=8 drop=false enable-last-sample=false"
        );
        let sink = AudioSourceDesc::PipeWireSink {
            fd: Some(7),
            sink: "punktfunk-output".into(),
        };
        let nodes = sink.nodes();
        assert_eq!(nodes[0].factory(), Some("pipewiresrc"));
        assert_eq!(nodes[0].property("fd"), Some("7"));
        assert_eq!(nodes[0].property("target-object"), Some("punktfunk-output"));
        assert_eq!(
            nodes[0].property("stream-properties"),
            Some("props,stream.capture.sink=true,node.latency=(string)240/48000")
        );
        assert!(matches!(&nodes[1], Node::Caps(c) if c.contains("format=S16LE")));
        assert!(sink.launch().starts_with(
            "pipewiresrc name=src fd=7 target-object=punktfunk-output \
             stream-properties=\"props,stream.capture.sink=true,node.latency=(string)240/48000\" \
             do-timestamp=true ! audio/x-raw"
        ));
        // Both pipelines parse.
        use gstreamer as gst;
        gst::init().expect("gst");
        for launch in [tone, sink.launch()] {
            gst::parse::launch(&launch).unwrap_or_else(|e| panic!("{launch}: {e}"));
        }
    }

    #[test]
    fn contract_codecs_convert_in_one_place() {
        use punktfunk_proto::common::Codec as P;
        for c in [Codec::H264, Codec::Hevc] {
            assert_eq!(Codec::try_from(P::from(c)), Ok(c));
        }
        assert_eq!(Codec::try_from(P::Av1), Err(P::Av1));
        assert_eq!(Codec::try_from(P::Unspecified), Err(P::Unspecified));
        assert_eq!(
            MAX_MODE.refresh_mhz,
            punktfunk_proto::limits::MAX_REFRESH_MHZ
        );
        assert_eq!(MAX_MODE.validate(), Ok(()));
    }

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn props(nodes: &[Node], factory: &str) -> Vec<(String, String)> {
        nodes
            .iter()
            .find_map(|n| match n {
                Node::Element {
                    factory: f,
                    properties,
                    ..
                } if f == factory => Some(properties.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {factory} in {nodes:?}"))
    }

    fn pv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn factories(nodes: &[Node]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| match n {
                Node::Element { factory, .. } => factory.clone(),
                Node::Caps(c) => format!("[{c}]"),
            })
            .collect()
    }

    const M720: Mode = mode(1280, 720, 60);

    #[test]
    fn ladder_picks_best_available() {
        let all = set(&[
            "nvh265enc",
            "vah265enc",
            "x265enc",
            "nvh264enc",
            "vah264enc",
            "x264enc",
            "openh264enc",
        ]);
        assert_eq!(choose_encoder(Codec::Hevc, &all), Some(EncoderKind::NvH265));
        assert_eq!(choose_encoder(Codec::H264, &all), Some(EncoderKind::NvH264));
        let ci = set(&["x264enc", "x265enc", "openh264enc"]);
        assert_eq!(choose_encoder(Codec::Hevc, &ci), Some(EncoderKind::X265));
        assert_eq!(choose_encoder(Codec::H264, &ci), Some(EncoderKind::X264));
        let va = set(&["vah264enc", "vah265enc", "x264enc"]);
        assert_eq!(choose_encoder(Codec::Hevc, &va), Some(EncoderKind::VaH265));
        assert_eq!(choose_encoder(Codec::H264, &va), Some(EncoderKind::VaH264));
        assert_eq!(
            choose_encoder(Codec::H264, &set(&["openh264enc"])),
            Some(EncoderKind::OpenH264)
        );
        assert_eq!(choose_encoder(Codec::Hevc, &set(&["x264enc"])), None);
        assert_eq!(choose_encoder(Codec::H264, &HashSet::new()), None);
    }

    #[test]
    fn gpu_rungs_are_hardware_cpu_rungs_are_not() {
        let hardware: Vec<EncoderKind> = H264_LADDER
            .iter()
            .chain(&HEVC_LADDER)
            .copied()
            .filter(|k| k.is_hardware())
            .collect();
        assert_eq!(
            hardware,
            [
                EncoderKind::NvH264,
                EncoderKind::VaH264,
                EncoderKind::NvH265,
                EncoderKind::VaH265
            ]
        );
    }

    #[test]
    fn game_pattern_is_an_animated_zone_plate_and_others_pass_through() {
        let props_of = |pattern: &str| {
            let d = PipelineDesc::new(
                SourceDesc::Test {
                    pattern: pattern.into(),
                },
                M720,
                EncoderKind::X264,
                20_000,
            );
            props(&d.nodes(), "videotestsrc")
        };
        assert_eq!(
            props_of(GAME_PATTERN),
            pv(&[
                ("is-live", "true"),
                ("pattern", "zone-plate"),
                ("kx2", "12"),
                ("ky2", "12"),
                ("kx", "2"),
                ("kt", "2"),
                ("kxt", "1"),
            ])
        );
        assert_eq!(
            props_of(BALL_PATTERN),
            pv(&[("is-live", "true"), ("pattern", "ball")])
        );
    }

    #[test]
    fn x264_rung() {
        let d = PipelineDesc::new(
            SourceDesc::Test {
                pattern: "ball".into(),
            },
            M720,
            EncoderKind::X264,
            20_000,
        );
        let n = d.nodes();
        assert_eq!(
            factories(&n),
            [
                "videotestsrc",
                "capsfilter",
                "queue",
                "videoconvert",
                "[video/x-raw,format=I420,width=1280,height=720]",
                "x264enc",
                "h264parse",
                "[video/x-h264,stream-format=byte-stream,alignment=au]",
                "appsink"
            ]
        );
        assert_eq!(
            props(&n, "x264enc"),
            pv(&[
                ("tune", "zerolatency"),
                ("speed-preset", "ultrafast"),
                ("pass", "cbr"),
                ("bframes", "0"),
                ("key-int-max", "1073741824"),
                ("byte-stream", "true"),
                ("aud", "true"),
                ("option-string", "scenecut=0:repeat-headers=1"),
                ("bitrate", "20000"),
            ])
        );
        assert_eq!(props(&n, "videoconvert"), pv(&[("n-threads", "2")]));
        assert_eq!(props(&n, "h264parse"), pv(&[("config-interval", "-1")]));
        assert_eq!(
            props(&n, "appsink"),
            pv(&[
                ("sync", "false"),
                ("max-buffers", "4"),
                ("drop", "false"),
                ("enable-last-sample", "false")
            ])
        );
        assert_eq!(
            d.launch(),
            "videotestsrc name=src is-live=true pattern=ball ! capsfilter name=captured \
             caps=\"video/x-raw,format=I420,width=1280,height=720,framerate=60/1\" ! queue \
             max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream ! videoconvert \
             n-threads=2 ! video/x-raw,format=I420,width=1280,height=720 ! x264enc name=enc \
             tune=zerolatency speed-preset=ultrafast pass=cbr bframes=0 key-int-max=1073741824 \
             byte-stream=true aud=true option-string=\"scenecut=0:repeat-headers=1\" \
             bitrate=20000 ! h264parse name=parse config-interval=-1 ! \
             video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false \
             max-buffers=4 drop=false enable-last-sample=false"
        );
    }

    #[test]
    fn openh264_rung_counts_bits_per_second() {
        let e = EncoderKind::OpenH264.describe(5_000);
        assert_eq!(e.element, "openh264enc");
        assert_eq!(
            e.properties,
            pv(&[
                ("usage-type", "screen"),
                ("rate-control", "bitrate"),
                ("complexity", "low"),
                ("scene-change-detection", "false"),
                ("gop-size", "0"),
                ("bitrate", "5000000"),
            ])
        );
        assert_eq!(EncoderKind::OpenH264.input_format(), "I420");
    }

    #[test]
    fn x265_rung() {
        let d = PipelineDesc::new(
            SourceDesc::Test {
                pattern: "ball".into(),
            },
            M720,
            EncoderKind::X265,
            8_000,
        );
        let n = d.nodes();
        assert_eq!(
            props(&n, "x265enc"),
            pv(&[
                ("tune", "zerolatency"),
                ("speed-preset", "ultrafast"),
                (
                    "option-string",
                    "keyint=-1:scenecut=0:open-gop=0:repeat-headers=1:bframes=0:info=0"
                ),
                ("bitrate", "8000"),
            ])
        );
        assert_eq!(props(&n, "h265parse"), pv(&[("config-interval", "-1")]));
        assert!(
            d.launch()
                .contains("video/x-h265,stream-format=byte-stream,alignment=au")
        );
    }

    #[test]
    fn va_rungs() {
        for (k, el) in [
            (EncoderKind::VaH264, "vah264enc"),
            (EncoderKind::VaH265, "vah265enc"),
        ] {
            let e = k.describe(10_000);
            assert_eq!(e.element, el);
            assert_eq!(
                e.properties,
                pv(&[
                    ("rate-control", "cbr"),
                    ("b-frames", "0"),
                    ("ref-frames", "1"),
                    ("target-usage", "7"),
                    ("key-int-max", "1024"),
                    ("bitrate", "10000"),
                ])
            );
            assert_eq!(k.input_format(), "NV12");
        }
    }

    #[test]
    fn nvenc_rungs_system_memory() {
        for (k, el, parser) in [
            (EncoderKind::NvH264, "nvh264enc", "h264parse"),
            (EncoderKind::NvH265, "nvh265enc", "h265parse"),
        ] {
            let d = PipelineDesc::new(
                SourceDesc::Test {
                    pattern: "ball".into(),
                },
                M720,
                k,
                20_000,
            );
            let n = d.nodes();
            assert_eq!(
                props(&n, el),
                pv(&[
                    ("preset", "p1"),
                    ("tune", "ultra-low-latency"),
                    ("rc-mode", "cbr"),
                    ("bframes", "0"),
                    ("gop-size", "-1"),
                    ("zerolatency", "true"),
                    ("bitrate", "20000"),
                ])
            );
            assert!(factories(&n).contains(&parser.to_string()));
            assert!(
                factories(&n).contains(&"[video/x-raw,format=NV12,width=1280,height=720]".into())
            );
            assert!(!d.is_zero_copy());
        }
    }

    #[test]
    fn nvidia_chain_description_no_gpu() {
        let d = PipelineDesc::new(
            SourceDesc::PipeWire {
                fd: Some(7),
                node_id: 42,
                dmabuf: true,
            },
            mode(2560, 1440, 120),
            EncoderKind::NvH265,
            50_000,
        );
        assert!(d.is_zero_copy());
        let n = d.nodes();
        assert_eq!(
            factories(&n),
            [
                "pipewiresrc",
                "capsfilter",
                "queue",
                "glupload",
                "glcolorconvert",
                "[video/x-raw(memory:GLMemory),format=NV12,width=2560,height=1440]",
                "nvh265enc",
                "h265parse",
                "[video/x-h265,stream-format=byte-stream,alignment=au]",
                "appsink"
            ]
        );
        assert_eq!(
            props(&n, "pipewiresrc"),
            pv(&[
                ("fd", "7"),
                ("path", "42"),
                ("do-timestamp", "true"),
                ("always-copy", "false")
            ])
        );
        assert_eq!(
            props(&n, "capsfilter"),
            pv(&[("caps", "video/x-raw(memory:DMABuf);video/x-raw")])
        );
        assert_eq!(
            props(&n, "nvh265enc"),
            pv(&[
                ("preset", "p1"),
                ("tune", "ultra-low-latency"),
                ("rc-mode", "cbr"),
                ("bframes", "0"),
                ("gop-size", "-1"),
                ("zerolatency", "true"),
                ("bitrate", "50000"),
            ])
        );
        assert_eq!(props(&n, "h265parse"), pv(&[("config-interval", "-1")]));
        // No CPU conversion anywhere in the zero-copy chain.
        assert!(!factories(&n).iter().any(|f| f == "videoconvert"));
        assert!(d.launch().starts_with(
            "pipewiresrc name=src fd=7 path=42 do-timestamp=true always-copy=false ! \
             capsfilter name=captured caps=\"video/x-raw(memory:DMABuf);video/x-raw\" ! queue"
        ));
    }

    #[test]
    fn pipewire_system_memory_uses_videoconvert() {
        let d = PipelineDesc::new(
            SourceDesc::PipeWire {
                fd: None,
                node_id: 9,
                dmabuf: false,
            },
            M720,
            EncoderKind::X264,
            10_000,
        );
        assert!(!d.is_zero_copy());
        let n = d.nodes();
        assert_eq!(props(&n, "capsfilter"), pv(&[("caps", "video/x-raw")]));
        assert_eq!(
            props(&n, "pipewiresrc"),
            pv(&[
                ("path", "9"),
                ("do-timestamp", "true"),
                ("always-copy", "false")
            ])
        );
        assert!(factories(&n).contains(&"videoconvert".into()));
    }

    #[test]
    fn modes() {
        assert_eq!(mode(1280, 720, 60).framerate(), "60/1");
        let ntsc = Mode {
            width: 1920,
            height: 1080,
            refresh_mhz: 59_940,
        };
        assert_eq!(ntsc.framerate(), "60000/1001");
        assert_eq!(ntsc.label(), "1920x1080@59.94");
        assert_eq!(
            Mode {
                width: 8,
                height: 8,
                refresh_mhz: 30_500
            }
            .framerate(),
            "61/2"
        );
        assert!(mode(1280, 720, 60).validate().is_ok());
        assert!(mode(1281, 720, 60).validate().is_err());
        assert!(mode(0, 720, 60).validate().is_err());
        assert!(mode(1280, 720, 0).validate().is_err());
        assert!(mode(100_000, 720, 60).validate().is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote(""), "\"\"");
    }
}
