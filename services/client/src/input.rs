//! `stream --input-script FILE`: a timed list of input events sent as punktfunk/1 `InputEvent`
//! QUIC datagrams, and the host's `FeedbackEvent` datagrams collected for the report.
//!
//! The script is text, one event per line, `#` starts a comment:
//!
//! ```text
//! # ms  event
//! 0     key 30 down              # evdev key code, down|up
//! 10    move 5 -3                # relative mouse motion
//! 20    abs 640 360 1280 720     # absolute x y on a surface of width height
//! 30    button 1 down            # 1 left 2 right 3 middle 4 side 5 extra
//! 40    scroll 120 0             # vertical horizontal, 120 = one notch
//! 50    touch 0 100 200 down 1280 720   # finger x y down|up on width × height
//! 60    pad 0 0x1 1000 -1000 0 0 255 0  # pad buttons lx ly rx ry lt rt
//! 70    motion 0 0 9.81 0 0.5 0 0       # pad accel xyz (m/s²) gyro xyz (rad/s)
//! 80    padtouch 0 0 960 540 down       # pad finger x y down|up
//! 90    battery 0 50 charging           # pad percent charging|discharging
//! 100   flood 20000 move 1 1            # the event N times back to back
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use prost::Message;
use punktfunk_proto::control::{
    FeedbackEvent, GamepadBattery, GamepadState, GamepadTouch, InputEvent, KeyEvent, Motion,
    MouseAbs, MouseButton, MouseMove, Scroll, Touch, feedback_event, input_event::Event,
};
use serde::Serialize;
use tokio::sync::oneshot;

use punktfunk_dataplane::sys::monotonic_ns as now_ns;

/// Most lines a script may have, and most repetitions one `flood` line may ask for.
const MAX_LINES: usize = 100_000;
const MAX_FLOOD: u32 = 1_000_000;
/// Most feedback events the report lists (the count goes on).
const MAX_FEEDBACK_LISTED: usize = 1000;
/// Send times the report lists (the first ones), for latency measurements.
const MAX_SENT_LISTED: usize = 10_000;

/// One step of a script.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When, from the start of streaming.
    pub at: Duration,
    /// What.
    pub event: Event,
    /// How many times, back to back.
    pub repeat: u32,
}

/// Parses a script file.
pub fn load(path: &Path) -> anyhow::Result<Vec<Step>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the input script {}", path.display()))?;
    parse(&text).with_context(|| format!("in the input script {}", path.display()))
}

/// Parses a script's text.
pub fn parse(text: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if steps.len() >= MAX_LINES {
            bail!("more than {MAX_LINES} events");
        }
        steps.push(parse_line(line).with_context(|| format!("line {}: `{line}`", n + 1))?);
    }
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

fn num<T: std::str::FromStr>(w: Option<&str>, what: &str) -> anyhow::Result<T> {
    let w = w.ok_or_else(|| anyhow!("missing {what}"))?;
    w.parse()
        .map_err(|_| anyhow!("{what} `{w}` is not a number"))
}

fn hex_or_dec(w: Option<&str>, what: &str) -> anyhow::Result<u32> {
    let w = w.ok_or_else(|| anyhow!("missing {what}"))?;
    match w.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).map_err(|_| anyhow!("{what} `{w}` is not hex")),
        None => w
            .parse()
            .map_err(|_| anyhow!("{what} `{w}` is not a number")),
    }
}

fn state(w: Option<&str>, on: &str, off: &str) -> anyhow::Result<bool> {
    match w {
        Some(x) if x == on => Ok(true),
        Some(x) if x == off => Ok(false),
        other => bail!("expected {on} or {off}, got {other:?}"),
    }
}

fn parse_line(line: &str) -> anyhow::Result<Step> {
    let mut w = line.split_whitespace();
    let at = Duration::from_millis(num(w.next(), "time (ms)")?);
    let mut verb = w.next().ok_or_else(|| anyhow!("missing event"))?;
    let mut repeat = 1;
    if verb == "flood" {
        repeat = num(w.next(), "count")?;
        if repeat == 0 || repeat > MAX_FLOOD {
            bail!("flood count must be 1..={MAX_FLOOD}");
        }
        verb = w
            .next()
            .ok_or_else(|| anyhow!("missing event after flood"))?;
    }
    let event = event(verb, &mut w)?;
    if let Some(extra) = w.next() {
        bail!("unexpected `{extra}`");
    }
    Ok(Step { at, event, repeat })
}

