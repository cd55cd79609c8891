//! Entry points for fuzzing the parsers of server input (see `fuzz/`). Each
//! function panics when an invariant breaks; errors on bad input are fine.
//! Not a stable API.

// Hidden from the docs; its comments name the internals each entry point
// drives, so links to private items are intended.
#![allow(rustdoc::private_intra_doc_links)]

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{DecodeKind, Error, ErrorKind};
use crate::json::{ArraySplitter, read_in_parts, split_messages};
use crate::offset::Offset;
use crate::request::ResponseMeta;
use crate::retry::{MAX_RETRY_AFTER, parse_retry_after, parse_retry_after_at};

/// Feed `data` to the SSE parser split at `split`; returns the event count.
pub fn sse_parse(data: &[u8], split: usize) -> usize {
    crate::read::sse::fuzz_entry(data, split)
}

/// Parse `data` as an HTTP/1.1 response (the SSE connection's parser,
/// `http_events.rs`) and decode its body whole and cut into pieces by
/// `seed`: the two must agree.
pub fn http1_response(data: &[u8], seed: u64) {
    crate::http::events_fuzz_entry(data, &chunk_sizes(seed, data.len()));
}

/// Chunk sizes (1..=32) from a small xorshift generator seeded by `seed`.
fn chunk_sizes(mut seed: u64, total: usize) -> Vec<usize> {
    seed |= 1;
    let mut sizes = Vec::new();
    let mut covered = 0;
    while covered < total {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (seed % 32) as usize + 1;
        sizes.push(n);
        covered += n;
    }
    sizes
}

/// Runs the incremental splitter over `body` cut into `sizes`; `Err(())`
/// when it rejects the body (at any point, or at the end).
fn run_splitter(body: &Bytes, sizes: &[usize], limit: usize) -> Result<Vec<Bytes>, ()> {
    let mut splitter = ArraySplitter::new(limit);
    let mut out = Vec::new();
    let mut at = 0;
    for &n in sizes {
        let end = (at + n).min(body.len());
        splitter.feed(&body.slice(at..end)).map_err(|_| ())?;
        let taken = splitter.take();
        assert!(
            taken.iter().all(|e| e.len() <= limit),
            "element over the limit"
        );
        out.extend(taken);
        at = end;
        if at == body.len() {
            break;
        }
    }
    splitter.finish().map_err(|_| ())?;
    Ok(out)
}

/// The JSON array splitters on arbitrary server bytes: the incremental
/// [`ArraySplitter`] gives the same answer whatever the split points (whole,
/// byte by byte, and pieces chosen by `seed`), and whenever serde_json
/// accepts the body as an array, [`split_messages`] and the splitter both
/// return exactly serde's elements.
pub fn json_array(data: &[u8], seed: u64) {
    const BIG: usize = 1 << 30;
    let body = Bytes::copy_from_slice(data);
    let whole = run_splitter(&body, &[data.len().max(1)], BIG);
    let bytewise = run_splitter(&body, &vec![1; data.len()], BIG);
    let pieces = run_splitter(&body, &chunk_sizes(seed, data.len()), BIG);
    assert_eq!(whole, bytewise, "byte-wise feeding changed the result");
    assert_eq!(whole, pieces, "split points changed the result");

    // A small size limit: never an element over it, and the outcome does
    // not depend on the split points either.
    let small = run_splitter(&body, &[data.len().max(1)], 8);
    let small_pieces = run_splitter(&body, &chunk_sizes(seed >> 1, data.len()), 8);
    assert_eq!(
        small.is_ok(),
        small_pieces.is_ok(),
        "limit check depends on splits"
    );
    if let Ok(elements) = &whole
        && elements.iter().all(|e| e.len() <= 8)
    {
        assert_eq!(
            small.as_ref(),
            Ok(elements),
            "limit rejected small elements"
        );
    }

    let split = split_messages(&body);
    let trimmed = data.trim_ascii();
    let serde: Option<Vec<&RawValue>> = if trimmed.is_empty() {
        Some(Vec::new())
    } else {
        serde_json::from_slice(trimmed).ok()
    };
    match (&split, &serde) {
        (Ok(messages), Some(raw)) => {
            let expected: Vec<&[u8]> = raw.iter().map(|r| r.get().as_bytes()).collect();
            let got: Vec<&[u8]> = messages.iter().map(|m| &m[..]).collect();
            assert_eq!(got, expected, "split_messages disagrees with serde_json");
            let via_splitter: Vec<&[u8]> = whole
                .as_ref()
                .expect("the splitter rejected a valid JSON array")
                .iter()
                .map(|m| &m[..])
                .collect();
            assert_eq!(
                via_splitter, expected,
                "the splitter disagrees with serde_json"
            );
            // Each message is one JSON value by itself (syntax only: serde's
            // raw values accept numbers like 2E850 that do not fit an f64;
            // decoding those into a type is a typed error later).
            for m in messages {
                serde_json::from_slice::<&RawValue>(m)
                    .expect("a split message is not one JSON value");
            }
        }
        (Err(e), None) => {
            assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Json));
        }
        (Ok(_), None) => panic!("split_messages accepted what serde_json rejects"),
        (Err(e), Some(_)) => panic!("split_messages rejected a valid JSON array: {e}"),
    }
}

