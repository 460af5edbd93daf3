//! Every decoder of bytes the kernel or a game hands punktfunk-input: `/dev/uhid` records and
//! the DualSense output report with its trigger effects, then the change tracker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use punktfunk_hid::{dualsense, uhid};

fuzz_target!(|data: &[u8]| {
    if let Ok(uhid::Event::Output { data: report, .. }) = uhid::decode(data) {
        let _ = dualsense::parse_output_report(report);
    }
    if let Ok(r) = dualsense::parse_output_report(data) {
        let _ = r.right_trigger.map(|t| t.decode());
        let _ = r.left_trigger.map(|t| t.decode());
        let mut tracker = dualsense::FeedbackTracker::default();
        let mut out = Vec::new();
        tracker.handle(&r, &mut out);
        assert!(out.len() <= 5);
    }
});
