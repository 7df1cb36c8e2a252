//! The frame reader and line parsing over arbitrary peer bytes: requests (what the daemon
//! reads), chunks and responses (what a client reads).
#![no_main]
use banger_api::frame::{Frame, FrameReader, Incoming, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        // A small cap, so oversize lines are exercised too.
        let mut reader = FrameReader::with_max(tokio::io::BufReader::new(data), 4096);
        while let Ok(Some(frame)) = reader.next_frame().await {
            if let Frame::Line(line) = frame {
                if let Ok(req) = serde_json::from_slice::<Request>(&line) {
                    let _ = serde_json::to_vec(&req);
                }
                if let Ok(Incoming::Chunk(c)) = Incoming::parse(&line) {
                    let _ = c.bytes();
                }
            }
        }
    });
});
