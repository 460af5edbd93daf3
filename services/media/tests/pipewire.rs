//! The PipeWire source against a real PipeWire daemon (docs/testing.md "PipeWire capture without a
//! compositor"): a private pipewire + wireplumber under dbus-run-session, a synthetic
//! Video/Source node from `pipewiresink mode=provide`, and our pipeline connecting to it through
//! a remote fd (as session would hand one over) — frames must reach the encoder and the ring.
//! System-memory caps only: no GPU here, so the dmabuf branch is covered by the description
//! tests. The graph also has an Audio/Sink with a 660 Hz tone playing into it, as a
//! compositor output's sink has its apps' sound: the stream's sound is its monitor, captured on
//! the same remote fd as the video.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::read_n;
use punktfunk_media::description::{Codec, EncoderKind, mode};
use punktfunk_media::worker::{EncodeWorker, Source, StreamConfig};
use punktfunk_ring::Consumer;

const NODE_NAME: &str = "pf-test-screen";
const SINK_NAME: &str = "pf-test-sink";

/// The process group running dbus-run-session, pipewire, wireplumber and the source node.
struct Graph(Child);

impl Drop for Graph {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
        let _ = self.0.wait();
    }
}

fn find_node(runtime: &Path, name: &str) -> Option<u32> {
    let out = Command::new("pw-cli")
        .args(["ls", "Node"])
        .env("XDG_RUNTIME_DIR", runtime)
        .env("PIPEWIRE_RUNTIME_DIR", runtime)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut id = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("id ") {
            id = rest.split(',').next().and_then(|n| n.trim().parse().ok());
        }
        if l.starts_with("node.name") && l.contains(&format!("\"{name}\"")) {
            return id;
        }
    }
    None
}

#[test]
fn pipewire_node_frames_and_the_sinks_sound_reach_the_encoders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().to_path_buf();
    rustix::fs::chmod(&runtime, rustix::fs::Mode::from_raw_mode(0o700)).expect("chmod");
    let script = format!(
        "pipewire & sleep 0.5; wireplumber & sleep 0.5; \
         gst-launch-1.0 -q videotestsrc is-live=true pattern=ball ! \
         video/x-raw,format=I420,width=640,height=480,framerate=30/1 ! \
         pipewiresink mode=provide \
         stream-properties=\"props,media.class=Video/Source,node.name={NODE_NAME}\" & \
         pw-cli create-node adapter '{{ factory.name=support.null-audio-sink \
         node.name={SINK_NAME} media.class=Audio/Sink audio.position=[FL FR] \
         object.linger=true }}'; \
         gst-launch-1.0 -q audiotestsrc is-live=true freq=660 volume=0.5 ! audioconvert ! \
         pipewiresink target-object={SINK_NAME} & wait"
    );
    let _graph = Graph(
        Command::new("dbus-run-session")
            .args(["--", "sh", "-c", &script])
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("PIPEWIRE_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("dbus-run-session (apt: dbus pipewire wireplumber gstreamer1.0-pipewire)"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        // The sink too: the audio stream links to it by name when it starts.
        if let (Some(id), Some(_)) = (
            find_node(&runtime, NODE_NAME),
            find_node(&runtime, SINK_NAME),
        ) {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the synthetic source node or the sink did not appear"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The remote fd, as the session daemon would pass it (a connection to the PipeWire socket).
    let remote: OwnedFd = UnixStream::connect(runtime.join("pipewire-0"))
        .expect("connect to pipewire-0")
        .into();
    let (worker, fds) = EncodeWorker::start(
        StreamConfig {
            source: Source::PipeWire {
                fd: Some(remote),
                node_id: node,
                dmabuf: false,
                audio_sink: Some(SINK_NAME.into()),
            },
            mode: mode(640, 480, 30),
            codec: Codec::H264,
            bitrate_kbps: 4_000,
            encoder: Some(EncoderKind::X264),
        },
        true,
    )
    .expect("start the pipewire pipeline");
    let mut consumer = Consumer::attach(fds.video).expect("attach");
    let aus = read_n(&mut consumer, 30, Duration::from_secs(30));
    assert!(aus[0].idr(Codec::H264), "IDR first");
    for w in aus.windows(2) {
        assert!(w[1].frame > w[0].frame);
    }
    let s = worker.stats();
    assert!(s.frames_captured >= 30, "{s:?}");
    assert_eq!(s.last_error, None);
    assert_the_sinks_tone_arrives(fds.audio.expect("an audio ring"));
    worker.stop();
}

/// Opus packets of the sink's monitor, loud (not the silence of a monitor nothing plays into):
/// the tone's RMS at volume 0.5 is 0.35.
fn assert_the_sinks_tone_arrives(ring: punktfunk_ring::RingFds) {
    let mut audio = Consumer::attach(ring).expect("attach audio");
    let packets = read_n(&mut audio, 400, Duration::from_secs(30));
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Stereo).expect("decoder");
    let mut pcm = vec![0i16; 5760 * 2];
    // The last second: linking the monitor to the playing stream takes a moment.
    let (mut squares, mut n) = (0.0f64, 0usize);
    for (i, p) in packets.iter().enumerate() {
        let per_channel = dec
            .decode(&p.payload, &mut pcm, false)
            .expect("an Opus packet");
        if i >= packets.len() - 200 {
            for &s in &pcm[..per_channel * 2] {
                squares += (f64::from(s) / 32768.0).powi(2);
            }
            n += per_channel * 2;
        }
    }
    let rms = (squares / n.max(1) as f64).sqrt();
    assert!(
        (0.2..0.5).contains(&rms),
        "the sink's 660 Hz tone at half volume has an RMS of 0.35, got {rms}"
    );
}
