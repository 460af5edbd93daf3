//! `/dev/uhid` records (`struct uhid_event` of `linux/uhid.h`), encoded and decoded.
//!
//! UHID is a plain `read`/`write` protocol of fixed, packed records — no ioctl. We encode them
//! here instead of using the `uhid-virt` crate because its only backend (`uhidrs-sys`) runs
//! bindgen at build time, which needs libclang (not on our build machines), and its device type
//! hides the file descriptor we must poll. The layout below is the kernel's ABI, stable since
//! Linux 3.15 (the `*2` requests).
//!
//! A record is a `u32` type followed by the request's union; every field is little-endian on the
//! machines we run on (the ABI is host-endian; x86-64 and aarch64 are little-endian).

use thiserror::Error;

/// Size of `struct uhid_event`: the type plus its largest member, `uhid_create2_req`.
pub const EVENT_SIZE: usize = 4 + CREATE2_SIZE;
/// `UHID_DATA_MAX`: the most report bytes one record carries.
pub const DATA_MAX: usize = 4096;
/// `HID_MAX_DESCRIPTOR_SIZE`.
pub const DESCRIPTOR_MAX: usize = 4096;
const CREATE2_SIZE: usize = 128 + 64 + 64 + 2 + 2 + 4 * 4 + DESCRIPTOR_MAX;

const UHID_DESTROY: u32 = 1;
const UHID_START: u32 = 2;
const UHID_STOP: u32 = 3;
const UHID_OPEN: u32 = 4;
const UHID_CLOSE: u32 = 5;
const UHID_OUTPUT: u32 = 6;
const UHID_GET_REPORT: u32 = 9;
const UHID_GET_REPORT_REPLY: u32 = 10;
const UHID_CREATE2: u32 = 11;
const UHID_INPUT2: u32 = 12;
const UHID_SET_REPORT: u32 = 13;
const UHID_SET_REPORT_REPLY: u32 = 14;

/// `BUS_USB` of `linux/input.h`.
pub const BUS_USB: u16 = 0x03;
/// An errno the host answers a report request with (`EIO`).
pub const EIO: u16 = 5;

/// The kind of a report (`enum uhid_report_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportType {
    /// `UHID_FEATURE_REPORT`.
    Feature,
    /// `UHID_OUTPUT_REPORT`.
    Output,
    /// `UHID_INPUT_REPORT`.
    Input,
}

impl ReportType {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Self::Feature),
            1 => Ok(Self::Output),
            2 => Ok(Self::Input),
            other => Err(DecodeError::ReportType(other)),
        }
    }
}

/// What a device is created with (`UHID_CREATE2`).
#[derive(Debug, Clone)]
pub struct CreateParams<'a> {
    /// The HID device's name (at most 127 bytes are kept).
    pub name: &'a str,
    /// Its physical path (at most 63 bytes).
    pub phys: &'a str,
    /// Its unique id, e.g. a MAC (at most 63 bytes).
    pub uniq: &'a str,
    /// Bus type ([`BUS_USB`], ...).
    pub bus: u16,
    /// USB vendor id.
    pub vendor: u32,
    /// USB product id.
    pub product: u32,
    /// Device version.
    pub version: u32,
    /// HID country code.
    pub country: u32,
    /// The report descriptor.
    pub descriptor: &'a [u8],
}

/// Why a record could not be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    /// A report longer than [`DATA_MAX`].
    #[error("a report of {0} bytes exceeds UHID's {DATA_MAX}")]
    ReportTooLong(usize),
    /// A descriptor longer than [`DESCRIPTOR_MAX`].
    #[error("a report descriptor of {0} bytes exceeds UHID's {DESCRIPTOR_MAX}")]
    DescriptorTooLong(usize),
}

/// Why bytes read from `/dev/uhid` are not a record we understand.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record type needs.
    #[error("a uhid record of {got} bytes is shorter than the {need} its type needs")]
    Short {
        /// Bytes read.
        got: usize,
        /// Bytes the type needs.
        need: usize,
    },
    /// A record type the kernel should not send to us.
    #[error("unknown uhid record type {0}")]
    UnknownType(u32),
    /// A report type outside the enum.
    #[error("unknown uhid report type {0}")]
    ReportType(u8),
    /// A size field beyond [`DATA_MAX`].
    #[error("a uhid report size {0} beyond {DATA_MAX}")]
    Size(u16),
}

