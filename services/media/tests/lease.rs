//! The real `punktfunk-media` binary reaps streams nobody consumes (issue #9, defect 2): a
//! consumer that keeps reading keeps its stream past the lease; once it goes away the stream is
//! stopped within 5 s (Stats → NOT_FOUND, status "idle: no streams", a WARN line naming it);
//! a stream whose ring ticket is never redeemed is reaped too.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Drain, read_n};
use punktfunk_media::lease::LEASE;
use punktfunk_proto::common::{Codec, HealthRequest, Mode};
use punktfunk_proto::media::media_client::MediaClient;
use punktfunk_proto::media::*;
use tonic::transport::Channel;

fn small_stream(audio: bool) -> StartStreamRequest {
    StartStreamRequest {
        source: SourceKind::Test as i32,
        mode: Some(Mode {
            width: 640,
            height: 360,
            refresh_mhz: 30_000,
        }),
        codec: Codec::H264 as i32,
        bitrate_kbps: 2_000,
        audio,
        ..Default::default()
    }
}

async fn status(client: &mut MediaClient<Channel>) -> String {
    client
        .health(HealthRequest {})
        .await
        .expect("health")
        .into_inner()
        .status
}

/// Polls until stream `id` is gone (Stats NOT_FOUND and the status idle) or `within` passes;
/// returns how long it took.
async fn wait_reaped(
    daemon: &Daemon,
    client: &mut MediaClient<Channel>,
    id: &str,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let stats = client
            .stats(StatsRequest {
                stream_id: id.to_string(),
            })
            .await;
        if let Err(e) = &stats {
            assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
            assert_eq!(status(client).await, "idle: no streams");
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "stream {id} still there {within:?} after its consumer left; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_consumer_goes_away_is_reaped_within_5_s() {
    let (daemon, mut client) = Daemon::start(&[]).await;
    let reply = client
        .start_stream(small_stream(true))
        .await
        .expect("StartStream")
        .into_inner();
    let id = reply.stream_id.clone();
    let (mut video, audio) = daemon.redeem(reply.rings.expect("ticket")).await;
    let audio = audio.expect("an audio ring");
    let video = tokio::task::spawn_blocking(move || {
        let aus = read_n(&mut video, 10, Duration::from_secs(20));
        assert!(aus[0].flags.contains(punktfunk_ring::RecordFlags::KEYFRAME));
        video
    })
    .await
    .expect("join");

    // A consumer that keeps reading keeps its stream well past the lease.
    let drain = Drain::start(vec![video, audio]);
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    let stats = client
        .stats(StatsRequest {
            stream_id: id.clone(),
        })
        .await
        .expect("a read stream is not reaped")
        .into_inner();
    assert!(stats.fps_out > 0.0, "{stats:?}");
    assert!(status(&mut client).await.starts_with("encoding 640x360@30"));

    // The consumer goes away (its rings are unmapped): the stream is stopped within 5 s.
    let read = drain.finish();
    assert!(read > 100, "the consumer read only {read} records");
    let took = wait_reaped(&daemon, &mut client, &id, Duration::from_secs(5)).await;
    assert!(
        took >= LEASE - Duration::from_millis(600),
        "reaped after {took:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "stopping orphaned stream {id}: its consumer read nothing"
        )),
        "{log}"
    );
    assert!(log.contains("WARN"), "{log}");

    // The daemon serves the next stream.
    let next = client
        .start_stream(small_stream(false))
        .await
        .expect("StartStream after the reap")
        .into_inner();
    assert_ne!(next.stream_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_ticket_is_never_redeemed_is_reaped() {
    let ttl = Duration::from_millis(1_000);
    let (daemon, mut client) = Daemon::start(&[("PUNKTFUNK_IPC__TICKET_TTL_MS", "1000")]).await;
    let reply = client
        .start_stream(small_stream(true))
        .await
        .expect("StartStream")
        .into_inner();
    assert_eq!(
        reply.rings.as_ref().map(|t| t.expires_ms),
        Some(ttl.as_millis() as u32)
    );
    let id = reply.stream_id;
    wait_reaped(&daemon, &mut client, &id, Duration::from_secs(5)).await;
    // The ticket rule (not the lease on unread records) reaped it.
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "stopping orphaned stream {id}: its ring ticket expired unredeemed"
        )),
        "{log}"
    );
}
