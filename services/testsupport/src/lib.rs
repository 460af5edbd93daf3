//! What the tests, examples and benchmarks share and production code does not: the network
//! lab ([`netlab`]: two network namespaces joined by veth with random loss, and a verified
//! synthetic stream between two sockets). It lives here, not in a production crate, so that
//! nothing shipped carries it.
//!
//! The veth ends have `gso_max_segs 1`, so a GSO super-buffer is segmented at the device (as a
//! NIC does in hardware) and random loss hits single datagrams, not 52-packet bursts.
//!
//! Unoptimized builds: wire's FEC and AES-GCM cost ~0.5 s of CPU per 1 MiB frame without
//! optimizations, so `netlab::StreamRun::realtime` turns on feed backpressure and a wider loss
//! deadline when `netlab::wire_is_unoptimized()` (and the netns test halves the frame rate);
//! the tests' delivery assertions are the same. With `opt-level = 3` for dependencies and
//! `punktfunk-wire` the tests run in real time.

pub mod netlab;
