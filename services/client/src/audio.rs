//! The audio stream: one Opus packet per data-plane frame (after the AU envelope), decoded with
//! libopus on a plain thread so the report can show the audio arrived, is not silence, and
//! what tone it carries (a zero-crossing count: the tests play a sine in the output and check
//! its frequency at the client).

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
/// The hysteresis of the zero-crossing count (1/64 of full scale, about −36 dBFS): a crossing
/// is a swing from below −this to above +this or back, so noise around zero counts nothing.
const CROSSING_LEVEL: i16 = 512;
/// A packet counts toward the tone when its first channel's RMS is above this (0..1 of full
/// scale, −40 dBFS): silence before an app plays is left out.
const TONE_RMS: f64 = 0.01;
/// The tone is reported once this many seconds of loud samples were counted.
const TONE_MIN_SECONDS: f64 = 0.1;

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
    /// The first channel's dominant frequency over the loud packets (Hz), from its zero
    /// crossings; `None` before [`TONE_MIN_SECONDS`] of them. Meaningful for a pure tone.
    pub frequency_hz: Option<f64>,
}

/// The sum of the squared samples, each as 0..1 of full scale.
fn sum_of_squares<'a>(samples: impl Iterator<Item = &'a i16>) -> f64 {
    samples
        .map(|&s| {
            let v = f64::from(s) / 32768.0;
            v * v
        })
        .sum()
}

/// The zero-crossing count of the first channel over the loud packets.
#[derive(Debug, Default)]
struct ToneCounter {
    /// −1 below −[`CROSSING_LEVEL`], +1 above +it, 0 at the start of a loud run.
    side: i8,
    /// Half periods seen.
    crossings: u64,
    /// Samples (of the first channel) in loud packets.
    samples: u64,
}

impl ToneCounter {
    /// Counts one decoded packet's first channel (`interleaved` samples, `channels` apart).
    fn push(&mut self, interleaved: &[i16], channels: usize) {
        let first = || interleaved.iter().step_by(channels.max(1));
        let n = first().count();
        if n == 0 {
            return;
        }
        if (sum_of_squares(first()) / n as f64).sqrt() < TONE_RMS {
            // A quiet packet ends the run: the next swing starts a new one uncounted.
            self.side = 0;
            return;
        }
        for &s in first() {
            let side = if s > CROSSING_LEVEL {
                1
            } else if s < -CROSSING_LEVEL {
                -1
            } else {
                continue;
            };
            if self.side == -side {
                self.crossings += 1;
            }
            self.side = side;
        }
        self.samples += n as u64;
    }

    /// Two crossings per period over the loud samples' duration.
    fn frequency_hz(&self, sample_rate: u32) -> Option<f64> {
        let seconds = self.samples as f64 / f64::from(sample_rate.max(1));
        (seconds >= TONE_MIN_SECONDS).then(|| self.crossings as f64 / 2.0 / seconds)
    }
}

/// The Opus decoder and the running sums.
pub struct AudioDecoder {
    decoder: Option<opus::Decoder>,
    channels: usize,
    sample_rate: u32,
    pcm: Vec<i16>,
    squares: f64,
    tone: ToneCounter,
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
            sample_rate,
            pcm: vec![0; MAX_SAMPLES_PER_CHANNEL * 2],
            squares: 0.0,
            tone: ToneCounter::default(),
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
                self.squares += sum_of_squares(self.pcm[..n].iter());
                self.tone.push(&self.pcm[..n], self.channels);
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
        o.frequency_hz = self.tone.frequency_hz(self.sample_rate);
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

    /// A sine at `hz` and half scale, stereo, 48 kHz, as 5 ms Opus packets (CBR) in envelopes.
    fn sine_packets(n: usize, hz: f64) -> Vec<Vec<u8>> {
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
                    let v = (2.0 * std::f64::consts::PI * hz * t as f64 / 48_000.0).sin();
                    let v = (v * 0.5 * 32767.0) as i16;
                    s[0] = v;
                    s[1] = v;
                    t += 1;
                }
                enveloped(&mut enc, &pcm)
            })
            .collect()
    }

    /// `pcm` encoded as one Opus packet in its AU envelope, as the data plane carries it.
    fn enveloped(enc: &mut opus::Encoder, pcm: &[i16]) -> Vec<u8> {
        let packet = enc.encode_vec(pcm, 1500).expect("encode");
        let mut frame = Vec::new();
        AuTiming::default().push_to(&mut frame);
        frame.extend_from_slice(&packet);
        frame
    }

    /// 5 ms of stereo silence as an Opus packet in its envelope.
    fn silent_packet(enc: &mut opus::Encoder) -> Vec<u8> {
        enveloped(enc, &[0i16; 480])
    }

    #[test]
    fn sine_decodes_loud_and_a_corrupt_packet_is_counted() {
        let mut packets = sine_packets(200, 440.0);
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
        let hz = o.frequency_hz.expect("a tone");
        assert!((hz - 440.0).abs() < 440.0 * 0.02, "{hz} Hz");
    }

    /// Tones of different pitch read back at their own frequency, through the codec; silence
    /// before the tone does not dilute it.
    #[test]
    fn the_tone_is_read_back_at_its_frequency() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::LowDelay)
                .expect("encoder");
        for hz in [220.0, 880.0, 1000.0, 3000.0] {
            let mut d = AudioDecoder::new(2, 48_000);
            for _ in 0..100 {
                d.push(&silent_packet(&mut enc));
            }
            assert_eq!(d.outcome().frequency_hz, None, "silence has no tone");
            for frame in sine_packets(200, hz) {
                d.push(&frame);
            }
            let got = d.outcome().frequency_hz.expect("a tone");
            assert!(
                (got - hz).abs() < hz * 0.02,
                "{hz} Hz read back as {got} Hz"
            );
        }
    }

    #[test]
    fn crossings_count_swings_past_the_level_not_noise() {
        let mut t = ToneCounter::default();
        // A square wave of period 8 samples, mono, loud, with noise at ±100 between swings.
        let wave: Vec<i16> = (0..4800)
            .map(|i| match i % 8 {
                0..=2 => 20_000,
                3 => 100,
                4..=6 => -20_000,
                _ => -100,
            })
            .collect();
        t.push(&wave, 1);
        // 600 periods at 48 kHz: 6 kHz, less the run's first (uncounted) swing.
        let hz = t.frequency_hz(48_000).expect("tone");
        assert!((hz - 6000.0).abs() <= 5.0, "{hz}");
        // Every second sample of a stereo buffer is the first channel.
        let mut s = ToneCounter::default();
        let stereo: Vec<i16> = wave.iter().flat_map(|&v| [v, 0]).collect();
        s.push(&stereo, 2);
        assert_eq!(s.crossings, t.crossings);
        assert_eq!(s.samples, t.samples);
    }

    #[test]
    fn silence_has_no_rms_to_speak_of() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::LowDelay)
                .expect("encoder");
        let mut d = AudioDecoder::new(2, 48_000);
        for _ in 0..50 {
            d.push(&silent_packet(&mut enc));
        }
        let o = d.outcome();
        assert_eq!((o.decoded, o.decode_errors), (50, 0));
        assert!(o.rms.expect("rms") < 0.01);
    }
}
