//! The checks: each a pure function from gathered [`Facts`] to [`Check`]s, so every verdict and
//! every fix line is tested here without the machine.

use super::Check;
#[cfg(test)]
use super::Verdict;
use super::facts::{
    CodecFact, CompositorFact, DaemonFact, DeviceAccess, FIREWALLD_SERVICE, Facts, FirewallFact,
    MdnsFact, SOCKET_BUFFER_BYTES,
};

/// Every check, in the order the report lists them.
pub fn all(f: &Facts) -> Vec<Check> {
    let mut out: Vec<Check> = f.daemons.iter().map(daemon).collect();
    out.push(target(&f.target));
    out.extend(codecs(&f.codecs));
    out.extend(f.devices.iter().map(|(p, a)| device(p, *a)));
    out.extend(f.sysctls.iter().map(|(n, v)| sysctl(n, v)));
    out.push(firewall(&f.firewall));
    out.push(compositors(&f.compositors));
    out.push(pipewire(&f.pipewire.0, &f.pipewire.1));
    out.push(mdns(&f.mdns.0, &f.mdns.1));
    out.push(pairing(&f.paired, transport_status(&f.daemons)));
    out.push(clocksource(&f.clocksource));
    out
}

/// A daemon serves (its Health says so).
pub fn daemon(d: &DaemonFact) -> Check {
    let id = format!("daemon.{}", d.name);
    let unit = format!("punktfunk-{}.service", d.name);
    match &d.health {
        Ok((true, status)) => Check::pass(id, format!("serving: {status}")),
        Ok((false, status)) => Check::fail(
            id,
            format!("answers but is not serving: {status}"),
            format!("see why with: journalctl --user -u {unit}"),
        ),
        Err(e) => Check::fail(
            id,
            e.clone(),
            format!(
                "start it with: systemctl --user start punktfunk.target (then: journalctl --user -u {unit})"
            ),
        ),
    }
}

/// `punktfunk.target` is enabled for this user (the image's preset does it).
pub fn target(state: &Result<String, String>) -> Check {
    const ID: &str = "units.enabled";
    const FIX: &str = "systemctl --user enable --now punktfunk.target";
    match state.as_deref() {
        Ok(s @ ("enabled" | "enabled-runtime" | "static" | "indirect" | "alias")) => {
            Check::pass(ID, format!("punktfunk.target is {s}"))
        }
        Ok("masked") => Check::fail(
            ID,
            "punktfunk.target is masked",
            format!("systemctl --user unmask punktfunk.target && {FIX}"),
        ),
        Ok(s) => Check::fail(ID, format!("punktfunk.target is {s}"), FIX),
        Err(e) => Check::fail(
            ID,
            format!("cannot ask the user's service manager: {e}"),
            format!("run doctor as the streaming user in a systemd --user session, then: {FIX}"),
        ),
    }
}

/// Per codec: the encoder rung media would use, and whether it is hardware. H.264 is what
/// every client decodes, so no H.264 encoder is a fail; no HEVC encoder is a warning (install
/// one and clients get the better codec); any other codec (AV1) is optional: its absence is
/// reported, not judged, because no package the user could install changes it today.
pub fn codecs(caps: &Result<Vec<CodecFact>, String>) -> Vec<Check> {
    let caps = match caps {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "codecs",
                format!("cannot ask media which encoders work: {e}"),
                "start punktfunk-media (systemctl --user start punktfunk.target), then run doctor again",
            )];
        }
    };
    if caps.is_empty() {
        return vec![Check::fail(
            "codecs",
            "punktfunk-media reports no codecs",
            "update punktfunk (media and punktfunkctl come from the same image)",
        )];
    }
    caps.iter().map(codec).collect()
}

fn codec(c: &CodecFact) -> Check {
    let id = format!("codec.{}", c.codec);
    if !c.available {
        let detail = format!("no {} encoder works on this machine", c.codec);
        let fix = "install the GPU's video driver (VA-API, NVENC) or the GStreamer plugins of the software rung (x264/x265)";
        return match c.codec.as_str() {
            "h264" => Check::fail(id, detail, fix),
            "hevc" => Check::warn(
                id,
                detail,
                format!("clients fall back to H.264; to offer hevc: {fix}"),
            ),
            _ => Check::pass(id, format!("{detail}: not offered (optional)")),
        };
    }
    let kind = if c.hardware { "hardware" } else { "software" };
    Check::pass(id, format!("{} ({kind})", c.encoder))
}