/// The typed JSON reader on arbitrary server bytes: the same answer
/// whatever the parts the body arrives in (whole, byte by byte, pieces
/// chosen by `seed`) and however little each call decodes, and exactly
/// serde_json's answer for the whole body (`Vec<Value>`), errors included;
/// the messages then encode (the library's encoder) to serde_json's bytes.
pub fn typed_json_array(data: &[u8], seed: u64) {
    let limit = 1 << 30;
    let sizes = chunk_sizes(seed, data.len());
    let pieces: Vec<usize> = sizes
        .iter()
        .scan(0, |at, n| {
            *at += n;
            Some(*at)
        })
        .collect();
    let bytewise: Vec<usize> = (1..data.len()).collect();
    let whole = read_in_parts::<Value>(data, &[], usize::MAX, 0, limit);
    let target = (seed >> 60) as usize + 1;
    for (parts, what) in [(&pieces, "pieces"), (&bytewise, "byte by byte")] {
        let got = read_in_parts::<Value>(data, parts, target, 0, limit);
        assert_eq!(got.is_ok(), whole.is_ok(), "{what} changed the outcome");
        if let (Ok(got), Ok(whole)) = (&got, &whole) {
            assert_eq!(got, whole, "{what} changed the messages");
        }
    }
    // An empty body (or JSON whitespace only) holds no messages.
    let reference = if data.iter().all(|b| b" \t\n\r".contains(b)) {
        Ok(Vec::new())
    } else {
        serde_json::from_slice::<Vec<Value>>(data)
    };
    match (whole, reference) {
        (Ok(got), Ok(reference)) => {
            assert_eq!(got, reference, "disagrees with serde_json");
            // The library's JSON encoder writes what serde_json writes.
            let mut encoded = Vec::new();
            crate::json_encode::write(&mut encoded, &got).expect("a Value always encodes");
            assert_eq!(
                encoded,
                serde_json::to_vec(&got).expect("a Value always encodes"),
                "the encoder disagrees with serde_json"
            );
        }
        (Err(e), Err(_)) => assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Json)),
        // serde counts the array itself towards its nesting limit; each
        // message decoded alone may nest one level deeper.
        (Ok(_), Err(e)) if e.to_string().contains("recursion limit") => {}
        (Ok(_), Err(e)) => panic!("accepted what serde_json rejects: {e}"),
        (Err(e), Ok(_)) => panic!("rejected a valid JSON array: {e}"),
    }
}

/// `parse_control` on arbitrary bytes: a typed SSE decode error, or a
/// control whose offset is a real token and which survives a round trip
/// through its JSON form.
pub fn sse_control(data: &[u8]) {
    match crate::read::fuzz_entry_control(data) {
        Ok((offset, cursor, up_to_date, closed)) => {
            assert!(!offset.is_start() && !offset.is_now(), "sentinel accepted");
            check_token(offset.as_str(), &offset);
            let json = serde_json::json!({
                "streamNextOffset": offset.as_str(),
                "streamCursor": cursor,
                "upToDate": up_to_date,
                "streamClosed": closed,
            });
            let again = crate::read::fuzz_entry_control(&serde_json::to_vec(&json).unwrap())
                .expect("a control event's own JSON form was rejected");
            assert_eq!(again, (offset, cursor, up_to_date, closed));
        }
        Err(e) => assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Sse), "{e}"),
    }
}

/// An offset accepted from a server: it is the text given, `Offset::parse`
/// accepts it too and its display is the same text.
fn check_token(text: &str, offset: &Offset) {
    assert_eq!(offset.as_str(), text);
    assert_eq!(offset.to_string(), text);
    let parsed = Offset::parse(text).expect("Offset::parse rejects a server offset");
    assert_eq!(&parsed, offset);
}

/// [`Offset::from_server`] on arbitrary text, plus the ordering of two
/// tokens (byte-wise).
pub fn offset(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_at(
        text.char_indices()
            .nth(text.chars().count() / 2)
            .map_or(0, |(i, _)| i),
    );
    for t in [&*text, a, b] {
        match Offset::from_server(t) {
            Ok(o) => {
                check_token(t, &o);
                assert!(!t.is_empty() && t != "-1" && t != "now");
                assert!(
                    !t.chars()
                        .any(|c| matches!(c, ',' | '&' | '=' | '?' | '/') || c.is_control())
                );
            }
            Err(e) => assert_eq!(
                Error::from(e).kind(),
                &ErrorKind::Decode(DecodeKind::Header)
            ),
        }
    }
    if let (Ok(x), Ok(y)) = (Offset::from_server(a), Offset::from_server(b)) {
        assert_eq!(x.cmp(&y), a.as_bytes().cmp(b.as_bytes()));
    }
}

