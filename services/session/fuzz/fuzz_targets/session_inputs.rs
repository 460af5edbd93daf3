//! Everything punktfunk-session parses from outside itself, fed arbitrary bytes: a
//! StartOutputRequest off the wire (prost decode, then the request checks), an output journal
//! record, a keeper's node file, a compositor's `--version` output and `/proc/<pid>/stat`.
//! None may panic; a request that passes the checks must be within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use punktfunk_proto::session::StartOutputRequest;
use punktfunk_session::backend::BackendKind;
use punktfunk_session::{floors, journal, proc, request};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = StartOutputRequest::decode(data)
        && let Ok(spec) = request::start_spec(req, BackendKind::Mutter)
    {
        assert!(spec.mode.validate().is_ok());
        assert!(spec.app_command.len() <= request::MAX_ARGS);
        assert!(spec.app_env.len() <= request::MAX_ENV);
        assert!(spec.client.len() <= request::MAX_TEXT);
    }
    let _ = journal::parse_record(data);
    let text = String::from_utf8_lossy(data);
    let _ = journal::parse_node_file(&text);
    for kind in BackendKind::ALL {
        let _ = floors::check(kind, &text);
    }
    let _ = proc::parse_stat(&text);
});
