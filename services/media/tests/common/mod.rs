//! Helpers shared by the integration tests: read the AU ring into owned records.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use punktfunk_media::description::Codec;
use punktfunk_media::nal;
use punktfunk_ring::{Consumer, RecordFlags};

#[derive(Clone, Debug)]
pub struct Au {
    pub frame: u64,
    pub flags: RecordFlags,
    pub captured_ns: u64,
    pub encode_start_ns: u64,
    pub encode_end_ns: u64,
    pub written_ns: u64,
    pub payload: Vec<u8>,
}

impl Au {
    pub fn idr(&self, codec: Codec) -> bool {
        nal::contains_idr(codec, &self.payload)
    }
}

/// Reads records until `stop` says so (checked after every record and every 50 ms).
pub fn read_until(consumer: &mut Consumer, mut stop: impl FnMut(&[Au]) -> bool) -> Vec<Au> {
    let mut out = Vec::new();
    loop {
        while let Some(rec) = consumer.try_read().expect("ring read") {
            let m = *rec.meta();
            out.push(Au {
                frame: rec.frame_index(),
                flags: rec.flags(),
                captured_ns: m.captured_ns,
                encode_start_ns: m.encode_start_ns,
                encode_end_ns: m.encode_end_ns,
                written_ns: rec.written_ns(),
                payload: rec.payload().to_vec(),
            });
            if stop(&out) {
                return out;
            }
        }
        if stop(&out) || consumer.is_finished().unwrap_or(true) {
            return out;
        }
        consumer
            .wait(Some(Duration::from_millis(50)))
            .expect("ring wait");
    }
}

/// Reads for `d` of wall time.
pub fn read_for(consumer: &mut Consumer, d: Duration) -> Vec<Au> {
    let end = Instant::now() + d;
    read_until(consumer, |_| Instant::now() >= end)
}

/// Reads `n` more records (or fails after `timeout`).
pub fn read_n(consumer: &mut Consumer, n: usize, timeout: Duration) -> Vec<Au> {
    let end = Instant::now() + timeout;
    let v = read_until(consumer, |v| v.len() >= n || Instant::now() >= end);
    assert!(
        v.len() >= n,
        "only {} of {n} AUs within {timeout:?}",
        v.len()
    );
    v
}

/// The real `punktfunk-media` binary in a private runtime and config dir; killed on drop.
/// Its log (stderr) goes to a file: [`Daemon::log`].
pub struct Daemon {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub fds_path: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the daemon with `env` set and waits until it serves Health.
    pub async fn start(
        env: &[(&str, &str)],
    ) -> (
        Daemon,
        punktfunk_proto::media::media_client::MediaClient<tonic::transport::Channel>,
    ) {
        use punktfunk_proto::common::HealthRequest;
        use punktfunk_proto::media::media_client::MediaClient;
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path().join("run");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&runtime).expect("mkdir");
        std::fs::create_dir_all(&config).expect("mkdir");
        rustix::fs::chmod(&runtime, rustix::fs::Mode::from_raw_mode(0o700)).expect("chmod");
        let log = std::fs::File::create(dir.path().join("media.log")).expect("log file");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_punktfunk-media"));
        cmd.env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", &config)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(std::process::Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn punktfunk-media");
        let daemon = Daemon {
            child,
            fds_path: runtime.join("punktfunk/media.fds"),
            dir,
        };
        let sock = runtime.join("punktfunk/media.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            if let Ok(ch) = punktfunk_common::uds::connect(&sock, Duration::from_secs(2)).await {
                let mut c = MediaClient::new(ch);
                if let Ok(r) = c.health(HealthRequest {}).await
                    && r.get_ref().serving
                {
                    break c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "punktfunk-media did not come up; log:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        (daemon, client)
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("media.log")).unwrap_or_default()
    }

    /// Redeems a StartStream ticket on the daemon's fd channel: the video ring's consumer, and
    /// the audio ring's if the ticket carries one.
    pub async fn redeem(
        &self,
        ticket: punktfunk_proto::common::FdTicket,
    ) -> (Consumer, Option<Consumer>) {
        let path = self.fds_path.clone();
        let fds = tokio::task::spawn_blocking(move || {
            punktfunk_common::fdchannel::redeem(&path, &ticket)
        })
        .await
        .expect("join")
        .expect("redeem");
        let mut it = fds.into_iter();
        let mut ring = || {
            let memfd = it.next()?;
            let doorbell = it.next()?;
            Some(
                Consumer::attach(punktfunk_ring::RingFds { memfd, doorbell }).expect("attach ring"),
            )
        };
        let video = ring().expect("a video ring");
        (video, ring())
    }
}

/// Drains rings on a thread until dropped (a consumer that keeps up).
#[derive(Debug)]
pub struct Drain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Drain {
    pub fn start(mut rings: Vec<Consumer>) -> Drain {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                for r in &mut rings {
                    while let Ok(Some(rec)) = r.try_read() {
                        rec.release();
                        n += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        });
        Drain {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops draining (the rings are dropped) and returns the records read.
    pub fn finish(mut self) -> u64 {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("drain thread"))
            .unwrap_or(0)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
