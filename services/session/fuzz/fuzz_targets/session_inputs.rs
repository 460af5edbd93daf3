//! Everything punktfunk-session parses from outside itself, fed arbitrary bytes: a
//! StartOutputRequest and a ResizeOutputRequest off the wire (prost decode, then the request
//! checks), an output journal
//! record, a keeper's node file, a compositor's `--version` output, `/proc/<pid>/stat`,
//! `pw-dump`'s output (the screencopy keeper's node) and a compositor's screencopy offer (with
//! the row copy of a frame it describes, in both orientations, from a source of any length).
//! None may panic; a request that passes the checks must be within the documented bounds, and
//! so must an offer the keeper accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use punktfunk_proto::session::{ResizeOutputRequest, StartOutputRequest};
use punktfunk_session::backend::BackendKind;
use punktfunk_session::screencopy::{self, MAX_FRAME_BYTES, Offer, copy_frame};
use punktfunk_session::{floors, journal, proc, request};
use wayland_client::protocol::wl_shm;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = StartOutputRequest::decode(data)
        && let Ok(spec) = request::start_spec(req, BackendKind::Mutter)
    {
        assert!(spec.mode.validate().is_ok());
        assert!(spec.app_command.len() <= request::MAX_ARGS);
        assert!(spec.app_env.len() <= request::MAX_ENV);
        assert!(spec.client.len() <= request::MAX_TEXT);
    }
    if let Ok(req) = ResizeOutputRequest::decode(data)
        && let Ok(mode) = request::checked_mode(req.mode)
    {
        assert!(mode.validate().is_ok());
    }
    let _ = journal::parse_record(data);
    let text = String::from_utf8_lossy(data);
    let _ = journal::parse_node_file(&text);
    for kind in BackendKind::ALL {
        let _ = floors::check(kind, &text);
    }
    let _ = proc::parse_stat(&text);
    let _ = screencopy::node_id(&text, screencopy::NODE_NAME);
    offer(data);
});

/// The first 16 bytes as an offer (format, width, height, stride); the rest as the frame.
fn offer(data: &[u8]) -> Option<()> {
    let word = |i: usize| -> Option<u32> { Some(u32::from_le_bytes(data.get(i..i + 4)?.try_into().ok()?)) };
    let offer = Offer {
        format: wl_shm::Format::try_from(word(0)?).ok()?,
        width: word(4)?,
        height: word(8)?,
        stride: word(12)?,
    };
    let len = offer.buffer_len().ok()?;
    let packed = offer.row_bytes() * offer.height as usize;
    assert!(len <= MAX_FRAME_BYTES && packed <= len);
    let _ = offer.gst_format();
    // Frames the fuzzer can afford to allocate.
    if packed <= 1 << 20 {
        let mut dst = vec![0u8; packed];
        copy_frame(&offer, &data[16..], &mut dst, false);
        copy_frame(&offer, &data[16..], &mut dst, true);
    }
    Some(())
}
