//! `punktfunkctl doctor [--json]`: what is wrong with this host, and what to do about it.
//!
//! Two halves: [`facts`] gathers what the machine says (daemons' Health, media's
//! Capabilities, device access, sysctls, firewalld, compositors, PipeWire, mDNS, pairing,
//! clock source) without judging; [`checks`] turns those facts into [`Check`]s, each a small
//! pure function tested without the machine. The JSON schema is in docs/doctor.md.

pub mod checks;
pub mod facts;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

/// The value of `schema` in the JSON report; bumped when a field changes meaning.
pub const SCHEMA: &str = "punktfunk.doctor/1";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works as it should.
    Pass,
    /// Works, but not as well as it could, or cannot be verified from here.
    Warn,
    /// Broken: streaming (or part of it) will not work until fixed.
    Fail,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable machine name, e.g. `daemon.media`, `codec.h264`, `device.uinput`.
    pub id: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found, one line.
    pub detail: String,
    /// What to do, one line; `None` on a pass.
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn pass(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            verdict: Verdict::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn warn(
        id: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            verdict: Verdict::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn fail(
        id: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            verdict: Verdict::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Counts per verdict.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Checks that passed.
    pub pass: usize,
    /// Checks that warned.
    pub warn: usize,
    /// Checks that failed.
    pub fail: usize,
}

/// The whole report (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// True when no check failed (warnings allowed); the exit code is 0 exactly then.
    pub ok: bool,
    /// Counts per verdict.
    pub counts: Counts,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Wraps the checks and counts them.
    pub fn new(checks: Vec<Check>) -> Self {
        let mut counts = Counts::default();
        for c in &checks {
            match c.verdict {
                Verdict::Pass => counts.pass += 1,
                Verdict::Warn => counts.warn += 1,
                Verdict::Fail => counts.fail += 1,
            }
        }
        Self {
            schema: SCHEMA,
            ok: counts.fail == 0,
            counts,
            checks,
        }
    }
}

/// Runs every check and prints the report; exit 1 on any fail.
/// `runtime_dir` is the daemons' socket directory, or why there is none (the checks that need
/// it fail with that reason; the others still run).
pub async fn run(runtime_dir: Result<PathBuf, String>, timeout: Duration, json: bool) -> ExitCode {
    let facts = facts::gather(runtime_dir, timeout).await;
    let report = Report::new(checks::all(&facts));
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("punktfunkctl: cannot encode JSON: {e}");
                return ExitCode::from(70);
            }
        }
    } else {
        print_human(&report);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_human(report: &Report) {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &report.checks {
        let tag = match c.verdict {
            Verdict::Pass => "pass",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        println!("{tag}  {:<width$}  {}", c.id, c.detail);
        if let Some(fix) = &c.fix {
            println!("      {:<width$}  -> {fix}", "");
        }
    }
    println!(
        "{} passed, {} warnings, {} failed",
        report.counts.pass, report.counts.warn, report.counts.fail
    );
}
