//! `--frames-out`: one CSV row per received video frame, for plotting elsewhere.

use anyhow::Context;
use std::io::{self, Write};
use std::path::Path;

/// The header row; the README's stream-report section names the same columns.
pub const HEADER: &str = "index,keyframe,discontinuity,bytes,capture_to_reassembled_us,encode_us,\
capture_to_handed_us,handed_to_first_packet_us,first_packet_to_reassembled_us,decode_us,counter";

/// One received frame. Times in µs (skew-corrected where host and client clocks meet);
/// `None` is an empty cell: the host did not stamp it, or the frame was not decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameRow {
    pub index: u64,
    pub keyframe: bool,
    pub discontinuity: bool,
    pub bytes: u64,
    pub capture_to_reassembled_us: Option<f64>,
    pub encode_us: Option<f64>,
    pub capture_to_handed_us: Option<f64>,
    pub handed_to_first_packet_us: Option<f64>,
    pub first_packet_to_reassembled_us: Option<f64>,
    pub decode_us: Option<f64>,
    pub counter: Option<u32>,
}

fn us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_default()
}

/// Writes the header and one line per row.
pub fn write_csv(mut w: impl Write, rows: &[FrameRow]) -> io::Result<()> {
    writeln!(w, "{HEADER}")?;
    for r in rows {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.index,
            u8::from(r.keyframe),
            u8::from(r.discontinuity),
            r.bytes,
            us(r.capture_to_reassembled_us),
            us(r.encode_us),
            us(r.capture_to_handed_us),
            us(r.handed_to_first_packet_us),
            us(r.first_packet_to_reassembled_us),
            us(r.decode_us),
            r.counter.map(|c| c.to_string()).unwrap_or_default(),
        )?;
    }
    w.flush()
}

/// Writes the CSV file at `path`.
pub fn write_file(path: &Path, rows: &[FrameRow]) -> anyhow::Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    write_csv(io::BufWriter::new(f), rows)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_one_row_per_frame() {
        let rows = vec![
            FrameRow {
                index: 0,
                keyframe: true,
                bytes: 5000,
                capture_to_reassembled_us: Some(1234.56),
                encode_us: Some(800.0),
                capture_to_handed_us: Some(900.0),
                handed_to_first_packet_us: Some(-12.5),
                first_packet_to_reassembled_us: Some(300.0),
                decode_us: Some(2000.04),
                counter: Some(7),
                ..Default::default()
            },
            FrameRow {
                index: 3,
                discontinuity: true,
                bytes: 10,
                ..Default::default()
            },
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("frames.csv");
        write_file(&path, &rows).expect("write");
        let text = std::fs::read_to_string(&path).expect("read back");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "header + one row per frame");
        assert_eq!(lines[0], HEADER);
        let columns = HEADER.split(',').count();
        assert_eq!(columns, 11);
        assert!(lines.iter().all(|l| l.split(',').count() == columns));
        assert_eq!(
            lines[1],
            "0,1,0,5000,1234.6,800.0,900.0,-12.5,300.0,2000.0,7"
        );
        assert_eq!(lines[2], "3,0,1,10,,,,,,,");
    }
}
