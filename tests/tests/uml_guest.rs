//! The User-Mode-Linux guest harness (`punktfunk_tests::uml`) proves what other tests rely on:
//! a guest boots our kernel and hands back exit codes and output, a failure inside is reported
//! with its output, the kernel has uinput, uhid, fq and netem, and a guest that overruns its
//! timeout is killed with every process it spawned.

use std::time::Duration;

use punktfunk_tests::uml::{Guest, Kernel, UmlError};

#[test]
fn guest_boots_its_own_kernel_and_returns_exit_code_and_output() {
    let out = Guest::new()
        .env("PF_GREETING", "hello from the guest")
        .run_script("echo \"$PF_GREETING\"; uname -r; echo \"pid1=$(cat /proc/1/comm)\"; exit 7")
        .expect("guest ran");
    eprintln!("boot, script and power-off took {:?}", out.elapsed);
    assert_eq!(
        out.status, 7,
        "exit code of the script; output:\n{}",
        out.stdout
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"hello from the guest"),
        "output:\n{}",
        out.stdout
    );
    // The guest runs the UML 6.1 kernel, not the host's.
    assert!(
        lines.get(1).is_some_and(|r| r.starts_with("6.1.")),
        "uname -r inside: {:?}",
        lines.get(1)
    );
    assert!(
        lines.get(2).is_some_and(|l| l.starts_with("pid1=")),
        "output:\n{}",
        out.stdout
    );
}

#[test]
fn nonzero_exit_inside_is_reported_as_failure_with_its_output() {
    let out = Guest::new()
        .run_script("echo before the failure; echo to stderr >&2; false; echo never printed")
        .expect("guest ran");
    assert_eq!(out.status, 1, "output:\n{}", out.stdout);
    assert!(!out.success());
    assert!(
        out.stdout.contains("before the failure"),
        "output:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("to stderr"),
        "stderr is captured too:\n{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("never printed"),
        "scripts run with -e:\n{}",
        out.stdout
    );
    let panic = std::panic::catch_unwind(|| {
        out.assert_success();
    })
    .expect_err("assert_success panics on a nonzero status");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("exited with 1"), "panic message: {msg}");
    assert!(
        msg.contains("before the failure"),
        "panic message carries the output: {msg}"
    );
}

#[test]
fn dev_uinput_and_dev_uhid_exist_and_a_uinput_key_a_round_trips() {
    let helper = env!("CARGO_BIN_EXE_pf-uml-uinput");
    let out = Guest::new()
        .run_script(&format!(
            "test -c /dev/uinput; test -c /dev/uhid; ls -l /dev/uinput /dev/uhid; exec '{helper}' key-roundtrip"
        ))
        .expect("guest ran");
    out.assert_success();
    assert!(
        out.stdout
            .contains("KEY_A press and release read back from /dev/input/event"),
        "output:\n{}",
        out.stdout
    );
}

#[test]
fn fq_and_netem_qdiscs_attach_to_loopback() {
    let out = Guest::new()
        .run_script(
            "tc qdisc add dev lo root fq\n\
             tc qdisc show dev lo\n\
             tc qdisc replace dev lo root netem delay 10ms loss 1%\n\
             tc qdisc show dev lo\n",
        )
        .expect("guest ran");
    out.assert_success();
    let shown: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("qdisc "))
        .collect();
    assert_eq!(shown.len(), 2, "two qdisc lines expected:\n{}", out.stdout);
    assert!(
        shown[0].starts_with("qdisc fq "),
        "first qdisc: {}",
        shown[0]
    );
    assert!(
        shown[1].starts_with("qdisc netem ")
            && shown[1].contains("delay 10ms")
            && shown[1].contains("loss 1%"),
        "second qdisc: {}",
        shown[1]
    );
}