/// Read-write access to a device node punktfunk-input needs.
pub fn device(path: &str, access: DeviceAccess) -> Check {
    let name = path.rsplit('/').next().unwrap_or(path);
    let id = format!("device.{name}");
    match access {
        DeviceAccess::Granted => Check::pass(id, format!("{path} is readable and writable")),
        DeviceAccess::Missing => Check::fail(
            id,
            format!("{path} does not exist"),
            format!(
                "load the module: sudo modprobe {name} (the image loads it at boot: /usr/lib/modules-load.d/punktfunk.conf)"
            ),
        ),
        DeviceAccess::Denied { gid, mode } => Check::fail(
            id,
            format!("{path} is not read-write for this user (group {gid}, mode {mode:04o})"),
            "join group input (sudo usermod -aG input $USER, then log in again); udev/60-punktfunk.rules gives that group the node",
        ),
    }
}

/// A socket-buffer ceiling is at least what the data plane asks for.
pub fn sysctl(name: &str, value: &Result<u64, String>) -> Check {
    let id = format!("sysctl.{name}");
    let fix = format!(
        "sudo sysctl -w {name}={SOCKET_BUFFER_BYTES} (permanently: /usr/lib/sysctl.d/60-punktfunk.conf, shipped in the image)"
    );
    match value {
        Ok(v) if *v >= SOCKET_BUFFER_BYTES => Check::pass(id, format!("{name} = {v}")),
        Ok(v) => Check::fail(
            id,
            format!(
                "{name} = {v}, below {SOCKET_BUFFER_BYTES}: video bursts are dropped at high bitrates"
            ),
            fix,
        ),
        Err(e) => Check::fail(id, e.clone(), fix),
    }
}

/// firewalld lets our ports in.
pub fn firewall(f: &FirewallFact) -> Check {
    const ID: &str = "firewall";
    let add = format!(
        "sudo firewall-cmd --permanent --add-service={FIREWALLD_SERVICE} && sudo firewall-cmd --reload"
    );
    match f {
        FirewallFact::Running {
            service_enabled: true,
        } => Check::pass(ID, format!("firewalld allows service {FIREWALLD_SERVICE}")),
        FirewallFact::Running {
            service_enabled: false,
        } => Check::fail(
            ID,
            format!(
                "firewalld runs and does not allow service {FIREWALLD_SERVICE}: clients cannot reach this host"
            ),
            add,
        ),
        FirewallFact::NotRunning => Check::pass(
            ID,
            "firewalld is installed but not running: it filters nothing",
        ),
        FirewallFact::NotInstalled => Check::warn(
            ID,
            "no firewalld: cannot tell whether another firewall blocks our ports",
            "allow UDP 9777, 47998-48000 and TCP 47984, 47989, 48010 in your firewall (the image uses firewalld's punktfunk service)",
        ),
        FirewallFact::Error(e) => Check::warn(ID, e.clone(), add),
    }
}

/// At least one compositor backend is installed at or above its floor.
pub fn compositors(found: &[CompositorFact]) -> Check {
    const ID: &str = "compositor";
    let mut usable = Vec::new();
    let mut notes = Vec::new();
    for c in found {
        let b = c.backend;
        match &c.version {
            Ok(v) if *v >= b.min => usable.push(format!("{} {v}", b.backend)),
            Ok(v) => notes.push(format!("{} {v} < {}", b.backend, b.min)),
            Err(e) if c.path.is_none() => notes.push(format!("{} {e}", b.backend)),
            Err(e) => notes.push(format!("{}: {e}", b.backend)),
        }
    }
    let detail = |head: String| {
        if notes.is_empty() {
            head
        } else {
            format!("{head}; {}", notes.join(", "))
        }
    };
    if usable.is_empty() {
        Check::fail(
            ID,
            detail("no usable compositor backend".into()),
            "install gamescope (Bazzite ships it) or update KWin, mutter or sway to at least the version named",
        )
    } else {
        Check::pass(ID, detail(format!("usable: {}", usable.join(", "))))
    }
}

/// PipeWire's socket answers.
pub fn pipewire(socket: &str, result: &Result<(), String>) -> Check {
    const ID: &str = "pipewire";
    match result {
        Ok(()) => Check::pass(ID, format!("PipeWire answers on {socket}")),
        Err(e) => Check::fail(
            ID,
            format!("PipeWire is not reachable ({socket}): {e}"),
            "systemctl --user enable --now pipewire.socket wireplumber.service",
        ),
    }
}

/// Transport's own mDNS advert is visible.
pub fn mdns(instance: &str, seen: &MdnsFact) -> Check {
    const ID: &str = "mdns";
    match seen {
        MdnsFact::Seen(i) => Check::pass(ID, format!("advertised as \"{i}\" (_punktfunk._udp)")),
        MdnsFact::NotSeen(others) => {
            let others = if others.is_empty() {
                "no punktfunk host at all".to_string()
            } else {
                format!("only {}", others.join(", "))
            };
            Check::warn(
                ID,
                format!("this host (\"{instance}\") is not advertised: saw {others}"),
                "clients must be given the address; to advertise: set mdns = true (and no host_name override) in ~/.config/punktfunk/transport.toml, allow firewalld's mdns service",
            )
        }
        MdnsFact::Error(e) => Check::warn(
            ID,
            format!("cannot browse mDNS: {e}"),
            "check that a network interface with multicast is up",
        ),
    }
}

