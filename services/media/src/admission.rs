//! Admission: whether the encoders can take one more stream (pure, no GStreamer).
//!
//! * **Software encoders** (x264enc, x265enc, openh264enc) share the CPUs, so they share a pixel
//!   budget: the sum of `width × height × fps` over every software-encoded stream may not exceed
//!   [`Budget::software_pixels_per_second`] — `software_mpixels_per_cpu` (media.toml) times the
//!   CPUs this process may use. The default, [`DEFAULT_SOFTWARE_MPIXELS_PER_CPU`], holds three
//!   1280x720@60 H.264 streams on two cores (measured: 589–597 of 600 frames each) and refuses
//!   a fourth, which would starve them all.
//! * **Hardware encoders** (NVENC, VA-API) have no pixel budget here: their limits are the
//!   GPU's, which media cannot measure ahead of time; only [`Budget::max_streams`] applies.
//!
//! A refusal ([`Refusal`]) reads as a sentence naming the limit, what is in use and what the
//! request needs; the daemon answers it as RESOURCE_EXHAUSTED.

use std::fmt;

use crate::description::{EncoderKind, Mode, ModeExt};

/// Software pixel budget per CPU, in Mpixel/s (2 CPUs → 166 Mpixel/s: three 1280x720@60 fit,
/// each 55.3 Mpixel/s).
pub const DEFAULT_SOFTWARE_MPIXELS_PER_CPU: u32 = 83;
/// The largest configurable value of `software_mpixels_per_cpu` (0 = no software budget).
pub const MAX_SOFTWARE_MPIXELS_PER_CPU: u32 = 1_000_000;

/// The pixel rate of `mode`: width × height × frames per second.
pub fn pixel_rate(mode: &Mode) -> u64 {
    u64::from(mode.width) * u64::from(mode.height) * u64::from(mode.refresh_mhz) / 1000
}

/// What one stream takes from the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// The stream's mode (its pixel rate is what a software encoder costs).
    pub mode: Mode,
    /// True if a hardware encoder runs it (no pixel budget applies).
    pub hardware: bool,
}

impl Load {
    /// The load of a `mode` stream on `encoder`.
    pub fn new(mode: Mode, encoder: EncoderKind) -> Self {
        Load {
            mode,
            hardware: encoder.is_hardware(),
        }
    }

    /// Pixels per second charged to the software budget (0 for hardware encoders).
    pub fn software_pixels_per_second(&self) -> u64 {
        if self.hardware {
            0
        } else {
            pixel_rate(&self.mode)
        }
    }
}

/// The limits of one media daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Streams at once, whatever their encoders.
    pub max_streams: usize,
    /// Software encoders' pixel rate; `None`: unlimited (`software_mpixels_per_cpu = 0`).
    pub software_pixels_per_second: Option<u64>,
}

/// Why a stream was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The stream-count limit is reached.
    TooManyStreams {
        /// The most streams media runs at once.
        max: usize,
    },
    /// The stream would exceed the software encoders' pixel budget.
    SoftwareBudget {
        /// The budget in pixels per second.
        budget: u64,
        /// Pixels per second the running software streams use.
        in_use: u64,
        /// How many software streams are running.
        streams: usize,
        /// Pixels per second this stream needs.
        needed: u64,
        /// The refused stream's mode.
        mode: Mode,
    },
}

fn mpixels(pps: u64) -> String {
    format!("{:.0}", pps as f64 / 1e6)
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyStreams { max } => {
                write!(f, "{max} streams are running; stop one first")
            }
            Refusal::SoftwareBudget {
                budget,
                in_use,
                streams,
                needed,
                mode,
            } => write!(
                f,
                "the software encoder budget is {} Mpixel/s and {streams} stream{} use{} {}; \
                 this {} needs {}: lower the mode or stop a stream",
                mpixels(*budget),
                if *streams == 1 { "" } else { "s" },
                if *streams == 1 { "s" } else { "" },
                mpixels(*in_use),
                mode.label(),
                mpixels(*needed),
            ),
        }
    }
}

impl Budget {
    /// `mpixels_per_cpu` (0 = unlimited) times `cpus`.
    pub fn new(max_streams: usize, mpixels_per_cpu: u32, cpus: usize) -> Self {
        let software = (mpixels_per_cpu != 0)
            .then(|| u64::from(mpixels_per_cpu) * 1_000_000 * cpus.max(1) as u64);
        Budget {
            max_streams,
            software_pixels_per_second: software,
        }
    }

    /// Software pixels per second that `running` use.
    pub fn software_in_use(running: &[Load]) -> u64 {
        running.iter().map(Load::software_pixels_per_second).sum()
    }

    /// Whether `new` fits next to `running` (every stream counted, starting ones included).
    pub fn admit(&self, running: &[Load], new: Load) -> Result<(), Refusal> {
        if running.len() >= self.max_streams {
            return Err(Refusal::TooManyStreams {
                max: self.max_streams,
            });
        }
        self.fits(running, new)
    }

