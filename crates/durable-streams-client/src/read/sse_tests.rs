//! Unit and property tests of the SSE parser. One file on purpose: the
//! cases share one harness (`parse_all_ways` parses each input whole, in
//! 1-byte and in 2-byte chunks, which must agree) and follow the WHATWG
//! event stream rules one by one.

use super::*;
use proptest::prelude::*;

const BIG: usize = 64 * 1024 * 1024;

fn ev(event: &str, data: &[u8]) -> Result<SseEvent, SseError> {
    Ok(SseEvent {
        event: event.to_owned().into(),
        data: Bytes::copy_from_slice(data),
    })
}

fn too_large(limit: usize) -> Result<SseEvent, SseError> {
    Err(SseError::EventTooLarge { limit })
}

fn drain(parser: &mut SseParser) -> Vec<Result<SseEvent, SseError>> {
    std::iter::from_fn(|| parser.next_event()).collect()
}

/// Feed the chunks one by one, draining after each.
fn feed_chunks(limit: usize, chunks: &[&[u8]]) -> (Vec<Result<SseEvent, SseError>>, bool) {
    let mut parser = SseParser::new(limit);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        out.extend(drain(&mut parser));
    }
    (out, parser.is_idle())
}

/// Whole, 1-byte and 2-byte chunkings all agree; returns the result.
fn parse_all_ways(limit: usize, input: &[u8]) -> Vec<Result<SseEvent, SseError>> {
    let whole = feed_chunks(limit, &[input]);
    let ones: Vec<&[u8]> = input.chunks(1).collect();
    let twos: Vec<&[u8]> = input.chunks(2).collect();
    assert_eq!(feed_chunks(limit, &ones), whole, "1-byte chunks differ");
    assert_eq!(feed_chunks(limit, &twos), whole, "2-byte chunks differ");
    whole.0
}

#[test]
fn single_event_defaults_to_message() {
    assert_eq!(
        parse_all_ways(BIG, b"data: hello\n\n"),
        vec![ev("message", b"hello")]
    );
}

#[test]
fn event_field_sets_type() {
    assert_eq!(
        parse_all_ways(BIG, b"event: control\ndata: {\"a\":1}\n\n"),
        vec![ev("control", b"{\"a\":1}")]
    );
    // Order of fields within the block does not matter; the last event wins.
    assert_eq!(
        parse_all_ways(BIG, b"data: x\nevent: a\nevent: b\n\n"),
        vec![ev("b", b"x")]
    );
}

#[test]
fn multi_line_data_is_joined_with_newlines() {
    let input = b"event: data\ndata: [\ndata: {\"k\":\"v\"},\ndata: {\"k\":\"w\"}\ndata: ]\n\n";
    assert_eq!(
        parse_all_ways(BIG, input),
        vec![ev("data", b"[\n{\"k\":\"v\"},\n{\"k\":\"w\"}\n]")]
    );
}

#[test]
fn protocol_example_data_then_control() {
    let input = b"event: data\ndata: AQIDBAUG\ndata: BwgJCg==\n\n\
                  event: control\ndata: {\"streamNextOffset\":\"123456_789\",\"streamCursor\":\"abc\"}\n\n";
    assert_eq!(
        parse_all_ways(BIG, input),
        vec![
            ev("data", b"AQIDBAUG\nBwgJCg=="),
            ev(
                "control",
                b"{\"streamNextOffset\":\"123456_789\",\"streamCursor\":\"abc\"}"
            ),
        ]
    );
}

#[test]
fn comments_are_ignored() {
    let input = b": keep-alive\n:\n\ndata: a\n: in the middle\ndata: b\n:data: nope\n\n";
    assert_eq!(parse_all_ways(BIG, input), vec![ev("message", b"a\nb")]);
}

#[test]
fn lf_cr_and_crlf_line_endings() {
    let expected = vec![ev("e", b"1\n2"), ev("message", b"3")];
    assert_eq!(
        parse_all_ways(BIG, b"event: e\ndata: 1\ndata: 2\n\ndata: 3\n\n"),
        expected
    );
    assert_eq!(
        parse_all_ways(BIG, b"event: e\rdata: 1\rdata: 2\r\rdata: 3\r\r"),
        expected
    );
    assert_eq!(
        parse_all_ways(
            BIG,
            b"event: e\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n"
        ),
        expected
    );
    // Mixed in one stream.
    assert_eq!(
        parse_all_ways(BIG, b"event: e\r\ndata: 1\rdata: 2\n\r\ndata: 3\r\n\r"),
        expected
    );
}