fn event<'a>(verb: &str, w: &mut impl Iterator<Item = &'a str>) -> anyhow::Result<Event> {
    Ok(match verb {
        "key" => Event::Key(KeyEvent {
            code: num(w.next(), "key code")?,
            pressed: state(w.next(), "down", "up")?,
        }),
        "move" => Event::MouseMove(MouseMove {
            dx: num(w.next(), "dx")?,
            dy: num(w.next(), "dy")?,
        }),
        "abs" => Event::MouseAbs(MouseAbs {
            x: num(w.next(), "x")?,
            y: num(w.next(), "y")?,
            width: num(w.next(), "width")?,
            height: num(w.next(), "height")?,
        }),
        "button" => Event::MouseButton(MouseButton {
            button: num(w.next(), "button")?,
            pressed: state(w.next(), "down", "up")?,
        }),
        "scroll" => Event::Scroll(Scroll {
            vertical: num(w.next(), "vertical")?,
            horizontal: num(w.next(), "horizontal")?,
        }),
        "touch" => Event::Touch(Touch {
            id: num(w.next(), "finger")?,
            x: num(w.next(), "x")?,
            y: num(w.next(), "y")?,
            down: state(w.next(), "down", "up")?,
            width: num(w.next(), "width")?,
            height: num(w.next(), "height")?,
        }),
        "pad" => Event::Gamepad(GamepadState {
            pad: num(w.next(), "pad")?,
            buttons: hex_or_dec(w.next(), "buttons")?,
            left_x: num(w.next(), "lx")?,
            left_y: num(w.next(), "ly")?,
            right_x: num(w.next(), "rx")?,
            right_y: num(w.next(), "ry")?,
            left_trigger: num(w.next(), "lt")?,
            right_trigger: num(w.next(), "rt")?,
        }),
        "motion" => Event::Motion(Motion {
            pad: num(w.next(), "pad")?,
            accel_x: num(w.next(), "ax")?,
            accel_y: num(w.next(), "ay")?,
            accel_z: num(w.next(), "az")?,
            gyro_x: num(w.next(), "gx")?,
            gyro_y: num(w.next(), "gy")?,
            gyro_z: num(w.next(), "gz")?,
        }),
        "padtouch" => Event::GamepadTouch(GamepadTouch {
            pad: num(w.next(), "pad")?,
            finger: num(w.next(), "finger")?,
            x: num(w.next(), "x")?,
            y: num(w.next(), "y")?,
            down: state(w.next(), "down", "up")?,
        }),
        "battery" => Event::GamepadBattery(GamepadBattery {
            pad: num(w.next(), "pad")?,
            percent: num(w.next(), "percent")?,
            charging: state(w.next(), "charging", "discharging")?,
        }),
        other => bail!(
            "unknown event `{other}` (key, move, abs, button, scroll, touch, pad, motion, padtouch, battery, flood)"
        ),
    })
}

/// One feedback event the host sent, as the report lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Feedback {
    /// Motors 0..65535.
    Rumble {
        /// When it arrived, ms after streaming began.
        at_ms: f64,
        /// Pad.
        pad: u32,
        /// Strong motor.
        low: u32,
        /// Weak motor.
        high: u32,
    },
    /// Lightbar colour.
    Lightbar {
        /// ms.
        at_ms: f64,
        /// Pad.
        pad: u32,
        /// Red.
        r: u32,
        /// Green.
        g: u32,
        /// Blue.
        b: u32,
    },
    /// Player LEDs.
    PlayerLeds {
        /// ms.
        at_ms: f64,
        /// Pad.
        pad: u32,
        /// Mask, bit 0 leftmost.
        mask: u32,
    },
    /// An adaptive-trigger effect: mode byte and parameters, hex.
    TriggerEffect {
        /// ms.
        at_ms: f64,
        /// Pad.
        pad: u32,
        /// R2 (true) or L2.
        right: bool,
        /// The effect bytes in hex.
        effect: String,
    },
}

fn feedback(bytes: &[u8], at_ms: f64) -> Option<Feedback> {
    use feedback_event::Event as F;
    Some(match FeedbackEvent::decode(bytes).ok()?.event? {
        F::Rumble(r) => Feedback::Rumble {
            at_ms,
            pad: r.pad,
            low: r.low,
            high: r.high,
        },
        F::Lightbar(l) => Feedback::Lightbar {
            at_ms,
            pad: l.pad,
            r: l.r,
            g: l.g,
            b: l.b,
        },
        F::PlayerLeds(p) => Feedback::PlayerLeds {
            at_ms,
            pad: p.pad,
            mask: p.mask,
        },
        F::TriggerEffect(t) => Feedback::TriggerEffect {
            at_ms,
            pad: t.pad,
            right: t.right,
            effect: t.effect.iter().map(|b| format!("{b:02x}")).collect(),
        },
    })
}

