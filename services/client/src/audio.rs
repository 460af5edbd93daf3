//! The audio stream: one Opus packet per data-plane frame (after the AU envelope), decoded with
//! libopus on a plain thread so the report can show the audio arrived and is not silence.

use anyhow::Context;
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use punktfunk_wire::au::AuTiming;

/// Packets waiting in front of the audio thread (1.28 s of 5 ms packets, a few hundred bytes
/// each): a stream starts with a burst of what the host's audio ring held, which a 32-packet
/// channel was seen to overflow on a busy 2-core machine.
pub const CHANNEL_PACKETS: usize = 256;
/// Largest Opus frame: 120 ms at 48 kHz, per channel.
const MAX_SAMPLES_PER_CHANNEL: usize = 5760;

/// One received audio frame (in index order; losses are counted by the receiver).
pub struct AudioPacket {
    /// The data-plane frame: AU envelope + one Opus packet.
    pub frame: Vec<u8>,
}

/// What the audio thread did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AudioOutcome {
    /// Frames that reached the audio thread.
    pub packets: u64,
    /// Packets libopus decoded.
    pub decoded: u64,
    /// Packets without a valid envelope or that libopus refused (the thread goes on).
    pub decode_errors: u64,
    /// Decoded samples (all channels).
    pub samples: u64,
    /// RMS of the decoded samples, 0..1 of full scale; `None` before any sample.
    pub rms: Option<f64>,
}

/// The Opus decoder and the running sums.
pub struct AudioDecoder {
    decoder: Option<opus::Decoder>,
    channels: usize,
    pcm: Vec<i16>,
    squares: f64,
    out: AudioOutcome,
}

impl AudioDecoder {
    /// A decoder for the negotiated format; an unsupported one (libopus takes 1–2 channels at
    /// 8/12/16/24/48 kHz) turns every packet into a decode error instead of failing the stream.
    pub fn new(channels: u32, sample_rate: u32) -> Self {
        let ch = match channels {
            1 => Some(opus::Channels::Mono),
            2 => Some(opus::Channels::Stereo),
            _ => None,
        };
        let decoder = ch.and_then(|c| match opus::Decoder::new(sample_rate, c) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(channels, sample_rate, error = %e, "no Opus decoder for this format");
                None
            }
        });
        if ch.is_none() {
            tracing::warn!(channels, "Opus decoding supports 1 or 2 channels");
        }
        Self {
            decoder,
            channels: if channels == 1 { 1 } else { 2 },
            pcm: vec![0; MAX_SAMPLES_PER_CHANNEL * 2],
            squares: 0.0,
            out: AudioOutcome::default(),
        }
    }

    /// Decodes one data-plane frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.out.packets += 1;
        let Ok((_, packet)) = AuTiming::parse(frame) else {
            self.out.decode_errors += 1;
            return;
        };
        let Some(d) = self.decoder.as_mut() else {
            self.out.decode_errors += 1;
            return;
        };
        // An empty packet would ask libopus for concealment, not decode anything.
        if packet.is_empty() {
            self.out.decode_errors += 1;
            return;
        }
        match d.decode(packet, &mut self.pcm, false) {
            Ok(per_channel) => {
                // Interleaved output: samples per channel × the decoder's channels.
                let n = (per_channel * self.channels).min(self.pcm.len());
                self.squares += self.pcm[..n]
                    .iter()
                    .map(|&s| {
                        let v = f64::from(s) / 32768.0;
                        v * v
                    })
                    .sum::<f64>();
                self.out.samples += n as u64;
                self.out.decoded += 1;
            }
            Err(e) => {
                self.out.decode_errors += 1;
                tracing::debug!(error = %e, "Opus packet not decoded");
            }
        }
    }

    /// The totals so far.
    pub fn outcome(&self) -> AudioOutcome {
        let mut o = self.out.clone();
        o.rms = (o.samples > 0).then(|| (self.squares / o.samples as f64).sqrt());
        o
    }
}

/// Starts the audio thread; it finishes when every sender is dropped.
pub fn spawn(
    channels: u32,
    sample_rate: u32,
) -> anyhow::Result<(SyncSender<AudioPacket>, JoinHandle<AudioOutcome>)> {
    let (tx, rx) = mpsc::sync_channel::<AudioPacket>(CHANNEL_PACKETS);
    let thread = std::thread::Builder::new()
        .name("pf-audio".into())
        .spawn(move || {
            let mut d = AudioDecoder::new(channels, sample_rate);
            for p in rx {
                d.push(&p.frame);
            }
            d.outcome()
        })
        .context("cannot start the audio thread")?;
    Ok((tx, thread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_wire::au::AuTiming;

    /// A 440 Hz sine at half scale, stereo, 48 kHz, as 5 ms Opus packets (CBR) in envelopes.
    fn sine_packets(n: usize) -> Vec<Vec<u8>> {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::LowDelay)
                .expect("encoder");
        enc.set_vbr(false).expect("cbr");
        enc.set_bitrate(opus::Bitrate::Bits(128_000))
            .expect("bitrate");
        let mut t = 0usize;
        (0..n)
            .map(|_| {
                let mut pcm = [0i16; 240 * 2];
                for s in pcm.chunks_mut(2) {
                    let v = (2.0 * std::f64::consts::PI * 440.0 * t as f64 / 48_000.0).sin();
                    let v = (v * 0.5 * 32767.0) as i16;
                    s[0] = v;
                    s[1] = v;
                    t += 1;
                }
                let packet = enc.encode_vec(&pcm, 1500).expect("encode");
                let mut frame = Vec::new();
                AuTiming::default().push_to(&mut frame);
                frame.extend_from_slice(&packet);
                frame
            })
            .collect()
    }

    #[test]
    fn sine_decodes_loud_and_a_corrupt_packet_is_counted() {
        let mut packets = sine_packets(200);
        // Packet 100: a code-3 TOC that claims 0 frames, which RFC 6716 forbids.
        packets[100].truncate(punktfunk_wire::au::ENVELOPE_LEN);
        packets[100].extend_from_slice(&[0x03, 0x00]);
        // Packet 150: no envelope at all.
        packets[150] = vec![1, 2, 3];
        let (tx, thread) = spawn(2, 48_000).expect("spawn");
        for frame in packets {
            tx.send(AudioPacket { frame }).expect("audio thread alive");
        }
        drop(tx);
        let o = thread.join().expect("join");
        assert_eq!(o.packets, 200);
        assert_eq!(o.decode_errors, 2, "{o:?}");
        assert_eq!(o.decoded, 198, "decoding went on after the bad packets");
        assert_eq!(o.samples, 198 * 240 * 2);
        let rms = o.rms.expect("rms");
        // A half-scale sine has an RMS of 0.354; the codec's start-up costs a little.
        assert!(rms > 0.1 && rms < 0.5, "rms {rms}");
    }

    #[test]
    fn silence_has_no_rms_to_speak_of() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::LowDelay)
                .expect("encoder");
        let mut d = AudioDecoder::new(2, 48_000);
        for _ in 0..50 {
            let packet = enc.encode_vec(&[0i16; 480], 1500).expect("encode");
            let mut frame = Vec::new();
            AuTiming::default().push_to(&mut frame);
            frame.extend_from_slice(&packet);
            d.push(&frame);
        }
        let o = d.outcome();
        assert_eq!((o.decoded, o.decode_errors), (50, 0));
        assert!(o.rms.expect("rms") < 0.01);
    }
}
