//! Fuzzes SSE `control` event parsing on arbitrary event data.
//!
//! If the first byte is odd, the rest is first wrapped as the
//! `streamNextOffset` (and cursor) of an otherwise valid control event, to
//! reach the offset checks more often.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&selector, rest)) if selector & 1 == 1 => {
            let text = String::from_utf8_lossy(rest);
            let event = serde_json::json!({
                "streamNextOffset": text,
                "streamCursor": text,
                "upToDate": selector & 2 == 2,
                "streamClosed": selector & 4 == 4,
            });
            durable_streams_client::__fuzz::sse_control(&serde_json::to_vec(&event).unwrap());
        }
        _ => durable_streams_client::__fuzz::sse_control(data),
    }
});
