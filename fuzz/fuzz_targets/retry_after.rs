//! Fuzzes `Retry-After` parsing (`parse_retry_after`,
//! `parse_retry_after_at`). Input: the value, optionally followed by a
//! newline and a `Date` header value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_streams_client::__fuzz::retry_after(data);
});
