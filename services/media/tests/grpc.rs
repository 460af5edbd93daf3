//! The real `punktfunk-media` binary over its Unix socket: StartStream → redeem the ring ticket
//! on the fd channel → read AUs (IDR first, increasing frame indices) → Stats, Reconfigure,
//! RequestKeyframe, errors for unknown ids and bad modes → StopStream.

mod common;

use std::os::fd::OwnedFd;
use std::time::Duration;

use common::read_n;
use punktfunk_common::fdchannel;
use punktfunk_media::description::Codec;
use punktfunk_proto::common::{Codec as PCodec, HealthRequest, Mode};
use punktfunk_proto::media::*;
use punktfunk_ring::{Consumer, RecordFlags, RingFds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stream_over_grpc_and_read_the_ring() {
    let (daemon, mut client) = common::Daemon::start(&[]).await;
    let health = client.health(HealthRequest {}).await.expect("health");
    assert_eq!(health.get_ref().status, "idle: no streams");
    let fds_path = daemon.fds_path.clone();

    // Bad requests.
    let bad = client
        .start_stream(StartStreamRequest {
            source: SourceKind::Test as i32,
            mode: Some(Mode {
                width: 1281,
                height: 720,
                refresh_mhz: 60_000,
            }),
            codec: PCodec::H264 as i32,
            ..Default::default()
        })
        .await
        .expect_err("odd width");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let nf = client
        .request_keyframe(RequestKeyframeRequest {
            stream_id: "nope".into(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(nf.code(), tonic::Code::NotFound);
    assert!(nf.message().contains("nope"), "{}", nf.message());

    let reply = client
        .start_stream(StartStreamRequest {
            source: SourceKind::Test as i32,
            mode: Some(Mode {
                width: 1280,
                height: 720,
                refresh_mhz: 60_000,
            }),
            codec: PCodec::H264 as i32,
            bitrate_kbps: 8_000,
            audio: true,
            ..Default::default()
        })
        .await
        .expect("StartStream")
        .into_inner();
    // No GPU on CI: the ladder lands on x264enc (a VA/NVENC machine would pick its encoder).
    assert!(
        ["nvh264enc", "vah264enc", "x264enc", "openh264enc"].contains(&reply.encoder.as_str()),
        "{}",
        reply.encoder
    );
    let ticket = reply.rings.expect("rings ticket");
    assert_eq!(
        ticket.fd_names,
        [
            "video-ring-memfd",
            "video-ring-doorbell",
            "audio-ring-memfd",
            "audio-ring-doorbell"
        ]
    );
    let status = client
        .health(HealthRequest {})
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        status,
        format!("encoding 1280x720@60 H.264 {} → ring", reply.encoder)
    );

    let fds: Vec<OwnedFd> =
        tokio::task::spawn_blocking(move || fdchannel::redeem(&fds_path, &ticket))
            .await
            .expect("join")
            .expect("redeem");
    assert_eq!(fds.len(), 4);
    let mut it = fds.into_iter();
    let (mut video, mut audio) = {
        let mut next = || it.next().expect("fd");
        let v = RingFds {
            memfd: next(),
            doorbell: next(),
        };
        let a = RingFds {
            memfd: next(),
            doorbell: next(),
        };
        (
            Consumer::attach(v).expect("attach video"),
            Consumer::attach(a).expect("attach audio"),
        )
    };
    let (aus, audio_packets) = tokio::task::spawn_blocking(move || {
        let v = read_n(&mut video, 60, Duration::from_secs(20));
        let a = read_n(&mut audio, 50, Duration::from_secs(20));
        (v, a)
    })
    .await
    .expect("join");
    assert!(aus[0].idr(Codec::H264), "IDR first");
    assert!(aus[0].flags.contains(RecordFlags::KEYFRAME));
    for w in aus.windows(2) {
        assert!(w[1].frame > w[0].frame);
        assert!(!w[1].flags.contains(RecordFlags::KEYFRAME));
    }
    for p in &audio_packets {
        assert!(p.flags.contains(RecordFlags::AUDIO));
        assert!(!p.payload.is_empty());
    }

    let id = reply.stream_id.clone();
    client
        .request_keyframe(RequestKeyframeRequest {
            stream_id: id.clone(),
        })
        .await
        .expect("RequestKeyframe");
    let r = client
        .reconfigure(ReconfigureRequest {
            stream_id: id.clone(),
            bitrate_kbps: 4_000,
            mode: None,
        })
        .await
        .expect("Reconfigure")
        .into_inner();
    assert!(!r.restarted);
    let bad_mode = client
        .reconfigure(ReconfigureRequest {
            stream_id: id.clone(),
            bitrate_kbps: 0,
            mode: Some(Mode {
                width: 7,
                height: 720,
                refresh_mhz: 60_000,
            }),
        })
        .await
        .expect_err("bad mode");
    assert_eq!(bad_mode.code(), tonic::Code::InvalidArgument);
    let stats = client
        .stats(StatsRequest {
            stream_id: id.clone(),
        })
        .await
        .expect("Stats")
        .into_inner();
    assert!(stats.fps_out > 0.0, "{stats:?}");
    client
        .stop_stream(StopStreamRequest {
            stream_id: id.clone(),
        })
        .await
        .expect("StopStream");
    let gone = client
        .stats(StatsRequest { stream_id: id })
        .await
        .expect_err("stopped");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let status = client
        .health(HealthRequest {})
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, "idle: no streams");
}