const HEADER_NAMES: [&str; 10] = [
    "stream-next-offset",
    "stream-cursor",
    "stream-up-to-date",
    "stream-closed",
    "etag",
    "content-type",
    "retry-after",
    "date",
    "Stream-Next-Offset",
    "x-other",
];

/// Response header parsing on arbitrary headers. `data` is lines; each
/// line's first byte picks a header name (from the protocol's), the rest is
/// its value. [`ResponseMeta::from_headers`] either fails with a typed
/// header decode error or reports exactly what the headers say; offsets and
/// `Retry-After` values in them go through their parsers too.
pub fn response_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let name = HEADER_NAMES[usize::from(selector) % HEADER_NAMES.len()];
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if let Ok(text) = value.to_str() {
            offset(text.as_bytes());
            retry_after_at(text, headers.get("date").and_then(|d| d.to_str().ok()));
        }
        headers.append(name, value);
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    match ResponseMeta::from_headers(&headers) {
        Ok(meta) => {
            match (&meta.next_offset, text("stream-next-offset")) {
                (Some(o), Some(t)) => check_token(t, o),
                (None, None) => {}
                (o, t) => panic!("next offset {o:?} from header {t:?}"),
            }
            assert_eq!(
                meta.up_to_date,
                text("stream-up-to-date").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            );
            assert_eq!(
                meta.closed,
                text("stream-closed").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            );
            assert_eq!(
                meta.cursor.as_deref(),
                text("stream-cursor").filter(|c| !c.is_empty())
            );
        }
        Err(e) => assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header), "{e}"),
    }
}

/// `Retry-After` parsing on arbitrary text, against the local clock and
/// against a server `Date`: never more than [`MAX_RETRY_AFTER`]; a plain
/// number of seconds means the same either way.
pub fn retry_after(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (value, date) = match text.split_once('\n') {
        Some((v, d)) => (v, Some(d)),
        None => (&*text, None),
    };
    retry_after_at(value, date);
}

fn retry_after_at(value: &str, date: Option<&str>) {
    let local = parse_retry_after(value);
    let at = parse_retry_after_at(value, date);
    if let Some(d) = local {
        assert!(d <= MAX_RETRY_AFTER, "{d:?}");
    }
    if let Some(d) = at {
        assert!(d <= MAX_RETRY_AFTER, "{d:?}");
    }
    if value.trim().parse::<f64>().is_ok() {
        assert_eq!(local, at, "a number of seconds depends on Date");
    }
}

/// Feed `data` to the frame decoder (frames up to 256 bytes) whole and cut
/// into seeded pieces: both must give the same payloads, or both fail.
/// Returns the number of frames.
pub fn frames(data: &[u8], seed: u64) -> usize {
    use crate::codec::Framing;
    let framing = Framing::new().max_frame_bytes(256);
    let run = |sizes: &[usize]| -> Result<Vec<Bytes>, ()> {
        let mut decoder = framing.decoder(Offset::start());
        let mut out = Vec::new();
        let mut at = 0;
        for &n in sizes {
            let end = (at + n).min(data.len());
            decoder
                .push(Bytes::copy_from_slice(&data[at..end]), &mut out)
                .map_err(|_| ())?;
            at = end;
        }
        decoder.finish().map_err(|_| ())?;
        Ok(out)
    };
    let whole = run(&[data.len()]);
    let pieces = run(&chunk_sizes(seed, data.len()));
    assert_eq!(whole, pieces, "splitting changed the frames");
    for payload in whole.iter().flatten() {
        assert!(payload.len() <= 256, "a payload over the limit");
    }
    whole.map_or(0, |f| f.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_accept_samples() {
        for sample in [
            &b"[1, {\"a\":[\"]\"]}, \"x\\\"\"]"[..],
            b"  [ ] ",
            b"",
            b"[1,]",
            b"{}",
            b"[\"\\\\\", 2]",
            b"[1 2]",
            // Found by the fuzzer: a number serde_json cannot hold as f64.
            b"[2E850]\t",
            b"[[0,0,[[[2E850]]]]]",
        ] {
            for seed in 0..5 {
                json_array(sample, seed);
                typed_json_array(sample, seed << 58);
            }
        }
        // Form feed is ASCII whitespace, not JSON whitespace.
        for sample in [&b"\x0c[]\x0c"[..], b"[\x0c1]", b"\x0c"] {
            typed_json_array(sample, 0);
        }
        sse_control(br#"{"streamNextOffset":"1_2","streamCursor":7,"upToDate":true}"#);
        sse_control(br#"{"streamNextOffset":"-1"}"#);
        sse_control(b"nope");
        offset(b"0000_0001abc");
        offset(b"a b\x01");
        response_headers(b"\x00 12_3 \n\x01c\n\x02TRUE\n\x03false\n\x06 30\n");
        response_headers(b"\x00a/b\n");
        retry_after(b"120");
        retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT\nWed, 21 Oct 2015 07:27:00 GMT");
        retry_after(b"1e400");
        retry_after(b"-1");
    }
}
