//! Fuzzes the typed JSON reader (large responses decoded straight into a
//! type while they arrive) on arbitrary response bodies.
//!
//! The first eight input bytes seed the parts the body arrives in and how
//! much each call decodes; the library's hidden entry point checks that
//! neither changes the result and that it matches serde_json's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (seed, body) = if data.len() >= 8 {
        let (s, b) = data.split_at(8);
        (u64::from_le_bytes(s.try_into().unwrap()), b)
    } else {
        (0, data)
    };
    durable_streams_client::__fuzz::typed_json_array(body, seed);
});