/// A unique marker for the kernel command line: every UML host process of the guest carries it
/// in its cmdline.
fn marker(what: &str) -> String {
    format!(
        "pf.test={what}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A guest past its timeout is killed with everything it spawned, and the error says where it
/// was: the run's output so far, its host processes, and (over the mconsole) that the guest
/// kernel was alive, with its dump of blocked tasks.
#[test]
fn guest_past_its_timeout_is_killed_with_every_process_it_spawned_and_says_where_it_was() {
    let marker = marker("timeout");
    let err = Guest::new()
        .timeout(Duration::from_secs(5))
        .kernel_arg(&marker)
        .run_script("echo started; sleep 1 & sleep 1 & sleep 1000")
        .expect_err("the guest must not finish");
    let UmlError::Timeout {
        output,
        console,
        diagnosis,
        ..
    } = &err
    else {
        panic!("expected a timeout, got: {err}");
    };
    assert_eq!(output.trim(), "started", "{err}");
    // The kernel's host process and at least one guest address space, each with its state.
    let kernel = Kernel::ensure().expect("the kernel is cached");
    let listed = diagnosis
        .lines()
        .filter(|l| l.contains(&*kernel.path().to_string_lossy()))
        .count();
    assert!(listed >= 2, "{err}");
    assert!(!diagnosis.contains("did not answer"), "{err}");
    // The guest kernel's answer to `sysrq w` (no task is blocked: the script sleeps
    // interruptibly).
    assert!(
        console.contains("sysrq: Show Blocked State"),
        "no dump of blocked tasks in the console:\n{console}"
    );
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "UML processes left behind: {left:?}");
}

/// A guest whose kernel stops answering (here its host process is SIGSTOPped once the script
/// has started: as unresponsive as the kernels seen spinning in CI) is killed as wedged after
/// `wedged_after`, long before its timeout, and booted once more, since the harness's run starts
/// from scratch; the second wedge is returned, with the run's output and the stopped process.
#[test]
fn a_wedged_guest_kernel_is_killed_early_and_booted_once_more() {
    let marker = marker("wedge");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = {
        let (marker, done) = (marker.clone(), done.clone());
        std::thread::spawn(move || stop_each_guest_once_started(&marker, &done))
    };
    let err = Guest::new()
        .timeout(Duration::from_secs(300))
        .wedged_after(Duration::from_secs(6))
        .kernel_arg(&marker)
        .run_script("echo started; sleep 1000")
        .expect_err("a stopped guest must not finish");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let stopped = stopper.join().expect("the stopper thread");
    let UmlError::Wedged {
        output, diagnosis, ..
    } = &err
    else {
        panic!("expected a wedged guest, got: {err}");
    };
    assert_eq!(stopped.len(), 2, "boots stopped: {stopped:?}; {err}");
    assert_eq!(output.trim(), "started", "{err}");
    let last = stopped[1];
    assert!(
        diagnosis
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{last} T "))),
        "the stopped kernel process is not listed as stopped: {err}"
    );
}

/// Stops (SIGSTOP) each guest kernel started with `marker` on its command line, once its script
/// has written "started" to the share; returns their pids in order.
fn stop_each_guest_once_started(marker: &str, done: &std::sync::atomic::AtomicBool) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut stopped = Vec::new();
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let stat = punktfunk_tests::uml::proc_stat(pid).unwrap_or_default();
            let ppid = stat.get(1).map_or("", String::as_str);
            if stopped.contains(&pid) || ppid != me || !args.iter().any(|a| a == marker) {
                continue;
            }
            let share = args.iter().find_map(|a| a.strip_prefix("pf.share="));
            let started = share.is_some_and(|s| {
                std::fs::read_to_string(std::path::Path::new(s).join("output"))
                    .is_ok_and(|o| o.contains("started"))
            });
            if started && let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::STOP);
                stopped.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stopped
}

/// A multi-threaded process stopped and then aborted dumps its core over hostfs, three times,
/// and the guest powers off. At kernel stack order 3 this wedged the guest kernel in 5 of 7
/// boots (a signal's register save area overran the stack: `kernel.config-options`); the
/// systemd appliance does the same when `WatchdogSec=` aborts a stopped daemon.
#[test]
fn a_stopped_multithreaded_process_dumps_core_and_the_guest_stays_up() {
    let out = Guest::new()
        .mem("512M")
        .run_script(
            r#"ulimit -c unlimited
for i in 1 2 3; do
    python3 -c '
import threading, time
for _ in range(6):
    threading.Thread(target=lambda: [time.sleep(0.001) for _ in iter(int, 1)], daemon=True).start()
time.sleep(100)' &
    p=$!
    sleep 2
    kill -STOP $p; kill -ABRT $p; kill -CONT $p
    rc=0; wait $p || rc=$?
    echo "dump $i rc=$rc"
done
stat -c 'core %s bytes' core"#,
        )
        .expect("the UML guest ran");
    out.assert_success();
    for i in 1..=3 {
        assert!(
            out.stdout.contains(&format!("dump {i} rc=134")),
            "dump {i} (SIGABRT, 128 + 6): {}",
            out.stdout
        );
    }
    let core = std::fs::metadata(out.share.join("core")).expect("a core file in the share");
    assert!(core.len() > 0, "{}", out.stdout);
}

#[test]
fn running_guest_kernel_has_every_option_of_kernel_config_options_and_hid_playstation() {
    let options = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/uml/kernel.config-options"
    ))
    .expect("kernel.config-options");
    let wanted: Vec<&str> = options
        .lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .collect();
    assert!(
        wanted.len() > 50,
        "the options file lists the kernel's options"
    );
    let out = Guest::new()
        .run_script("test -d /sys/bus/hid/drivers/playstation; echo playstation driver registered; zcat /proc/config.gz")
        .expect("guest ran");
    out.assert_success();
    assert!(out.stdout.contains("playstation driver registered"));
    let config: std::collections::HashSet<&str> = out.stdout.lines().collect();
    let missing: Vec<&&str> = wanted.iter().filter(|l| !config.contains(**l)).collect();
    assert!(
        missing.is_empty(),
        "options missing from the running kernel: {missing:?}"
    );
}

#[test]
fn two_guests_run_at_once_each_with_its_own_share() {
    let runs: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                Guest::new()
                    .mem("256M")
                    .run_script(&format!("echo guest {i} > mine; ls; cat mine"))
                    .expect("guest ran")
            })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.join().expect("guest thread");
        out.assert_success();
        assert!(
            out.stdout.ends_with(&format!("guest {i}\n")),
            "output:\n{}",
            out.stdout
        );
        let mine =
            std::fs::read_to_string(out.share.join("mine")).expect("the file the script wrote");
        assert_eq!(mine, format!("guest {i}\n"));
    }
}