#[test]
fn lf_after_cr_is_one_terminator_but_lf_lf_is_two() {
    // "\r\n" is one line end: no dispatch from it alone.
    assert_eq!(parse_all_ways(BIG, b"data: a\r\n"), vec![]);
    // "\n\r" is two line ends: the second is a blank line.
    assert_eq!(
        parse_all_ways(BIG, b"data: a\n\r"),
        vec![ev("message", b"a")]
    );
    // "\r\r" likewise.
    assert_eq!(
        parse_all_ways(BIG, b"data: a\r\r"),
        vec![ev("message", b"a")]
    );
}

#[test]
fn crlf_split_across_pushes_is_one_line_end() {
    let (out, idle) = feed_chunks(BIG, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(out, vec![ev("message", b"a\nb")]);
    assert!(idle);

    // The LF after a CR is skipped even when it arrives in a later push,
    // with empty pushes in between.
    let (out, _) = feed_chunks(BIG, &[b"data: a\r", b"", b"\n", b"", b"\r", b"", b"\n"]);
    assert_eq!(out, vec![ev("message", b"a")]);
}

#[test]
fn cr_terminated_blank_line_dispatches_without_waiting() {
    let mut parser = SseParser::new(BIG);
    parser.push(b"data: a\r\r");
    assert_eq!(drain(&mut parser), vec![ev("message", b"a")]);
    // A following LF belongs to the CR and is not another blank line.
    parser.push(b"\ndata: b\n\n");
    assert_eq!(drain(&mut parser), vec![ev("message", b"b")]);
}

#[test]
fn bom_at_start_is_skipped() {
    assert_eq!(
        parse_all_ways(BIG, b"\xEF\xBB\xBFdata: a\n\n"),
        vec![ev("message", b"a")]
    );
    let (out, _) = feed_chunks(BIG, &[b"\xEF", b"\xBB", b"\xBF", b"data: a\n\n"]);
    assert_eq!(out, vec![ev("message", b"a")]);
    // A BOM followed directly by a blank line or comment.
    assert_eq!(
        parse_all_ways(BIG, b"\xEF\xBB\xBF\ndata: a\n\n"),
        vec![ev("message", b"a")]
    );
}

#[test]
fn bom_only_skipped_at_the_very_start() {
    // A second BOM makes the field name "\u{FEFF}data": an unknown field.
    assert_eq!(
        parse_all_ways(BIG, b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"),
        vec![]
    );
    assert_eq!(
        parse_all_ways(BIG, b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
        vec![ev("message", b"a")]
    );
    // A BOM inside a value is kept.
    assert_eq!(
        parse_all_ways(BIG, b"data: \xEF\xBB\xBFx\n\n"),
        vec![ev("message", b"\xEF\xBB\xBFx")]
    );
}

#[test]
fn partial_bom_prefix_is_ordinary_bytes() {
    // "\xEF\xBB" followed by something other than "\xBF" is not a BOM.
    assert_eq!(
        parse_all_ways(BIG, b"\xEF\xBBdata: a\n\ndata: b\n\n"),
        vec![ev("message", b"b")]
    );
    // A stream that is just a BOM prefix is not idle (truncated).
    let (out, idle) = feed_chunks(BIG, &[b"\xEF\xBB"]);
    assert_eq!(out, vec![]);
    assert!(!idle);
    let (_, idle) = feed_chunks(BIG, &[b"\xEF\xBB\xBF"]);
    assert!(idle);
}

#[test]
fn space_after_colon_is_optional_and_only_one_is_removed() {
    assert_eq!(
        parse_all_ways(BIG, b"data:a\n\n"),
        vec![ev("message", b"a")]
    );
    assert_eq!(
        parse_all_ways(BIG, b"event:x\ndata:a\n\n"),
        vec![ev("x", b"a")]
    );
    assert_eq!(
        parse_all_ways(BIG, b"data:  a \n\n"),
        vec![ev("message", b" a ")]
    );
    assert_eq!(
        parse_all_ways(BIG, b"data:\ta\n\n"),
        vec![ev("message", b"\ta")]
    );
    // Only the first colon separates field and value.
    assert_eq!(
        parse_all_ways(BIG, b"data: a: b:c\n\n"),
        vec![ev("message", b"a: b:c")]
    );
}

#[test]
fn data_without_colon_appends_empty_line() {
    assert_eq!(parse_all_ways(BIG, b"data\n\n"), vec![ev("message", b"")]);
    assert_eq!(
        parse_all_ways(BIG, b"data: a\ndata\ndata: b\n\n"),
        vec![ev("message", b"a\n\nb")]
    );
    assert_eq!(
        parse_all_ways(BIG, b"data\ndata\n\n"),
        vec![ev("message", b"\n")]
    );
}

#[test]
fn empty_data_line_dispatches_empty_event() {
    assert_eq!(parse_all_ways(BIG, b"data:\n\n"), vec![ev("message", b"")]);
    assert_eq!(
        parse_all_ways(BIG, b"event: data\ndata: \n\n"),
        vec![ev("data", b"")]
    );
    assert_eq!(
        parse_all_ways(BIG, b"data:\ndata:\n\n"),
        vec![ev("message", b"\n")]
    );
}

#[test]
fn event_type_resets_after_dispatch() {
    assert_eq!(
        parse_all_ways(BIG, b"event: control\ndata: a\n\ndata: b\n\n"),
        vec![ev("control", b"a"), ev("message", b"b")]
    );
    // An empty `event:` means the default type.
    assert_eq!(
        parse_all_ways(BIG, b"event: x\nevent:\ndata: a\n\n"),
        vec![ev("message", b"a")]
    );
}

#[test]
fn block_without_data_dispatches_nothing_and_resets_type() {
    assert_eq!(
        parse_all_ways(BIG, b"event: control\n\ndata: b\n\n"),
        vec![ev("message", b"b")]
    );
    assert_eq!(parse_all_ways(BIG, b"\n\n\n\r\n\r\r"), vec![]);
    let (_, idle) = feed_chunks(BIG, &[b"event: control\n\n"]);
    assert!(idle);
}

#[test]
fn unknown_event_types_are_returned() {
    assert_eq!(
        parse_all_ways(
            BIG,
            b"event: something-new\ndata: x\n\nevent: \xF0\x9F\xA6\x80\ndata: y\n\n"
        ),
        vec![ev("something-new", b"x"), ev("\u{1F980}", b"y")]
    );
}

#[test]
fn id_retry_and_unknown_fields_are_ignored() {
    let input = b"id: 42\nretry: 1000\nretry: nope\nid\nfoo: bar\nbaz\nid: a\0b\ndata: x\nid:\n\n";
    assert_eq!(parse_all_ways(BIG, input), vec![ev("message", b"x")]);
    // A block with only those fields dispatches nothing and leaves no state.
    let (out, idle) = feed_chunks(BIG, &[b"id: 1\nretry: 5\n"]);
    assert_eq!(out, vec![]);
    assert!(idle);
}

#[test]
fn field_names_are_case_sensitive() {
    assert_eq!(
        parse_all_ways(BIG, b"Data: a\nDATA: b\nEvent: x\ndata: c\n\n"),
        vec![ev("message", b"c")]
    );
    // Leading space makes a different field name.
    assert_eq!(parse_all_ways(BIG, b" data: a\n\n"), vec![]);
}

#[test]
fn invalid_utf8_is_passed_through_or_replaced() {
    assert_eq!(
        parse_all_ways(BIG, b"data: \xFF\xFE\xC3\n\n"),
        vec![ev("message", b"\xFF\xFE\xC3")]
    );
    assert_eq!(
        parse_all_ways(BIG, b"event: a\xFFb\ndata: x\n\n"),
        vec![ev("a\u{FFFD}b", b"x")]
    );
    // Multi-byte UTF-8 split across pushes survives intact.
    let (out, _) = feed_chunks(BIG, &[b"data: \xE2", b"\x82", b"\xAC\n", b"\n"]);
    assert_eq!(out, vec![ev("message", "\u{20AC}".as_bytes())]);
}

#[test]
fn several_events_in_one_push() {
    let mut parser = SseParser::new(BIG);
    parser.push(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4");
    assert_eq!(parser.next_event(), Some(ev("message", b"1")));
    assert_eq!(parser.next_event(), Some(ev("message", b"2")));
    assert_eq!(parser.next_event(), Some(ev("message", b"3")));
    assert_eq!(parser.next_event(), None);
    assert_eq!(parser.next_event(), None);
    parser.push(b"\n\n");
    assert_eq!(parser.next_event(), Some(ev("message", b"4")));
    assert_eq!(parser.next_event(), None);
}

#[test]
fn event_without_trailing_blank_line_is_not_dispatched() {
    let (out, idle) = feed_chunks(BIG, &[b"data: a\n\ndata: b\n"]);
    assert_eq!(out, vec![ev("message", b"a")]);
    assert!(!idle);
    let (out, idle) = feed_chunks(BIG, &[b"data: a\n\ndata: b"]);
    assert_eq!(out, vec![ev("message", b"a")]);
    assert!(!idle);
    let (out, idle) = feed_chunks(BIG, &[b"event: control\n"]);
    assert_eq!(out, vec![]);
    assert!(!idle);
}

#[test]
fn is_idle_tracks_partial_state() {
    let mut parser = SseParser::new(BIG);
    assert!(parser.is_idle());
    parser.push(b"da");
    assert!(drain(&mut parser).is_empty());
    assert!(!parser.is_idle());
    parser.push(b"ta: x\n");
    assert!(drain(&mut parser).is_empty());
    assert!(!parser.is_idle());
    parser.push(b"\r");
    assert_eq!(drain(&mut parser), vec![ev("message", b"x")]);
    assert!(parser.is_idle());
    parser.push(b": comment\n");
    assert!(drain(&mut parser).is_empty());
    assert!(parser.is_idle());
}

#[test]
fn too_large_event_errors_once_then_recovers() {
    // 10-byte limit; data buffer holds "0123456\n" (8) after one line,
    // the next data line pushes it over.
    let input = b"data: 0123456\ndata: 789\ndata: more\n\ndata: ok\n\n";
    assert_eq!(
        parse_all_ways(10, input),
        vec![too_large(10), ev("message", b"ok")]
    );
    let mut parser = SseParser::new(10);
    parser.push(input);
    assert_eq!(parser.next_event(), Some(too_large(10)));
    assert_eq!(parser.next_event(), Some(ev("message", b"ok")));
    assert_eq!(parser.next_event(), None);
    assert!(parser.is_idle());
}

#[test]
fn too_large_discards_event_type_and_following_lines() {
    let input = b"event: control\ndata: 0123456789abc\ndata: x\nevent: y\n\ndata: ok\n\n";
    assert_eq!(
        parse_all_ways(12, input),
        vec![too_large(12), ev("message", b"ok")]
    );
}

#[test]
fn too_large_single_line_streamed_byte_by_byte() {
    let limit = 100;
    let mut parser = SseParser::new(limit);
    let mut out = Vec::new();
    parser.push(b"data: ");
    for _ in 0..10_000 {
        parser.push(b"x");
        out.extend(drain(&mut parser));
        // Memory stays bounded while the oversized line keeps coming.
        assert!(parser.buf.len() <= limit);
    }
    assert_eq!(out, vec![too_large(limit)]);
    assert!(!parser.is_idle());
    parser.push(b"\ndata: y\n");
    assert_eq!(drain(&mut parser), vec![]);
    parser.push(b"\ndata: ok\n\n");
    assert_eq!(drain(&mut parser), vec![ev("message", b"ok")]);
    assert!(parser.is_idle());
}

#[test]
fn too_large_comment_line_also_counts() {
    let mut input = b": ".to_vec();
    input.extend(std::iter::repeat_n(b'c', 50));
    input.extend_from_slice(b"\ndata: a\n\ndata: b\n\n");
    assert_eq!(
        parse_all_ways(20, &input),
        vec![too_large(20), ev("message", b"b")]
    );
}

#[test]
fn limit_boundary_is_inclusive() {
    // The line "data: 0123" is 10 bytes; data then holds "0123\n" (5).
    assert_eq!(
        parse_all_ways(10, b"data: 0123\n\n"),
        vec![ev("message", b"0123")]
    );
    assert_eq!(parse_all_ways(9, b"data: 0123\n\n"), vec![too_large(9)]);
    // Second line: 5 bytes of data + "data: 45" (8) = 13.
    assert_eq!(
        parse_all_ways(13, b"data: 0123\ndata: 45\n\n"),
        vec![ev("message", b"0123\n45")]
    );
    assert_eq!(
        parse_all_ways(12, b"data: 0123\ndata: 45\n\n"),
        vec![too_large(12)]
    );
    // Limit 0: only blank lines fit, so nothing is ever dispatched, and
    // the parser keeps going.
    assert_eq!(
        parse_all_ways(0, b"data: a\n\n\ndata: b\n\n"),
        vec![too_large(0), too_large(0)]
    );
}

#[test]
fn unterminated_line_counts_together_with_event_data() {
    // Data holds "0123\n" (5); the unterminated "data: 4567" (10) brings
    // the event to 15 > 14 ("data: 45" alone still fit: 13): reported before the line ends, and the
    // buffered bytes are dropped.
    let mut parser = SseParser::new(14);
    parser.push(b"data: 0123\ndata: 45");
    assert_eq!(drain(&mut parser), vec![]);
    parser.push(b"67");
    assert_eq!(drain(&mut parser), vec![too_large(14)]);
    assert!(parser.buf.is_empty() && parser.data.is_empty());
    parser.push(b"89\n\ndata: ok\n\n");
    assert_eq!(drain(&mut parser), vec![ev("message", b"ok")]);
}

#[test]
fn too_large_error_followed_by_crlf_split() {
    let (out, idle) = feed_chunks(
        8,
        &[
            b"data: 0123456789\r",
            b"\n\r",
            b"\ndata: ok\r",
            b"\n\r",
            b"\n",
        ],
    );
    assert_eq!(out, vec![too_large(8), ev("message", b"ok")]);
    assert!(idle);
}

#[test]
fn large_events_in_small_pushes_take_linear_time() {
    // 2 MB event of 1000-byte lines in 1 KiB pushes.
    let line = [b'a'; 1000];
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..2000 {
        if i > 0 {
            expected.push(b'\n');
        }
        input.extend_from_slice(b"data: ");
        input.extend_from_slice(&line);
        input.push(b'\n');
        expected.extend_from_slice(&line);
    }
    input.push(b'\n');
    // Then a 200 KiB single-line event.
    let big_line = vec![b'b'; 200 * 1024];
    let second_start = input.len();
    input.extend_from_slice(b"event: data\ndata:");
    input.extend_from_slice(&big_line);
    input.extend_from_slice(b"\r\n\r\n");

    let mut parser = SseParser::new(4 * 1024 * 1024);
    let mut out = Vec::new();
    for chunk in input[..second_start].chunks(1024) {
        parser.push(chunk);
        out.extend(drain(&mut parser));
    }
    for chunk in input[second_start..].chunks(1) {
        parser.push(chunk);
        out.extend(drain(&mut parser));
    }
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], ev("message", &expected));
    assert_eq!(out[1], ev("data", &big_line));
    assert!(parser.is_idle());
}

#[test]
fn debug_output_is_compact() {
    let mut parser = SseParser::new(1 << 20);
    parser.push(&[b'x'; 100_000]);
    let _ = drain(&mut parser);
    let s = format!("{parser:?}");
    assert!(s.len() < 200, "{s}");
    assert!(s.contains("100000"), "{s}");
}

#[test]
fn fuzz_entry_smoke() {
    let input = b"\xEF\xBB\xBFevent: a\r\ndata: x\r\n\r\ndata: y\n\n: c\rdata: z\r\r";
    for split in [0, 1, 5, 17, input.len(), usize::MAX] {
        assert_eq!(fuzz_entry(input, split), 3);
    }
    assert_eq!(fuzz_entry(b"", 0), 0);
    let mut big = b"data: ".to_vec();
    big.extend(std::iter::repeat_n(b'z', 3000));
    big.extend_from_slice(b"\n\ndata: ok\n\n");
    assert_eq!(fuzz_entry(&big, 1500), 2);
}

// ---- property tests -------------------------------------------------

/// A generated event: optional type and its data lines (no CR/LF inside).
#[derive(Debug, Clone)]
struct GenEvent {
    event: Option<String>,
    lines: Vec<Vec<u8>>,
    /// Extra lines to sprinkle in: comments, id/retry/unknown fields.
    noise: Vec<Vec<u8>>,
    /// Whether to use "data:" (no space) where it is unambiguous.
    tight: bool,
}

fn line_content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            1 => Just(b':'),
            1 => Just(b' '),
        ],
        0..12,
    )
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        prop::option::of("[^\r\n]{0,8}"),
        prop::collection::vec(line_content(), 0..4),
        prop::collection::vec(
            prop_oneof![
                line_content().prop_map(|c| [b":".to_vec(), c].concat()),
                line_content().prop_map(|c| [b"id: ".to_vec(), c].concat()),
                line_content().prop_map(|c| [b"retry:".to_vec(), c].concat()),
                line_content().prop_map(|c| [b"x-unknown: ".to_vec(), c].concat()),
                Just(b"id".to_vec()),
            ],
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(event, lines, noise, tight)| GenEvent {
            event,
            lines,
            noise,
            tight,
        })
}

