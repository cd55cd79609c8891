//! Fuzzes `Offset::from_server` and token ordering on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_streams_client::__fuzz::offset(data);
});
