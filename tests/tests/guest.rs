//! The appliance booted for real in a UML guest (`punktfunk_tests::appliance`): systemd as
//! PID 1, our files laid in by packaging/install.sh exactly as in the image, a test user with
//! lingering. One boot covers everything "the guest must show" (issue 14); a second boot with a
//! deliberately broken media binary shows the health-check gate rolling back through a STAND-IN
//! bootc (the guest cannot have bootc).
//!
//! Cold, the first test builds the UML kernel (tests/uml/kernel.sh) and the guest's root file
//! system (tests/guest/mkrootfs.sh); both are cached under /var/tmp/punktfunk-cache.

use std::collections::BTreeMap;
use std::time::Duration;

use punktfunk_tests::appliance::{Appliance, Mode, facts};
use serde_json::Value;

const DAEMONS: [&str; 4] = ["session", "media", "transport", "input"];
/// Boot, the driver's steps (two streams, four restarts, a watchdog expiry) and poweroff; the
/// cold kernel and root builds are not inside it (they happen in `prepare`). ~100 s on a quiet
/// machine, 237 s beside four busy loops on 2 cores; the rollback boot adds two retried checks.
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);

fn fact<'a>(f: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    f.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("the driver recorded no {key}; facts: {f:#?}"))
}

fn json(share: &std::path::Path, name: &str) -> Value {
    let text = std::fs::read_to_string(share.join(name)).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| {
        let err =
            std::fs::read_to_string(share.join(name.replace(".json", ".err"))).unwrap_or_default();
        panic!("{name} is not JSON ({e}): {text}\nstderr: {err}")
    })
}

/// Journal entries as (microseconds since the epoch, unit or user unit, message).
fn entries(journal: &[Value]) -> Vec<(u64, String, String)> {
    journal
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let unit = [
                s("USER_UNIT"),
                s("_SYSTEMD_USER_UNIT"),
                s("UNIT"),
                s("_SYSTEMD_UNIT"),
            ]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or_default();
            let t = s("__REALTIME_TIMESTAMP").parse().unwrap_or(0);
            (t, unit, s("MESSAGE"))
        })
        .collect()
}

/// One booted guest and what its driver recorded.
struct Run {
    guest: Appliance,
    out: punktfunk_tests::uml::GuestOutput,
    f: BTreeMap<String, String>,
    ctx: String,
}

#[test]
fn appliance_boots_activates_restarts_recovers_streams_and_powers_off_under_systemd() {
    let guest = Appliance::prepare(Mode::Full).expect("prepare the guest");
    let out = guest.boot(BOOT_TIMEOUT).expect("boot the guest");
    let f = facts(&out);
    let ctx = format!("driver output:\n{}\nconsole:\n{}", out.stdout, out.console);
    assert_eq!(out.status, 0, "{ctx}");
    eprintln!("guest boot to poweroff: {:.1} s", out.elapsed.as_secs_f64());
    let run = Run { guest, out, f, ctx };
    health_check_judged_the_boot_good(&run);
    target_sockets_ready_and_status(&run);
    udev_and_sysctl_applied(&run);
    client_pairs_and_streams_and_doctor_passes(&run);
    firewalld_filters_and_lets_a_lan_client_in(&run);
    socket_activation_starts_a_stopped_daemon(&run);
    kill_9_restarts_each_daemon_and_a_stream_survives_media(&run);
    let journal = entries(&run.guest.journal());
    watchdog_restarts_a_stopped_daemon(&run, &journal);
    the_cache_was_not_touched();
    poweroff_stops_everything_within_the_timeouts(&journal);
}

fn health_check_judged_the_boot_good(run: &Run) {
    let Run { f, out, ctx, .. } = run;
    // The boot health check ran first and judged the boot good; bootc was never called.
    assert_eq!(fact(f, "boot1.healthcheck"), "active/success", "{ctx}");
    let hc = std::fs::read_to_string(out.share.join("healthcheck-boot1.log")).unwrap();
    assert!(hc.contains("boot is good"), "{hc}");
    // A boot whose check failed rolled back and rebooted before the driver's turn: the driver's
    // "boot 1" is then the boot after it. Its verdict is in the journal, every boot's.
    let said = healthcheck_messages(&run.guest.journal());
    assert_eq!(
        run.guest.bootc_calls(),
        "",
        "a health check rolled back: {said:#?}\n{ctx}"
    );
    // A good boot may still have needed a second check (a busy machine): say so, it is how a
    // slow first stream after boot shows up.
    for (_, m) in said.iter().filter(|(_, m)| m.starts_with("check ")) {
        eprintln!("health check retried in a good boot: {m}");
    }
}