fn field_line(name: &[u8], value: &[u8], tight: bool) -> Vec<u8> {
    let mut line = name.to_vec();
    if value.is_empty() && tight {
        return line; // "data" with no colon
    }
    line.push(b':');
    if !tight || value.first() == Some(&b' ') {
        line.push(b' ');
    }
    line.extend_from_slice(value);
    line
}

/// Serialise events as lines, then join them with the given endings
/// (cycled), avoiding the one ambiguous case: a CR-ended line followed by
/// an empty LF-ended line would read as a single CRLF.
fn serialise(events: &[GenEvent], bom: bool, endings: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for e in events {
        let mut block = Vec::new();
        if let Some(name) = &e.event {
            block.push(field_line(b"event", name.as_bytes(), e.tight));
        }
        for l in &e.lines {
            block.push(field_line(b"data", l, e.tight));
        }
        // Interleave noise at the front and back so it cannot
        // change the meaning of data lines.
        for (i, n) in e.noise.iter().enumerate() {
            if i % 2 == 0 {
                block.insert(0, n.clone());
            } else {
                block.push(n.clone());
            }
        }
        lines.extend(block);
        lines.push(Vec::new());
    }
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(BOM);
    }
    let mut prev_cr = false;
    for (i, line) in lines.iter().enumerate() {
        out.extend_from_slice(line);
        let mut ending = endings[i % endings.len()];
        if prev_cr && line.is_empty() && ending == 0 {
            ending = 2;
        }
        match ending {
            0 => out.push(b'\n'),
            1 => out.push(b'\r'),
            _ => out.extend_from_slice(b"\r\n"),
        }
        prev_cr = ending == 1;
    }
    out
}