/// What the input task did.
#[derive(Debug, Default)]
pub struct InputOutcome {
    /// Input datagrams sent.
    pub sent: u64,
    /// Input datagrams quinn refused.
    pub send_errors: u64,
    /// Feedback events received (all of them).
    pub feedback_received: u64,
    /// The first [`MAX_FEEDBACK_LISTED`].
    pub feedback: Vec<Feedback>,
    /// CLOCK_MONOTONIC ns each of the first [`MAX_SENT_LISTED`] events was sent at.
    pub sent_ns: Vec<u64>,
}

/// Sends the script's events at their times (from `start_ns`, CLOCK_MONOTONIC) and collects
/// feedback until `stop` fires.
pub async fn run(
    conn: quinn::Connection,
    steps: Vec<Step>,
    start_ns: u64,
    mut stop: oneshot::Receiver<()>,
) -> InputOutcome {
    let mut out = InputOutcome::default();
    let t0 = tokio::time::Instant::now();
    let mut steps = steps.into_iter().peekable();
    loop {
        let next = steps.peek().map(|s| t0 + s.at);
        tokio::select! {
            _ = &mut stop => break,
            _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                if let Some(step) = steps.next() {
                    for i in 0..step.repeat {
                        if i % 64 == 63 {
                            // A flood must not starve the connection's own tasks.
                            tokio::task::yield_now().await;
                        }
                        let t = now_ns();
                        let ev = InputEvent { timestamp_ns: t, event: Some(step.event) };
                        match conn.send_datagram(ev.encode_to_vec().into()) {
                            Ok(()) => out.sent += 1,
                            Err(_) => out.send_errors += 1,
                        }
                        if out.sent_ns.len() < MAX_SENT_LISTED {
                            out.sent_ns.push(t);
                        }
                    }
                }
            }
            d = conn.read_datagram() => {
                let Ok(bytes) = d else { break };
                out.feedback_received += 1;
                let at_ms = now_ns().saturating_sub(start_ns) as f64 / 1e6;
                if out.feedback.len() < MAX_FEEDBACK_LISTED
                    && let Some(f) = feedback(&bytes, at_ms)
                {
                    out.feedback.push(f);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_event() {
        let steps = parse(
            "# a script\n\
             0 key 30 down\n\
             10 key 30 up # comment\n\
             5 move 5 -3\n\
             20 abs 640 360 1280 720\n\
             30 button 1 down\n\
             40 scroll 120 -120\n\
             50 touch 1 100 200 down 1280 720\n\
             60 pad 0 0x21 1000 -1000 0 0 255 0\n\
             70 motion 0 0 9.81 0 0.5 0 0\n\
             80 padtouch 0 1 960 540 up\n\
             90 battery 0 50 charging\n\
             100 flood 3 move 1 1\n",
        )
        .unwrap();
        assert_eq!(steps.len(), 12);
        // Sorted by time.
        assert_eq!(
            steps[1].event,
            Event::MouseMove(MouseMove { dx: 5, dy: -3 })
        );
        assert_eq!(
            steps[7].event,
            Event::Gamepad(GamepadState {
                pad: 0,
                buttons: 0x21,
                left_x: 1000,
                left_y: -1000,
                left_trigger: 255,
                ..Default::default()
            })
        );
        assert_eq!(steps[11].repeat, 3);
        assert_eq!(steps[11].at, Duration::from_millis(100));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("0 key 30 down\n5 key x down\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        assert!(parse("0 wiggle").is_err());
        assert!(parse("0 key 30 sideways").is_err());
        assert!(parse("0 key 30 down extra").is_err());
        assert!(parse("0 flood 0 move 1 1").is_err());
        assert!(parse("0 flood 2000000 move 1 1").is_err());
    }

    #[test]
    fn feedback_is_listed_readably() {
        let bytes = FeedbackEvent {
            event: Some(feedback_event::Event::TriggerEffect(
                punktfunk_proto::control::TriggerEffect {
                    pad: 0,
                    right: true,
                    effect: vec![0x25, 0x84],
                },
            )),
        }
        .encode_to_vec();
        assert_eq!(
            feedback(&bytes, 1.5),
            Some(Feedback::TriggerEffect {
                at_ms: 1.5,
                pad: 0,
                right: true,
                effect: "2584".into()
            })
        );
        assert_eq!(feedback(&[0xFF], 0.0), None);
    }
}