/// What punktfunk-healthcheck.service said, as (boot id, message), every boot.
fn healthcheck_messages(journal: &[Value]) -> Vec<(String, String)> {
    journal
        .iter()
        .filter(|e| e["_SYSTEMD_UNIT"] == "punktfunk-healthcheck.service")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("_BOOT_ID"), s("MESSAGE"))
        })
        .collect()
}

fn target_sockets_ready_and_status(run: &Run) {
    let Run { f, out, .. } = run;
    // After boot: punktfunk.target is active, enabled through the preset; the sockets listen;
    // every daemon reached READY (Type=notify: active/running) with its STATUS line.
    assert_eq!(fact(f, "target.active"), "active");
    assert_eq!(fact(f, "target.enabled"), "enabled");
    assert_eq!(fact(f, "target.preset"), "enabled");
    for d in DAEMONS {
        assert_eq!(
            fact(f, &format!("socket.{d}.stream")),
            "1",
            "{d}.sock listens"
        );
        assert_eq!(
            fact(f, &format!("socket.{d}.seqpacket")),
            "1",
            "{d}.fds listens"
        );
        assert_eq!(fact(f, &format!("unit.{d}.state")), "active/running", "{d}");
        let status = fact(f, &format!("unit.{d}.status"));
        assert!(!status.is_empty(), "{d} sent no STATUS=");
        let shown = std::fs::read_to_string(out.share.join(format!("status-{d}.txt"))).unwrap();
        assert!(
            shown.contains(&format!("Status: \"{status}\"")),
            "systemctl --user status punktfunk-{d} does not show its STATUS line:\n{shown}"
        );
    }
}

fn udev_and_sysctl_applied(run: &Run) {
    let Run { f, .. } = run;
    // udev gives group input /dev/uinput and /dev/uhid; the sysctls are applied.
    assert_eq!(fact(f, "dev.uinput"), "input 660");
    assert_eq!(fact(f, "dev.uhid"), "input 660");
    assert_eq!(fact(f, "sysctl.rmem_max"), "33554432");
    assert_eq!(fact(f, "sysctl.wmem_max"), "33554432");
}

