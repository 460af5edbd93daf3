#![no_main]
//! Header parsing on arbitrary bytes: total (Ok or error, never a panic), and a parsed header
//! re-serialises to the same 32 bytes. The same bytes as a reassembled frame: the AU envelope
//! parser (what a client reads first from every frame) is total too, and what it accepts
//! re-serialises (but for a longer header length).

use libfuzzer_sys::fuzz_target;
use punktfunk_wire::au::{AuTiming, ENVELOPE_LEN};
use punktfunk_wire::{HEADER_LEN, PacketHeader, TAG_LEN, peek_kind};

fuzz_target!(|data: &[u8]| {
    let kind = peek_kind(data);
    if let Ok((h, payload)) = PacketHeader::parse(data) {
        assert_eq!(kind, Some(h.kind));
        assert_eq!(payload.len() + HEADER_LEN, data.len());
        assert!(payload.len() >= TAG_LEN);
        let mut out = [0u8; HEADER_LEN];
        h.write(&mut out);
        assert_eq!(&out[..], &data[..HEADER_LEN]);
    }
    if let Ok((timing, au)) = AuTiming::parse(data) {
        // A longer header (a newer minor version) is skipped, never read past.
        assert!(au.len() + ENVELOPE_LEN <= data.len());
        let mut out = [0u8; ENVELOPE_LEN];
        timing.write(&mut out);
        // Everything but the header length (which may be larger) round-trips.
        assert_eq!(&out[..6], &data[..6]);
        assert_eq!(&out[8..], &data[8..ENVELOPE_LEN]);
    }
});
