//! Fuzzes the incremental SSE parser: arbitrary bytes, fed split in two.
//!
//! The first input byte picks the split point (scaled over the rest of the
//! input); the library's hidden entry point also checks that splitting or
//! byte-at-a-time feeding never changes the parsed events, and panics if so.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, rest)) = data.split_first() {
        let split = usize::from(selector) * rest.len() / usize::from(u8::MAX);
        let _ = durable_streams_client::__fuzz::sse_parse(rest, split);
    }
});