fn client_pairs_and_streams_and_doctor_passes(run: &Run) {
    let Run { f, out, ctx, .. } = run;
    // punktfunk-client pairs and streams (decoded) inside the guest.
    assert_eq!(fact(f, "pair.rc"), "0", "{ctx}");
    assert_eq!(fact(f, "stream.rc"), "0", "{ctx}");
    let s = json(&out.share, "stream.json");
    assert!(s["error"].is_null(), "{s:#}");
    assert!(s["decoded_frames"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert_eq!(s["decode_errors"], 0, "{s:#}");

    // doctor in the appliance, as the streaming user with no login session (as over SSH on a
    // headless machine): every check passes, the firewall's too. firewalld runs with our
    // service (asserted as root in `firewalld_filters_and_lets_a_lan_client_in`); Debian's
    // firewalld ships polkit's "server" policy, under which reading the zones needs an
    // administrator, and the image's polkit rule lets group wheel (the user is in it) read them.
    let d = json(&out.share, "doctor.json");
    let not_passing: Vec<&Value> = d["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["verdict"] != "pass")
        .collect();
    assert!(
        not_passing.is_empty(),
        "doctor in the guest: {not_passing:#?}"
    );
    for id in [
        "firewall",
        "daemon.session",
        "daemon.media",
        "daemon.transport",
        "daemon.input",
        "units.enabled",
        "codec.h264",
        "device.uinput",
        "device.uhid",
        "sysctl.net.core.rmem_max",
        "sysctl.net.core.wmem_max",
        "compositor",
        "pipewire",
        "mdns",
        "pairing",
        "clocksource",
    ] {
        assert!(
            d["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == id && c["verdict"] == "pass"),
            "{id} does not pass in the guest: {d:#}"
        );
    }
    let firewall = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "firewall")
        .unwrap();
    assert_eq!(
        firewall["detail"], "firewalld allows service punktfunk",
        "{firewall:#}"
    );
    assert_eq!(d["ok"], true);
    assert_eq!(fact(f, "doctor.rc"), "0");
}

fn firewalld_filters_and_lets_a_lan_client_in(run: &Run) {
    let Run { f, out, ctx, .. } = run;
    // firewalld runs (its nftables ruleset loaded by the guest kernel) with our service and
    // mDNS in the default zone, as install.sh sets it up in the image.
    assert_eq!(fact(f, "firewalld.state"), "running", "{ctx}");
    let zone = fact(f, "firewalld.zone");
    let services: Vec<&str> = fact(f, "firewalld.services").split(' ').collect();
    for s in ["punktfunk", "mdns"] {
        assert!(services.contains(&s), "zone {zone}: {services:?}");
    }
    let ports = fact(f, "firewalld.ports");
    assert!(ports.contains("9777/udp"), "{ports}");
    // From a LAN namespace: a TCP port of our service connects, a closed one outside the zone
    // is rejected by firewalld (an unfiltered host would answer "Connection refused").
    assert_eq!(fact(f, "lan.tcp.47989"), "connected", "{ctx}");
    let closed = fact(f, "lan.tcp.80");
    assert!(closed.ends_with("No route to host"), "{closed}");
    // The reference client pairs and streams from the LAN, over UDP 9777, through firewalld.
    assert_eq!(fact(f, "lan.pair.rc"), "0", "{ctx}");
    assert_eq!(fact(f, "lan.stream.rc"), "0", "{ctx}");
    let s = json(&out.share, "lan-stream.json");
    assert!(s["error"].is_null(), "{s:#}");
    assert!(s["frames_received"].as_u64().unwrap_or(0) > 0, "{s:#}");
}

fn socket_activation_starts_a_stopped_daemon(run: &Run) {
    let Run { f, out, .. } = run;
    // Socket activation: a stopped daemon is started by the first call to its socket.
    assert_eq!(fact(f, "activation.before"), "inactive");
    assert_eq!(fact(f, "activation.socket"), "active");
    // The call reached the daemon itself (its Health answered: a version, no connect error),
    // though it may still have been starting (serving false) when it answered.
    let st = json(&out.share, "activation-status.json");
    let input = st["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .find(|d| d["name"] == "input")
        .expect("input in status");
    assert!(input["error"].is_null(), "{input:#}");
    assert_eq!(input["version"], env!("CARGO_PKG_VERSION"), "{input:#}");
    assert_eq!(fact(f, "activation.after"), "active");
}

fn kill_9_restarts_each_daemon_and_a_stream_survives_media(run: &Run) {
    let Run { f, out, ctx, .. } = run;
    // kill -9 of each daemon: systemd restarts it (NRestarts counts it).
    for d in DAEMONS {
        let k = fact(f, &format!("kill.{d}"));
        let (counts, state) = k.split_once(' ').unwrap();
        let (before, after) = counts.split_once("->").unwrap();
        assert_eq!(
            after.parse::<u32>().unwrap(),
            before.parse::<u32>().unwrap() + 1,
            "{d}: {k}"
        );
        assert_eq!(state, "active", "{d}: {k}");
    }

    // A live stream survives a media restart: the client stays connected and sees one gap.
    assert_eq!(fact(f, "restart_stream.rc"), "0", "{ctx}");
    let r = json(&out.share, "restart-stream.json");
    assert!(r["error"].is_null(), "{r:#}");
    assert_eq!(r["discontinuities"], 1, "{r:#}");
    let m = fact(f, "restart_stream.media");
    let (b, a) = m.split_once("->").unwrap();
    assert_eq!(
        a.parse::<u32>().unwrap(),
        b.parse::<u32>().unwrap() + 1,
        "{m}"
    );
}

fn watchdog_restarts_a_stopped_daemon(run: &Run, e: &[(u64, String, String)]) {
    let Run { f, .. } = run;
    // SIGSTOP: the watchdog (WatchdogSec=10s) kills the daemon and systemd restarts it.
    let w = fact(f, "watchdog.input");
    let (counts, state) = w.split_once(' ').unwrap();
    let (before, after) = counts.split_once("->").unwrap();
    assert!(
        after.parse::<u32>().unwrap() > before.parse::<u32>().unwrap(),
        "{w}"
    );
    assert_eq!(state, "active", "{w}");
    assert!(
        e.iter()
            .any(|(_, u, m)| u == "punktfunk-input.service" && m.contains("Watchdog timeout")),
        "no 'Watchdog timeout' for punktfunk-input.service in the journal"
    );
}

fn the_cache_was_not_touched() {
    // The boot wrote only to its copy: the cached root has none of our files and no journal.
    let cache = punktfunk_tests::appliance::rootfs().expect("the cached root");
    for rel in [
        "usr/bin/punktfunk-media",
        "usr/local/sbin/bootc",
        "etc/pf-guest/mode",
    ] {
        assert!(
            !cache.join(rel).exists(),
            "the boot reached the cache: {rel}"
        );
    }
    let journals = std::fs::read_dir(cache.join("var/log/journal"))
        .unwrap()
        .count();
    assert_eq!(journals, 0, "the boot wrote a journal into the cache");
}

fn poweroff_stops_everything_within_the_timeouts(e: &[(u64, String, String)]) {
    // A clean poweroff: every daemon stopped on SIGTERM within its unit's TimeoutStopSec=10s,
    // none was killed.
    let off = e
        .iter()
        .rposition(|(_, _, m)| m == "POWEROFF")
        .expect("the driver's POWEROFF mark in the journal");
    let t_off = e[off].0;
    let after = &e[off..];
    for d in DAEMONS {
        let unit = format!("punktfunk-{d}.service");
        let lines: Vec<&(u64, String, String)> =
            after.iter().filter(|(_, u, _)| *u == unit).collect();
        assert!(
            !lines
                .iter()
                .any(|(_, _, m)| m.contains("timed out") || m.contains("Killing process")),
            "{unit} was not stopped cleanly: {lines:#?}"
        );
        let stopped = lines
            .iter()
            .find(|(_, _, m)| m.contains("Deactivated successfully") || m.starts_with("Stopped "))
            .unwrap_or_else(|| panic!("{unit} never stopped at poweroff: {lines:#?}"));
        assert!(
            stopped.0 - t_off < 10_000_000,
            "{unit} took {} ms to stop",
            (stopped.0 - t_off) / 1000
        );
    }
}

#[test]
fn healthcheck_gate_rolls_back_a_broken_media_through_a_stand_in_bootc() {
    let guest = Appliance::prepare(Mode::Rollback).expect("prepare the guest");
    guest.break_media().expect("break media");
    let out = guest.boot(BOOT_TIMEOUT).expect("boot the guest");
    let f = facts(&out);
    let ctx = format!("driver output:\n{}\nconsole:\n{}", out.stdout, out.console);
    assert_eq!(out.status, 0, "{ctx}");
    // The driver runs after the health check, so only in the boot that passed it: the broken
    // boot rebooted before the driver's turn.
    assert_eq!(fact(&f, "boot1.healthcheck"), "active/success", "{ctx}");
    assert_eq!(
        guest.bootc_calls(),
        "rollback\n",
        "the stand-in bootc's calls"
    );
    // The journal (persistent, both boots): the first boot's check failed at its stream step,
    // said why and asked for the rollback; the boot after it, with the previous media, passed.
    let journal = guest.journal();
    let check = healthcheck_messages(&journal);
    let failed = check
        .iter()
        .find(|(_, m)| m.starts_with("punktfunk health check FAILED: stream: "))
        .unwrap_or_else(|| panic!("no failure with its reason in the journal: {check:#?}"));
    assert!(
        check.iter().any(|(b, m)| *b == failed.0
            && m == "rolling back to the previous image: bootc rollback, then reboot"),
        "{check:#?}"
    );
    // Not at the first failure: the gate checked the broken boot 3 times, 15 s apart.
    for said in [
        "check 1 of 3 failed: stream: ",
        "check 2 of 3 failed: stream: ",
        "all 3 checks failed",
    ] {
        assert!(
            check
                .iter()
                .any(|(b, m)| *b == failed.0 && m.starts_with(said)),
            "the broken boot's check never said {said:?}: {check:#?}"
        );
    }
    let good = check
        .iter()
        .find(|(_, m)| m.starts_with("boot is good"))
        .unwrap_or_else(|| panic!("no good boot after the rollback: {check:#?}"));
    assert_ne!(
        good.0, failed.0,
        "the good verdict must come from the next boot"
    );
    // The pass cleared the gate's record of its rollback (it stops a second one in a row).
    assert!(
        !guest
            .root()
            .join("var/lib/punktfunk/healthcheck-rolled-back")
            .exists()
    );
    assert!(
        journal.iter().any(|e| e["_BOOT_ID"] == failed.0.as_str()
            && e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("System is rebooting"))),
        "the broken boot did not reboot"
    );
}

#[test]
fn guest_packages_are_derived_from_the_binaries_and_the_justfile() {
    let pkgs = punktfunk_tests::appliance::runtime_packages();
    eprintln!("{}", pkgs.join(" "));
    // From the binaries' shared libraries (ldd + dpkg -S on this host) ...
    for p in [
        "libc6",
        "libgstreamer1.0-0",
        "libgstreamer-plugins-base1.0-0",
        "libopus0",
    ] {
        assert!(pkgs.iter().any(|x| x == p), "{p} missing from {pkgs:?}");
    }
    // ... and the run-time GStreamer plugins and PipeWire of the Justfile's apt_packages.
    for p in [
        "gstreamer1.0-plugins-ugly",
        "gstreamer1.0-libav",
        "pipewire",
        "wireplumber",
    ] {
        assert!(pkgs.iter().any(|x| x == p), "{p} missing from {pkgs:?}");
    }
    assert!(
        !pkgs
            .iter()
            .any(|p| p.ends_with("-dev") || p == "gstreamer1.0-tools"),
        "build-only packages in the guest: {pkgs:?}"
    );
}
