//! Fuzzes the JSON array splitters (incremental `ArraySplitter` and
//! `split_messages`) on arbitrary response bodies.
//!
//! The first eight input bytes seed the split points; the library's hidden
//! entry point checks that split points never change the result and that
//! both splitters agree with serde_json on every valid array.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (seed, body) = if data.len() >= 8 {
        let (s, b) = data.split_at(8);
        (u64::from_le_bytes(s.try_into().unwrap()), b)
    } else {
        (0, data)
    };
    durable_streams_client::__fuzz::json_array(body, seed);
});