/// A record the kernel sends us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The driver bound (`UHID_START`), with its `dev_flags`.
    Start {
        /// `UHID_DEV_NUMBERED_*_REPORTS` bits.
        dev_flags: u64,
    },
    /// The driver unbound.
    Stop,
    /// Someone opened the device's input nodes.
    Open,
    /// The last user closed them.
    Close,
    /// An output report (`UHID_OUTPUT`): the report id is its first byte when the device
    /// numbers its reports.
    Output {
        /// The report bytes.
        data: &'a [u8],
        /// Output or feature.
        report_type: ReportType,
    },
    /// The driver asks for a report (`UHID_GET_REPORT`); answer with [`get_report_reply`] and
    /// the same `id`.
    GetReport {
        /// Request id to echo.
        id: u32,
        /// Report number asked for.
        report_number: u8,
        /// Report type asked for.
        report_type: ReportType,
    },
    /// The driver sets a report (`UHID_SET_REPORT`); answer with [`set_report_reply`].
    SetReport {
        /// Request id to echo.
        id: u32,
        /// Report number.
        report_number: u8,
        /// Report type.
        report_type: ReportType,
        /// The report bytes.
        data: &'a [u8],
    },
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_str(buf: &mut [u8], at: usize, cap: usize, s: &str) {
    // One byte stays NUL: the kernel reads these as C strings.
    let n = s.len().min(cap - 1);
    buf[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
}

/// `UHID_CREATE2`: a full [`EVENT_SIZE`] record.
pub fn create2(p: &CreateParams<'_>) -> Result<Vec<u8>, EncodeError> {
    if p.descriptor.len() > DESCRIPTOR_MAX {
        return Err(EncodeError::DescriptorTooLong(p.descriptor.len()));
    }
    let mut buf = vec![0u8; EVENT_SIZE];
    put_u32(&mut buf, 0, UHID_CREATE2);
    put_str(&mut buf, 4, 128, p.name);
    put_str(&mut buf, 132, 64, p.phys);
    put_str(&mut buf, 196, 64, p.uniq);
    // Bounded by DESCRIPTOR_MAX (4096) above, so it fits a u16.
    put_u16(&mut buf, 260, p.descriptor.len() as u16);
    put_u16(&mut buf, 262, p.bus);
    put_u32(&mut buf, 264, p.vendor);
    put_u32(&mut buf, 268, p.product);
    put_u32(&mut buf, 272, p.version);
    put_u32(&mut buf, 276, p.country);
    buf[280..280 + p.descriptor.len()].copy_from_slice(p.descriptor);
    Ok(buf)
}

/// `UHID_DESTROY`.
pub fn destroy() -> [u8; 4] {
    UHID_DESTROY.to_le_bytes()
}

/// `UHID_INPUT2` carrying `report` into `out` (cleared first); the kernel zero-fills the rest of
/// the record, so only `6 + report.len()` bytes are written.
pub fn input2(report: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if report.len() > DATA_MAX {
        return Err(EncodeError::ReportTooLong(report.len()));
    }
    out.clear();
    out.extend_from_slice(&UHID_INPUT2.to_le_bytes());
    out.extend_from_slice(&(report.len() as u16).to_le_bytes());
    out.extend_from_slice(report);
    Ok(())
}

/// `UHID_GET_REPORT_REPLY` for request `id`: `err` 0 with the report, or an errno and no data.
pub fn get_report_reply(id: u32, err: u16, report: &[u8]) -> Result<Vec<u8>, EncodeError> {
    if report.len() > DATA_MAX {
        return Err(EncodeError::ReportTooLong(report.len()));
    }
    let mut buf = vec![0u8; 12 + report.len()];
    put_u32(&mut buf, 0, UHID_GET_REPORT_REPLY);
    put_u32(&mut buf, 4, id);
    put_u16(&mut buf, 8, err);
    put_u16(&mut buf, 10, report.len() as u16);
    buf[12..].copy_from_slice(report);
    Ok(buf)
}

/// `UHID_SET_REPORT_REPLY` for request `id` (`err` 0 = accepted).
pub fn set_report_reply(id: u32, err: u16) -> [u8; 10] {
    let mut buf = [0u8; 10];
    put_u32(&mut buf, 0, UHID_SET_REPORT_REPLY);
    put_u32(&mut buf, 4, id);
    put_u16(&mut buf, 8, err);
    buf
}

fn need(buf: &[u8], n: usize) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError::Short {
            got: buf.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}
fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}
fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Decodes one record read from `/dev/uhid` (one `read` returns one record). Borrowed from
/// `buf`; sizes are checked against [`DATA_MAX`] and the bytes actually read.
pub fn decode(buf: &[u8]) -> Result<Event<'_>, DecodeError> {
    need(buf, 4)?;
    match u32_at(buf, 0) {
        UHID_START => {
            need(buf, 12)?;
            let flags = u64::from(u32_at(buf, 4)) | (u64::from(u32_at(buf, 8)) << 32);
            Ok(Event::Start { dev_flags: flags })
        }
        UHID_STOP => Ok(Event::Stop),
        UHID_OPEN => Ok(Event::Open),
        UHID_CLOSE => Ok(Event::Close),
        UHID_OUTPUT => {
            // data[4096] at 4, size at 4100, rtype at 4102.
            need(buf, 4 + DATA_MAX + 3)?;
            let size = u16_at(buf, 4 + DATA_MAX);
            if usize::from(size) > DATA_MAX {
                return Err(DecodeError::Size(size));
            }
            let report_type = ReportType::from_u8(buf[4 + DATA_MAX + 2])?;
            Ok(Event::Output {
                data: &buf[4..4 + usize::from(size)],
                report_type,
            })
        }
        UHID_GET_REPORT => {
            need(buf, 10)?;
            Ok(Event::GetReport {
                id: u32_at(buf, 4),
                report_number: buf[8],
                report_type: ReportType::from_u8(buf[9])?,
            })
        }
        UHID_SET_REPORT => {
            need(buf, 12)?;
            let size = u16_at(buf, 10);
            if usize::from(size) > DATA_MAX {
                return Err(DecodeError::Size(size));
            }
            need(buf, 12 + usize::from(size))?;
            Ok(Event::SetReport {
                id: u32_at(buf, 4),
                report_number: buf[8],
                report_type: ReportType::from_u8(buf[9])?,
                data: &buf[12..12 + usize::from(size)],
            })
        }
        other => Err(DecodeError::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_size_is_the_kernels() {
        // sizeof(struct uhid_event) (packed): type + uhid_create2_req.
        assert_eq!(EVENT_SIZE, 4376);
    }

    #[test]
    fn create2_places_every_field() {
        let rd = [0x05, 0x01, 0x09, 0x05];
        let buf = create2(&CreateParams {
            name: "pad",
            phys: "p",
            uniq: "u",
            bus: BUS_USB,
            vendor: 0x054c,
            product: 0x0ce6,
            version: 0x100,
            country: 0,
            descriptor: &rd,
        })
        .unwrap();
        assert_eq!(buf.len(), EVENT_SIZE);
        assert_eq!(&buf[0..4], &11u32.to_le_bytes());
        assert_eq!(&buf[4..8], b"pad\0");
        assert_eq!(buf[132], b'p');
        assert_eq!(buf[196], b'u');
        assert_eq!(u16_at(&buf, 260), 4);
        assert_eq!(u16_at(&buf, 262), 3);
        assert_eq!(u32_at(&buf, 264), 0x054c);
        assert_eq!(u32_at(&buf, 268), 0x0ce6);
        assert_eq!(&buf[280..284], &rd);
    }

    #[test]
    fn long_names_keep_their_nul() {
        let long = "x".repeat(500);
        let buf = create2(&CreateParams {
            name: &long,
            phys: &long,
            uniq: &long,
            bus: BUS_USB,
            vendor: 1,
            product: 2,
            version: 3,
            country: 0,
            descriptor: &[],
        })
        .unwrap();
        assert_eq!(buf[4 + 127], 0);
        assert_eq!(buf[132 + 63], 0);
        assert_eq!(buf[196 + 63], 0);
    }

    #[test]
    fn input2_and_replies() {
        let mut out = Vec::new();
        input2(&[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, [12, 0, 0, 0, 3, 0, 1, 2, 3]);
        assert_eq!(
            input2(&[0; DATA_MAX + 1], &mut out),
            Err(EncodeError::ReportTooLong(DATA_MAX + 1))
        );
        let r = get_report_reply(7, 0, &[9, 8]).unwrap();
        assert_eq!(r, [10, 0, 0, 0, 7, 0, 0, 0, 0, 0, 2, 0, 9, 8]);
        assert_eq!(set_report_reply(7, EIO), [14, 0, 0, 0, 7, 0, 0, 0, 5, 0]);
    }

    #[test]
    fn decodes_what_the_kernel_sends() {
        let mut get = vec![0u8; EVENT_SIZE];
        get[0] = 9;
        get[4] = 42;
        get[8] = 0x05;
        get[9] = 0;
        assert_eq!(
            decode(&get),
            Ok(Event::GetReport {
                id: 42,
                report_number: 5,
                report_type: ReportType::Feature
            })
        );
        let mut out = vec![0u8; EVENT_SIZE];
        out[0] = 6;
        out[4] = 0x02;
        out[5] = 0xAA;
        out[4 + DATA_MAX] = 2;
        out[4 + DATA_MAX + 2] = 1;
        assert_eq!(
            decode(&out),
            Ok(Event::Output {
                data: &[0x02, 0xAA],
                report_type: ReportType::Output
            })
        );
        out[4 + DATA_MAX] = 0xFF;
        out[4 + DATA_MAX + 1] = 0xFF;
        assert_eq!(decode(&out), Err(DecodeError::Size(0xFFFF)));
        assert_eq!(decode(&[2, 0]), Err(DecodeError::Short { got: 2, need: 4 }));
        assert_eq!(decode(&[99, 0, 0, 0]), Err(DecodeError::UnknownType(99)));
        assert_eq!(decode(&[3, 0, 0, 0]), Ok(Event::Stop));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000)) {
            let _ = decode(&bytes);
        }
    }
}
