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