/// The status line of transport, when it answered.
fn transport_status(daemons: &[DaemonFact]) -> Option<&str> {
    daemons
        .iter()
        .find(|d| d.name == "transport")
        .and_then(|d| d.health.as_ref().ok())
        .map(|(_, s)| s.as_str())
}

/// Pairing: some client paired, and the host is not open to unpaired clients.
pub fn pairing(paired: &Result<usize, String>, transport_status: Option<&str>) -> Check {
    const ID: &str = "pairing";
    let open = transport_status.is_some_and(|s| s.contains("OPEN"));
    match paired {
        Err(e) => Check::fail(
            ID,
            format!("cannot list paired clients: {e}"),
            "start punktfunk-transport (systemctl --user start punktfunk.target)",
        ),
        Ok(_) if open => Check::warn(
            ID,
            "pairing is off: any client on the network may stream",
            "set pairing = \"required\" in ~/.config/punktfunk/transport.toml",
        ),
        Ok(0) => Check::warn(
            ID,
            "no client is paired yet",
            "punktfunkctl pair, then enter the PIN on the client",
        ),
        Ok(n) => Check::pass(ID, format!("{n} paired client(s), pairing required")),
    }
}

/// Clock sources whose reads are syscalls or port I/O (microseconds each): every frame stamps
/// the clock several times.
pub const SLOW_CLOCKSOURCES: [&str; 5] = ["hpet", "acpi_pm", "jiffies", "refined-jiffies", "pit"];

