//! Fuzzes the SSE connection's HTTP/1.1 response parser
//! (`http_events.rs`): head, framing, chunked decoding; cuts into reads
//! never change the body, errors never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (seed, data) = match data.split_first_chunk::<8>() {
        Some((seed, rest)) => (u64::from_le_bytes(*seed), rest),
        None => (0, data),
    };
    durable_streams_client::__fuzz::http1_response(data, seed);
});
