//! punktfunk-input end to end, in the User-Mode-Linux guest (our machines' kernel has no uinput,
//! uhid or hid-playstation): input and transport (synthetic source) under the test supervisor,
//! the real punktfunk-client sending an input script over QUIC, the seat's evdev nodes read
//! back. Each test boots one guest and runs one scenario of `pf-uml-input`, which says what it
//! checked or what failed.

use std::time::Duration;

use punktfunk_tests::uml::Guest;

fn scenario(name: &str) {
    let out = Guest::new()
        .mem("1G")
        .timeout(Duration::from_secs(180))
        .run_program(env!("CARGO_BIN_EXE_pf-uml-input"), &[name])
        .expect("the UML guest ran");
    out.assert_success();
    println!("{}", out.stdout);
}

/// Keyboard, mouse (relative, absolute, buttons, wheel), two-finger touch, Xbox pad and
/// DualSense (Cross, triggers, sticks, touch point, gyro/accel, battery) arrive in order on the
/// seat's nodes; hid-playstation's gamepad, motion and touchpad nodes, LEDs and battery exist;
/// a bad pad index, a huge position, an unknown key and a flood are dropped and counted while
/// later events still arrive.
#[test]
fn uml_seat_devices_read_back_and_bad_input_is_counted() {
    scenario("devices");
}

/// A game's FF rumble on the Xbox pad and the DualSense, and the DualSense's lightbar and
/// player LEDs written in sysfs, reach the client as Rumble, Lightbar and PlayerLeds feedback.
#[test]
fn uml_seat_feedback_reaches_the_client() {
    scenario("feedback");
}

/// Devices go within 1 s after the client leaves or is killed with SIGKILL (transport notices
/// the closed data port, not its 10 s idle timeout); after kill -9 of input the seat comes back
/// and events flow again without the client reconnecting.
#[test]
fn uml_seat_lifecycle() {
    scenario("lifecycle");
}