    /// Whether `running` (the other streams) and `new` fit the software budget; for a stream
    /// changing its mode, pass the others and its new load.
    pub fn fits(&self, running: &[Load], new: Load) -> Result<(), Refusal> {
        let (Some(budget), false) = (self.software_pixels_per_second, new.hardware) else {
            return Ok(());
        };
        let in_use = Self::software_in_use(running);
        let needed = new.software_pixels_per_second();
        if in_use.saturating_add(needed) <= budget {
            return Ok(());
        }
        Err(Refusal::SoftwareBudget {
            budget,
            in_use,
            streams: running.iter().filter(|l| !l.hardware).count(),
            needed,
            mode: new.mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::description::mode;

    const HD60: Mode = mode(1280, 720, 60);
    const FHD60: Mode = mode(1920, 1080, 60);

    fn sw(mode: Mode) -> Load {
        Load::new(mode, EncoderKind::X264)
    }

    fn hw(mode: Mode) -> Load {
        Load::new(mode, EncoderKind::NvH265)
    }

    #[test]
    fn pixel_rates() {
        assert_eq!(pixel_rate(&HD60), 55_296_000);
        assert_eq!(
            pixel_rate(&Mode {
                width: 1920,
                height: 1080,
                refresh_mhz: 59_940
            }),
            124_291_584
        );
    }

    #[test]
    fn the_default_holds_three_720p60_on_two_cpus_and_refuses_a_fourth() {
        let b = Budget::new(4, DEFAULT_SOFTWARE_MPIXELS_PER_CPU, 2);
        assert_eq!(b.software_pixels_per_second, Some(166_000_000));
        let mut running = Vec::new();
        for _ in 0..3 {
            b.admit(&running, sw(HD60)).expect("fits");
            running.push(sw(HD60));
        }
        let r = b
            .admit(&running, sw(HD60))
            .expect_err("a fourth does not fit");
        assert_eq!(
            r.to_string(),
            "the software encoder budget is 166 Mpixel/s and 3 streams use 166; \
             this 1280x720@60 needs 55: lower the mode or stop a stream"
        );
        // Two fit with room to spare, but not next to a 1080p60 stream.
        let r = b.admit(&running[..2], sw(FHD60)).expect_err("too big");
        assert!(
            matches!(
                r,
                Refusal::SoftwareBudget {
                    in_use: 110_592_000,
                    needed: 124_416_000,
                    streams: 2,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(
            r.to_string()
                .contains("2 streams use 111; this 1920x1080@60 needs 124")
        );
    }

    #[test]
    fn the_budget_scales_with_cpus() {
        let b = Budget::new(4, DEFAULT_SOFTWARE_MPIXELS_PER_CPU, 8);
        let running = vec![sw(FHD60), sw(FHD60), sw(FHD60)];
        assert_eq!(b.admit(&running, sw(FHD60)), Ok(()));
        let one_cpu = Budget::new(4, DEFAULT_SOFTWARE_MPIXELS_PER_CPU, 1);
        assert_eq!(
            one_cpu.admit(&[], sw(FHD60)),
            Err(Refusal::SoftwareBudget {
                budget: 83_000_000,
                in_use: 0,
                streams: 0,
                needed: 124_416_000,
                mode: FHD60
            })
        );
        assert!(
            one_cpu
                .admit(&[], sw(FHD60))
                .unwrap_err()
                .to_string()
                .contains("0 streams use 0;")
        );
    }

    #[test]
    fn hardware_streams_count_against_max_streams_only() {
        let b = Budget::new(4, DEFAULT_SOFTWARE_MPIXELS_PER_CPU, 2);
        let huge = mode(7680, 4320, 120);
        let mut running = vec![sw(HD60), sw(HD60), sw(HD60)];
        assert_eq!(b.admit(&running, hw(huge)), Ok(()));
        running.push(hw(huge));
        assert_eq!(
            b.admit(&running, hw(HD60)),
            Err(Refusal::TooManyStreams { max: 4 })
        );
        assert_eq!(Budget::software_in_use(&running), 3 * 55_296_000);
        assert_eq!(
            b.admit(&running[1..], sw(HD60)),
            Ok(()),
            "a hardware stream leaves the software budget alone"
        );
    }

    #[test]
    fn zero_means_no_software_budget() {
        let b = Budget::new(4, 0, 2);
        assert_eq!(b.software_pixels_per_second, None);
        assert_eq!(b.admit(&[], sw(mode(7680, 4320, 240))), Ok(()));
    }

    #[test]
    fn a_mode_change_is_judged_without_the_streams_old_mode() {
        let b = Budget::new(4, DEFAULT_SOFTWARE_MPIXELS_PER_CPU, 2);
        let others = [sw(HD60)];
        assert_eq!(b.fits(&others, sw(mode(1280, 720, 120))), Ok(()));
        assert!(matches!(
            b.fits(&others, sw(FHD60)),
            Err(Refusal::SoftwareBudget { .. })
        ));
    }
}
