//! Fuzzes response header parsing (`ResponseMeta::from_headers`,
//! `Offset::from_server`, `Retry-After`) on arbitrary header values.
//!
//! Input: lines; each line's first byte picks a header name, the rest is
//! its value (see `durable_streams_client::__fuzz::response_headers`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_streams_client::__fuzz::response_headers(data);
});
