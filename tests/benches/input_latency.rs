//! Client input event → evdev event latency, p50/p99, inside the User-Mode-Linux guest: the real
//! punktfunk-client sends 500 key events over QUIC through transport and input, and the
//! guest reads them from the seat's keyboard node (`pf-uml-input bench`). Client and host share
//! the guest's clock, so each event's latency is its evdev time minus its send time.
//!
//! Caveat: UML runs every system call of the guest through ptrace, so absolute numbers are
//! several times a real kernel's; compare runs, not machines.

use std::time::Duration;

use punktfunk_tests::uml::Guest;

fn main() {
    let out = Guest::new()
        .mem("1G")
        .timeout(Duration::from_secs(180))
        .run_program(env!("CARGO_BIN_EXE_pf-uml-input"), &["bench"])
        .expect("the UML guest ran");
    out.assert_success();
    print!("{}", out.stdout);
}