/// The kernel's clock source is not a slow one.
pub fn clocksource(cs: &Result<String, String>) -> Check {
    const ID: &str = "clocksource";
    match cs {
        Ok(s) if SLOW_CLOCKSOURCES.contains(&s.as_str()) => Check::warn(
            ID,
            format!("clock source {s} is slow to read: frame timing costs CPU"),
            "check `dmesg | grep -i tsc` (an unstable TSC falls back to hpet); a BIOS update or tsc=reliable may help",
        ),
        Ok(s) => Check::pass(ID, format!("clock source {s}")),
        Err(e) => Check::warn(
            ID,
            e.clone(),
            "read /sys/devices/system/clocksource/clocksource0/current_clocksource by hand",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_common::backends::{BackendKind, Version, floor};

    fn healthy() -> Facts {
        Facts {
            daemons: ["session", "media", "transport", "input"]
                .into_iter()
                .map(|name| DaemonFact {
                    name,
                    health: Ok((true, "idle".into())),
                })
                .collect(),
            target: Ok("enabled".into()),
            codecs: Ok(vec![CodecFact {
                codec: "h264".into(),
                available: true,
                hardware: false,
                encoder: "x264enc".into(),
            }]),
            devices: vec![
                ("/dev/uinput".into(), DeviceAccess::Granted),
                ("/dev/uhid".into(), DeviceAccess::Granted),
            ],
            sysctls: vec![("net.core.rmem_max".into(), Ok(SOCKET_BUFFER_BYTES))],
            firewall: FirewallFact::Running {
                service_enabled: true,
            },
            compositors: vec![CompositorFact {
                backend: *floor(BackendKind::Sway),
                path: Some("/usr/bin/sway".into()),
                version: Ok(Version::new(1, 7, 0)),
            }],
            pipewire: ("/run/user/1000/pipewire-0".into(), Ok(())),
            mdns: ("box".into(), MdnsFact::Seen("box".into())),
            paired: Ok(1),
            clocksource: Ok("tsc".into()),
        }
    }

    #[test]
    fn a_healthy_host_passes_everything() {
        let checks = all(&healthy());
        assert!(
            checks.iter().all(|c| c.verdict == Verdict::Pass),
            "{checks:#?}"
        );
        assert!(checks.iter().all(|c| c.fix.is_none()));
        assert!(crate::doctor::Report::new(checks).ok);
    }

    #[test]
    fn every_warning_and_failure_names_a_fix() {
        let mut f = healthy();
        f.daemons[1].health = Err("no answer".into());
        f.target = Err("Failed to connect to bus".into());
        f.codecs = Ok(vec![
            CodecFact {
                codec: "h264".into(),
                available: false,
                hardware: false,
                encoder: String::new(),
            },
            CodecFact {
                codec: "av1".into(),
                available: false,
                hardware: false,
                encoder: String::new(),
            },
        ]);
        f.devices[0].1 = DeviceAccess::Missing;
        f.devices[1].1 = DeviceAccess::Denied {
            gid: 0,
            mode: 0o600,
        };
        f.sysctls[0].1 = Ok(212_992);
        f.firewall = FirewallFact::NotInstalled;
        f.compositors[0].version = Ok(Version::new(1, 6, 0));
        f.pipewire.1 = Err("connection refused".into());
        f.mdns.1 = MdnsFact::NotSeen(vec![]);
        f.paired = Ok(0);
        f.clocksource = Ok("hpet".into());
        let checks = all(&f);
        let verdict = |id: &str| checks.iter().find(|c| c.id == id).unwrap().verdict;
        for id in [
            "daemon.media",
            "units.enabled",
            "codec.h264",
            "device.uinput",
            "device.uhid",
            "sysctl.net.core.rmem_max",
            "compositor",
            "pipewire",
        ] {
            assert_eq!(verdict(id), Verdict::Fail, "{id}");
        }
        assert_eq!(
            verdict("codec.av1"),
            Verdict::Pass,
            "optional codecs are reported, not judged"
        );
        for id in ["firewall", "mdns", "pairing", "clocksource"] {
            assert_eq!(verdict(id), Verdict::Warn, "{id}");
        }
        for c in checks.iter().filter(|c| c.verdict != Verdict::Pass) {
            let fix = c.fix.as_deref().unwrap_or("");
            assert!(
                !fix.is_empty() && !fix.contains('\n'),
                "{}: fix {fix:?}",
                c.id
            );
            assert!(!c.detail.contains('\n'), "{}: one line", c.id);
        }
        assert!(!crate::doctor::Report::new(checks).ok);
    }

    #[test]
    fn fixes_say_the_command_for_the_problem() {
        assert!(
            sysctl("net.core.wmem_max", &Ok(4_194_304))
                .fix
                .unwrap()
                .contains("sysctl -w net.core.wmem_max=33554432")
        );
        assert!(
            device("/dev/uhid", DeviceAccess::Missing)
                .fix
                .unwrap()
                .contains("modprobe uhid")
        );
        assert!(
            target(&Ok("masked".into()))
                .fix
                .unwrap()
                .starts_with("systemctl --user unmask punktfunk.target")
        );
        assert!(
            firewall(&FirewallFact::Running {
                service_enabled: false
            })
            .fix
            .unwrap()
            .contains("--add-service=punktfunk")
        );
    }

    #[test]
    fn hardware_is_named_h264_missing_fails_and_hevc_missing_warns() {
        let hw = codec(&CodecFact {
            codec: "hevc".into(),
            available: true,
            hardware: true,
            encoder: "nvh265enc".into(),
        });
        assert_eq!(hw.verdict, Verdict::Pass);
        assert_eq!(hw.detail, "nvh265enc (hardware)");
        let no_hevc = codec(&CodecFact {
            codec: "hevc".into(),
            available: false,
            hardware: false,
            encoder: String::new(),
        });
        assert_eq!(no_hevc.verdict, Verdict::Warn);
        assert!(
            no_hevc
                .fix
                .unwrap()
                .starts_with("clients fall back to H.264")
        );
        assert_eq!(codecs(&Err("down".into()))[0].verdict, Verdict::Fail);
        assert_eq!(codecs(&Ok(vec![]))[0].verdict, Verdict::Fail);
    }

    #[test]
    fn one_usable_backend_is_enough_and_the_others_are_listed() {
        let c = compositors(&[
            CompositorFact {
                backend: *floor(BackendKind::Gamescope),
                path: None,
                version: Err("not installed".into()),
            },
            CompositorFact {
                backend: *floor(BackendKind::Kwin),
                path: Some("/usr/bin/kwin_wayland".into()),
                version: Ok(Version::new(5, 26, 0)),
            },
            CompositorFact {
                backend: *floor(BackendKind::Mutter),
                path: Some("/usr/bin/mutter".into()),
                version: Ok(Version::new(43, 8, 0)),
            },
        ]);
        assert_eq!(c.verdict, Verdict::Pass);
        assert_eq!(
            c.detail,
            "usable: mutter 43.8.0; gamescope not installed, kwin 5.26.0 < 5.27.0"
        );
        assert_eq!(compositors(&[]).verdict, Verdict::Fail);
    }

    #[test]
    fn an_open_host_warns_even_with_clients() {
        let c = pairing(&Ok(3), Some("idle (OPEN: unpaired clients may stream)"));
        assert_eq!(c.verdict, Verdict::Warn);
        assert_eq!(
            pairing(&Ok(3), Some("idle (pairing required)")).verdict,
            Verdict::Pass
        );
        assert_eq!(pairing(&Err("down".into()), None).verdict, Verdict::Fail);
    }

    #[test]
    fn slow_clock_sources_warn() {
        assert_eq!(clocksource(&Ok("tsc".into())).verdict, Verdict::Pass);
        assert_eq!(clocksource(&Ok("acpi_pm".into())).verdict, Verdict::Warn);
    }
}
