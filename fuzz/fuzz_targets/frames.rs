//! Fuzzes the frame decoder (`codec::FrameDecoder`): splits never change
//! the frames, payloads stay within the limit, errors never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (seed, data) = match data.split_first_chunk::<8>() {
        Some((seed, rest)) => (u64::from_le_bytes(*seed), rest),
        None => (0, data),
    };
    durable_streams_client::__fuzz::frames(data, seed);
});
