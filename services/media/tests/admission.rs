//! The real `punktfunk-media` binary: Capabilities reports the ladder and the encode budget, and
//! StartStream / Reconfigure are admitted against the software pixel budget (issue #9,
//! defect 6). The budget is made tiny through the environment (1 Mpixel/s per CPU) and the test
//! modes are sized from what Capabilities reports, so the test does not depend on the CPU count.

mod common;

use common::{Daemon, Drain};
use punktfunk_media::description::{MAX_REFRESH_MHZ, MIN_REFRESH_MHZ};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::media::media_client::MediaClient;
use punktfunk_proto::media::*;
use tonic::transport::Channel;

const W: u32 = 320;
const H: u32 = 240;

/// A 320x240 mode at whole Hz taking at most `share` of `budget` pixels per second.
fn mode_taking(budget: u64, share: f64) -> Mode {
    let hz = (budget as f64 * share / f64::from(W * H)) as u32;
    let refresh_mhz = hz * 1000;
    assert!(
        (MIN_REFRESH_MHZ..=MAX_REFRESH_MHZ).contains(&refresh_mhz),
        "{refresh_mhz} mHz: the test needs another size on this machine"
    );
    Mode {
        width: W,
        height: H,
        refresh_mhz,
    }
}

fn pixel_rate(m: &Mode) -> u64 {
    u64::from(m.width) * u64::from(m.height) * u64::from(m.refresh_mhz) / 1000
}

async fn capabilities(client: &mut MediaClient<Channel>) -> CapabilitiesReply {
    client
        .capabilities(CapabilitiesRequest {})
        .await
        .expect("Capabilities")
        .into_inner()
}

/// Starts a test-source H.264 stream at `mode` and keeps its rings drained.
async fn start(
    daemon: &Daemon,
    client: &mut MediaClient<Channel>,
    mode: Mode,
) -> Result<(String, Drain), tonic::Status> {
    let reply = client
        .start_stream(StartStreamRequest {
            source: SourceKind::Test as i32,
            mode: Some(mode),
            codec: Codec::H264 as i32,
            bitrate_kbps: 500,
            ..Default::default()
        })
        .await?
        .into_inner();
    let (video, _) = daemon.redeem(reply.rings.expect("ticket")).await;
    Ok((reply.stream_id, Drain::start(vec![video])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_and_the_software_budget() {
    let (daemon, mut client) =
        Daemon::start(&[("PUNKTFUNK_MEDIA_SOFTWARE_MPIXELS_PER_CPU", "1")]).await;
    let caps = capabilities(&mut client).await;
    let codecs: Vec<i32> = caps.codecs.iter().map(|c| c.codec).collect();
    assert_eq!(
        codecs,
        [Codec::H264 as i32, Codec::Hevc as i32, Codec::Av1 as i32]
    );
    let h264 = &caps.codecs[0];
    assert!(h264.available, "{caps:?}");
    assert!(
        ["nvh264enc", "vah264enc", "x264enc", "openh264enc"].contains(&h264.encoder.as_str()),
        "{caps:?}"
    );
    assert_eq!(
        h264.hardware,
        ["nvh264enc", "vah264enc"].contains(&h264.encoder.as_str())
    );
    let av1 = &caps.codecs[2];
    assert!(!av1.available && !av1.hardware && av1.encoder.is_empty());
    assert_eq!(caps.max_streams, 4);
    assert_eq!(caps.streams, 0);
    assert!(caps.cpus >= 1);
    let budget = caps.software_budget_pixels_per_second;
    assert_eq!(budget, u64::from(caps.cpus) * 1_000_000);
    assert_eq!(caps.software_in_use_pixels_per_second, 0);
    if h264.hardware {
        eprintln!("H.264 encodes on the GPU here: no software budget to test");
        return;
    }

    // 60 % of the budget fits; another 60 % does not, and the refusal says why.
    let big = mode_taking(budget, 0.6);
    let (a, drain_a) = start(&daemon, &mut client, big)
        .await
        .expect("first stream");
    let caps = capabilities(&mut client).await;
    assert_eq!(caps.streams, 1);
    assert_eq!(caps.software_in_use_pixels_per_second, pixel_rate(&big));
    let refused = start(&daemon, &mut client, big)
        .await
        .expect_err("over the budget");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let msg = refused.message();
    assert!(
        msg.starts_with("the software encoder budget is ")
            && msg.contains(" Mpixel/s and 1 stream uses ")
            && msg.contains(&format!("this 320x240@{} needs ", big.refresh_mhz / 1000))
            && msg.ends_with("lower the mode or stop a stream"),
        "{msg}"
    );
    assert_eq!(capabilities(&mut client).await.streams, 1, "nothing leaked");

    // 30 % fits next to it; growing that one to 60 % is refused, to 35 % is not.
    let (b, _drain_b) = start(&daemon, &mut client, mode_taking(budget, 0.3))
        .await
        .expect("a smaller stream fits");
    let grow = client
        .reconfigure(ReconfigureRequest {
            stream_id: b.clone(),
            bitrate_kbps: 0,
            mode: Some(big),
        })
        .await
        .expect_err("a bigger mode over the budget");
    assert_eq!(grow.code(), tonic::Code::ResourceExhausted, "{grow:?}");
    assert!(
        grow.message().contains("software encoder budget"),
        "{grow:?}"
    );
    let r = client
        .reconfigure(ReconfigureRequest {
            stream_id: b.clone(),
            bitrate_kbps: 0,
            mode: Some(mode_taking(budget, 0.35)),
        })
        .await
        .expect("a bigger mode within the budget")
        .into_inner();
    assert!(r.restarted);
    let caps = capabilities(&mut client).await;
    assert_eq!(
        caps.software_in_use_pixels_per_second,
        pixel_rate(&big) + pixel_rate(&mode_taking(budget, 0.35))
    );

    // Stopping the first stream frees its share.
    drop(drain_a);
    client
        .stop_stream(StopStreamRequest { stream_id: a })
        .await
        .expect("StopStream");
    let (_c, _drain_c) = start(&daemon, &mut client, big)
        .await
        .expect("fits once the first stream stopped");
    let caps = capabilities(&mut client).await;
    assert_eq!(caps.streams, 2);
}