fn expected_events(events: &[GenEvent]) -> Vec<Result<SseEvent, SseError>> {
    events
        .iter()
        .filter(|e| !e.lines.is_empty())
        .map(|e| {
            let name = match e.event.as_deref() {
                None | Some("") => DEFAULT_EVENT_TYPE,
                Some(n) => n,
            };
            ev(name, &e.lines.join(&b'\n'))
        })
        .collect()
}

/// Split `input` at the given (unsorted, possibly out-of-range) cut points.
fn split_at_points<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for c in cuts {
        chunks.push(&input[start..c]);
        start = c;
    }
    chunks.push(&input[start..]);
    chunks
}

fn noisy_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>().prop_map(|b| vec![b]),
            2 => Just(b"\n".to_vec()),
            2 => Just(b"\r".to_vec()),
            1 => Just(b"\r\n".to_vec()),
            2 => Just(b"data".to_vec()),
            1 => Just(b"event".to_vec()),
            2 => Just(b":".to_vec()),
            2 => Just(b" ".to_vec()),
            1 => Just(b"id".to_vec()),
            1 => Just(BOM.to_vec()),
            1 => Just(b"\xEF\xBB".to_vec()),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn prop_generated_events_roundtrip_under_any_chunking(
        events in prop::collection::vec(gen_event(), 0..6),
        bom in any::<bool>(),
        endings in prop::collection::vec(0u8..3, 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let input = serialise(&events, bom, &endings);
        let expected = expected_events(&events);
        let (whole, whole_idle) = feed_chunks(BIG, &[&input]);
        prop_assert_eq!(&whole, &expected);
        prop_assert!(whole_idle);
        let chunks = split_at_points(&input, &cuts);
        let (split, split_idle) = feed_chunks(BIG, &chunks);
        prop_assert_eq!(&split, &expected);
        prop_assert!(split_idle);
    }

    #[test]
    fn prop_random_bytes_never_panic_and_chunking_is_invisible(
        input in noisy_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        limit in prop_oneof![0usize..48, Just(BIG)],
    ) {
        let whole = feed_chunks(limit, &[&input]);
        let chunks = split_at_points(&input, &cuts);
        let split = feed_chunks(limit, &chunks);
        prop_assert_eq!(&split, &whole);
        let ones: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&feed_chunks(limit, &ones), &whole);
        for e in whole.0.iter().flatten() {
            prop_assert!(e.data.len() <= limit);
        }
    }
}

