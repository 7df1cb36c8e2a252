//! The agent protocol from both ends: request and response lines, exec frames each way,
//! and the serial mux's lines (a guest can send any bytes; so can a confused host).
#![no_main]
use banger_agent_proto::exec::{GuestFrame, HostFrame};
use banger_agent_proto::mux::Line;
use banger_agent_proto::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Response>(data);
    for decode in [true, false] {
        let mut r = data;
        for _ in 0..64 {
            let ok = if decode {
                GuestFrame::read(&mut r).is_ok()
            } else {
                HostFrame::read(&mut r).is_ok()
            };
            if !ok {
                break;
            }
        }
    }
    for line in data.split(|&b| b == b'\n') {
        if let Some(l) = Line::parse(line) {
            // What parses re-encodes to itself.
            let bytes = l.encode();
            let text = bytes.strip_prefix(b"\n").unwrap_or(&bytes);
            let text = text.strip_suffix(b"\n").unwrap_or(text);
            assert_eq!(Line::parse(text), Some(l));
        }
    }
});
