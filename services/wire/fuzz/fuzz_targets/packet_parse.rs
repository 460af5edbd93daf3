#![no_main]
//! Header parsing on arbitrary bytes: total (Ok or error, never a panic), and a parsed header
//! re-serialises to the same 32 bytes.

use libfuzzer_sys::fuzz_target;
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
});