/// Once everything read is parsed, an input buffer grown by a large read
/// is let go: an idle reader keeps only a small one.
#[test]
fn idle_parser_lets_a_large_input_buffer_go() {
    let mut parser = SseParser::new(BIG);
    let big = format!("data: {}\n\n", "x".repeat(20_000));
    parser.input().extend_from_slice(big.as_bytes());
    let event = parser.next_event().unwrap().unwrap();
    assert_eq!(event.data.len(), 20_000);
    assert_eq!(parser.next_event(), None);
    parser.input().extend_from_slice(b"data: a\n\n");
    let small = parser.buf.capacity();
    assert!(small <= KEPT_INPUT, "{small}");
    assert_eq!(parser.next_event(), Some(ev("message", b"a")));
    assert_eq!(parser.next_event(), None);
    // A small one is kept (and reused) for the next read.
    parser.input().extend_from_slice(b"data: b\n\n");
    assert_eq!(parser.buf.capacity(), small);
    assert_eq!(parser.next_event(), Some(ev("message", b"b")));
    // Small payloads are copied out: the data buffer keeps its memory.
    assert!(parser.data.capacity() > 0);
}

/// An event's data can be read where the parser holds it, until the next
/// call, or taken; either way the next event starts clean.
#[test]
fn dispatched_data_is_read_in_place_or_taken() {
    let mut parser = SseParser::new(BIG);
    parser.push(b"event: control\ndata: {\"a\":1}\n\ndata: x\n\ndata: y\n\n");
    assert_eq!(parser.next_dispatch(), Some(Ok("control".into())));
    assert_eq!(parser.data(), b"{\"a\":1}");
    assert_eq!(parser.data(), b"{\"a\":1}");
    assert!(parser.is_idle() || !parser.buf.is_empty());
    assert_eq!(parser.next_dispatch(), Some(Ok("message".into())));
    assert_eq!(parser.data(), b"x");
    assert_eq!(parser.take_data(), Bytes::from_static(b"x"));
    assert_eq!(parser.data(), b"");
    assert_eq!(parser.take_data(), Bytes::new());
    assert_eq!(parser.next_event(), Some(ev("message", b"y")));
    assert_eq!(parser.next_dispatch(), None);
    assert!(parser.is_idle());
}

/// Data read in place and not taken does not leave a large buffer behind.
#[test]
fn large_data_read_in_place_is_let_go() {
    let mut parser = SseParser::new(BIG);
    let big = format!("event: control\ndata: {}\n\n", "x".repeat(20_000));
    parser.push(big.as_bytes());
    assert_eq!(parser.next_dispatch(), Some(Ok("control".into())));
    assert_eq!(parser.data().len(), 20_000);
    assert_eq!(parser.next_dispatch(), None);
    assert_eq!(parser.data.capacity(), 0);
}
