//! Kernel pacing (EDT: `SO_TXTIME` + the `fq` qdisc) against user-space pacing, inside the
//! User-Mode-Linux guest (our machines' kernel has no `fq`): the same 60 frames of 218 packets
//! (5 chunks each at 60 fps) through the one paced sender in each mode, to a receiver on the
//! guest's loopback with `fq` as its root qdisc (`pf-uml-pacing bench`). Per mode: measured ÷
//! scheduled gaps between chunks at the receiver (p10, p50) and per frame span (p50), the send
//! thread's pacing wake-ups, and its CPU time in pacing waits per frame.
//!
//! Caveat: UML runs every system call of the guest through ptrace, so absolute CPU figures are
//! several times a real kernel's; compare the two modes of one run, not machines.

use std::time::Duration;

use punktfunk_tests::uml::Guest;

fn main() {
    let out = Guest::new()
        .mem("1G")
        .timeout(Duration::from_secs(240))
        .run_program(env!("CARGO_BIN_EXE_pf-uml-pacing"), &["bench"])
        .expect("the UML guest ran");
    out.assert_success();
    print!("{}", out.stdout);
}
