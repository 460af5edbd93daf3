//! The library half of `punktfunk-session`, the compositor-output manager
//! (docs/architecture.md, "Compositor outputs"):
//!
//! - [`backend`]: the compositors (gamescope, mutter, KWin, sway, weston) and, per backend, the
//!   command lines and environment of an output as data (pure, unit-tested), the Wayland
//!   globals it must advertise and how its screencast is obtained;
//! - [`floors`]: the oldest version of each backend we support, one table (`punktfunkctl doctor`
//!   reads it too), and the version parser;
//! - [`readiness`]: the sans-IO state machine that decides when an output is ready, with a
//!   deadline and its own error per step;
//! - [`journal`]: the on-disk record of every output, from which a restarted manager re-adopts
//!   live outputs and cleans up dead ones;
//! - [`request`]: a StartOutputRequest checked into a [`request::StartSpec`];
//! - [`proc`]: process liveness from `/proc` (a pid and its start time, zombies count as dead);
//! - [`screencopy`]: the pure pieces of the wlroots screencopy keeper (formats, row copy,
//!   finding its PipeWire node).
#![forbid(unsafe_code)]

pub mod backend;
pub mod floors;
pub mod journal;
pub mod proc;
pub mod readiness;
pub mod request;
pub mod screencopy;
