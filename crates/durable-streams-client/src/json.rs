//! JSON mode (PROTOCOL.md 9.1): request bodies that survive the server's
//! one-level array flattening, and response arrays split into messages.

use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{DecodeKind, Error, Result};
use crate::read::Chunk;

fn encode_error(e: crate::json_encode::EncodeError) -> Error {
    Error::invalid_argument("value", format!("could not serialize to JSON: {e}"))
}

/// `[value]`: the server flattens one level, so exactly one message is stored
/// even when `value` is itself an array.
pub(crate) fn single_message_body<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(b'[');
    crate::json_encode::write(&mut out, value).map_err(encode_error)?;
    out.put_u8(b']');
    Ok(out.freeze())
}

/// `[a,b,...]`: one message per value. An empty batch is rejected before any
/// request (the server would answer 400).
pub(crate) fn batch_body<T: Serialize, I: IntoIterator<Item = T>>(values: I) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(256);
    out.put_u8(b'[');
    let mut count = 0usize;
    for value in values {
        if count > 0 {
            out.put_u8(b',');
        }
        crate::json_encode::write(&mut out, &value).map_err(encode_error)?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::invalid_argument(
            "values",
            "a JSON batch needs at least one value",
        ));
    }
    out.put_u8(b']');
    Ok(out.freeze())
}

/// The likeliest cause of a JSON stream's read body that is not a whole
/// array: a read that started inside a message (a server slices its bytes
/// at any offset it is given).
const NOT_A_BOUNDARY: &str = "; if the read started at an offset that did not come from \
    the server (a Stream-Next-Offset or a batch's exact offset), that offset is probably \
    not a message boundary";

/// Split a JSON array response into its messages without building a tree:
/// zero-copy slices of `body`.
pub(crate) fn split_messages(body: &Bytes) -> Result<Vec<Bytes>> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<&RawValue> = serde_json::from_slice(trimmed).map_err(|e| {
        Error::decode(
            DecodeKind::Json,
            format!("expected a JSON array of messages: {e}{NOT_A_BOUNDARY}"),
        )
    })?;
    // Borrowed raw values point into `body`.
    Ok(raw
        .into_iter()
        .map(|r| body.slice_ref(r.get().as_bytes()))
        .collect())
}

/// Deserialize one message into the caller's type.
pub(crate) fn decode_message<T: DeserializeOwned>(message: &[u8]) -> Result<T> {
    serde_json::from_slice(message).map_err(message_error)
}

/// A message's decode error, by class: not JSON at all, or JSON of
/// another shape than the caller's type.
fn message_error(e: serde_json::Error) -> Error {
    Error::decode(
        DecodeKind::Json,
        match e.classify() {
            // Not JSON at all: likeliest a read that began mid-message.
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("a message is not valid JSON: {e}{NOT_A_BOUNDARY}")
            }
            _ => format!("message does not match the requested type: {e}"),
        },
    )
}

/// Deserialize split messages into the caller's type.
pub(crate) fn decode_slices<T: DeserializeOwned>(items: &[Bytes]) -> Result<Vec<T>> {
    items.iter().map(|m| decode_message(m)).collect()
}

/// Deserialize a JSON chunk's messages into the caller's type. A chunk's
/// `data` is the array of its messages (framed by the reader, or the
/// server's own array), so the whole piece is decoded in one pass as a
/// `Vec<T>`: no per-message parser set-up or allocation. If that fails, the
/// messages are decoded one by one for an error that says which failed and
/// why.
pub(crate) fn decode_chunk<T: DeserializeOwned>(chunk: &mut Chunk) -> Result<Vec<T>> {
    if !chunk.data.is_empty()
        && let Ok(items) = serde_json::from_slice::<Vec<T>>(&chunk.data)
    {
        return Ok(items);
    }
    decode_slices(&chunk.take_json_messages()?)
}

/// Bytes that can change the array structure outside a string: quotes,
/// brackets, braces, commas, backslashes and whitespace (which may end a
/// top-level element). Everything else is skipped in runs.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    let bytes = b"\"[]{},\\ \t\n\r";
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
};

/// Splits a JSON array response into its top-level elements while it
/// arrives, so a large catch-up response is delivered in bounded pieces.
/// Elements are not validated here (serde does that when they are decoded);
/// only the array structure is tracked: nesting, strings and escapes.
#[derive(Debug)]
pub(crate) struct ArraySplitter {
    state: SplitState,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The element being read.
    current: BytesMut,
    /// Complete elements not yet taken.
    ready: Vec<Bytes>,
    /// Largest element accepted.
    limit: usize,
    /// Elements completed so far (taken or not).
    elements: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitState {
    /// Before the opening `[`.
    Start,
    /// Inside the array, before an element or `]`.
    BeforeElement,
    /// Inside an element.
    InElement,
    /// After an element, before `,` or `]`.
    AfterElement,
    /// After the closing `]`.
    Done,
}

impl ArraySplitter {
    pub(crate) fn new(limit: usize) -> Self {
        ArraySplitter {
            state: SplitState::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            current: BytesMut::new(),
            ready: Vec::new(),
            limit,
            elements: 0,
        }
    }

    pub(crate) fn malformed(what: &str) -> Error {
        Error::decode(
            DecodeKind::Json,
            format!("expected a JSON array of messages: {what}{NOT_A_BOUNDARY}"),
        )
    }

    /// Feed the next piece of the body. Elements that lie within one piece
    /// are zero-copy slices of it.
    pub(crate) fn feed(&mut self, piece: &Bytes) -> Result<()> {
        let data: &[u8] = piece;
        // Where the current element starts in this piece (None: it started
        // in an earlier piece and its head is in `current`).
        let mut element_start = None;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                SplitState::Start => match b {
                    b'[' => self.state = SplitState::BeforeElement,
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err(Self::malformed("the body does not start with `[`")),
                },
                SplitState::BeforeElement => match b {
                    b']' if self.elements == 0 => self.state = SplitState::Done,
                    b if b.is_ascii_whitespace() => {}
                    b',' | b']' => return Err(Self::malformed("missing element")),
                    _ => {
                        self.state = SplitState::InElement;
                        element_start = Some(i);
                        self.scan(b);
                    }
                },
                SplitState::InElement => {
                    if self.escaped {
                        self.escaped = false;
                    } else if self.in_string {
                        // Jump to the next quote or backslash: strings are
                        // most of a JSON body. Short strings (keys, enum
                        // values) end within a few bytes: look there first,
                        // where a vector search costs more than it saves.
                        let near = &data[i..data.len().min(i + 16)];
                        let found = match near.iter().position(|&c| c == b'"' || c == b'\\') {
                            Some(offset) => Some(offset),
                            None if near.len() < data.len() - i => {
                                memchr::memchr2(b'"', b'\\', &data[i + near.len()..])
                                    .map(|o| o + near.len())
                            }
                            None => None,
                        };
                        match found {
                            Some(offset) => {
                                i += offset;
                                self.scan(data[i]);
                            }
                            None => i = data.len() - 1,
                        }
                    } else if !STRUCTURAL[usize::from(b)] {
                        // Numbers, literals, colons: skip the whole run of
                        // bytes that cannot change the structure.
                        i += data[i..]
                            .iter()
                            .position(|&c| STRUCTURAL[usize::from(c)])
                            .map_or(data.len() - i, |p| p)
                            - 1;
                    } else if self.depth > 0
                        || !matches!(b, b',' | b']') && !b.is_ascii_whitespace()
                    {
                        self.scan(b);
                    } else {
                        // The element ends here.
                        let element = match element_start.take() {
                            Some(start) if self.current.is_empty() => piece.slice(start..i),
                            start => {
                                self.current.extend_from_slice(&data[start.unwrap_or(0)..i]);
                                self.current.split().freeze()
                            }
                        };
                        self.complete_element(element)?;
                        self.state = SplitState::AfterElement;
                        self.after_element(b)?;
                    }
                }
                SplitState::AfterElement => self.after_element(b)?,
                SplitState::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(Self::malformed("data after the closing `]`"));
                    }
                }
            }
            i += 1;
        }
        if self.state == SplitState::InElement {
            let start = element_start.unwrap_or(0);
            self.current.extend_from_slice(&data[start..]);
            if self.current.len() > self.limit {
                return Err(too_large(self.limit));
            }
        }
        Ok(())
    }

    /// Track nesting and strings for one byte of an element.
    fn scan(&mut self, b: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return;
        }
        match b {
            b'"' => self.in_string = true,
            b'[' | b'{' => self.depth += 1,
            b']' | b'}' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }

    fn after_element(&mut self, b: u8) -> Result<()> {
        match b {
            b',' => self.state = SplitState::BeforeElement,
            b']' => self.state = SplitState::Done,
            b if b.is_ascii_whitespace() => {}
            _ => return Err(Self::malformed("expected `,` or `]` between messages")),
        }
        Ok(())
    }

    fn complete_element(&mut self, element: Bytes) -> Result<()> {
        if element.len() > self.limit {
            return Err(too_large(self.limit));
        }
        self.ready.push(element);
        self.elements += 1;
        Ok(())
    }

    /// Complete elements so far, in order.
    pub(crate) fn take(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.ready)
    }

    /// The body ended: it must have been a whole array (or empty).
    pub(crate) fn finish(&self) -> Result<()> {
        match self.state {
            SplitState::Done | SplitState::Start => Ok(()),
            _ => Err(Self::malformed("the body ended inside the array")),
        }
    }
}

/// A typed decoder a read feeds a large JSON array body through, type-erased
/// so that the read session itself stays free of the caller's type.
pub(crate) trait ArrayDecoder: Send {
    /// A new response begins: forget the array position and any undelivered
    /// items, and drop its first `skip` elements (handed out before the body
    /// broke and was requested again).
    fn start(&mut self, skip: u64);

    /// Decode whole elements from the front of `buf`, which continues the
    /// body where the last call stopped, until at least `target` bytes are
    /// consumed or the next element is not all in `buf`. Returns the bytes
    /// consumed; `ended` says `buf` runs to the end of the body.
    fn read(&mut self, buf: &[u8], target: usize, ended: bool) -> Result<usize>;

    /// Items decoded and kept since they were last taken.
    fn pending(&self) -> usize;
}

/// A typed reader shared by a read session, which feeds it, and the typed
/// stream, consumer or worker on top, which takes the items of each chunk
/// that has `typed_bytes`.
pub(crate) struct SharedArrayReader<T>(Arc<Mutex<TypedArrayReader<T>>>);

impl<T> Clone for SharedArrayReader<T> {
    fn clone(&self) -> Self {
        SharedArrayReader(Arc::clone(&self.0))
    }
}

impl<T> SharedArrayReader<T> {
    /// Messages up to `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        SharedArrayReader(Arc::new(Mutex::new(TypedArrayReader::new(limit))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TypedArrayReader<T>> {
        // Nothing spans an unwind inside the reader: a poisoned lock is fine.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: DeserializeOwned + Send + 'static> ArrayDecoder for SharedArrayReader<T> {
    fn start(&mut self, skip: u64) {
        self.lock().start(skip);
    }

    fn read(&mut self, buf: &[u8], target: usize, ended: bool) -> Result<usize> {
        self.lock().read(buf, target, ended)
    }

    fn pending(&self) -> usize {
        self.lock().items.len()
    }
}

/// A JSON chunk's messages in the caller's type: taken from `typed` when
/// the session decoded them while they arrived, else decoded from the
/// chunk.
pub(crate) fn decode_typed<T: DeserializeOwned>(
    typed: Option<&SharedArrayReader<T>>,
    chunk: &mut Chunk,
) -> Result<Vec<T>> {
    match (typed, chunk.typed_bytes) {
        (Some(reader), Some(_)) => Ok(reader.lock().take()),
        _ => decode_chunk(chunk),
    }
}

/// Where a typed reader is in the array, between elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayPos {
    Start,
    BeforeElement,
    AfterElement,
    Done,
}

/// Decodes a JSON array body straight into `T`s while it arrives, in
/// pieces cut at element boundaries. serde finds each element's end while
/// decoding it, so every byte is scanned once, as a raw
/// `serde_json::from_slice::<Vec<T>>` of the whole body would, while only
/// a piece and one partial element are held.
pub(crate) struct TypedArrayReader<T> {
    state: ArrayPos,
    /// Decoded, kept and not yet taken.
    items: Vec<T>,
    /// Elements of this response decoded so far (kept or skipped).
    elements: u64,
    /// Leading elements of this response to drop.
    skip: u64,
    /// Largest element accepted.
    limit: usize,
}

impl<T> TypedArrayReader<T> {
    pub(crate) fn new(limit: usize) -> Self {
        TypedArrayReader {
            state: ArrayPos::Start,
            items: Vec::new(),
            elements: 0,
            skip: 0,
            limit,
        }
    }

    /// The items decoded since the last take.
    pub(crate) fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }
}

impl<T: DeserializeOwned> TypedArrayReader<T> {
    /// See [`ArrayDecoder::start`].
    pub(crate) fn start(&mut self, skip: u64) {
        self.state = ArrayPos::Start;
        self.items.clear();
        self.elements = 0;
        self.skip = skip;
    }

    /// See [`ArrayDecoder::read`].
    pub(crate) fn read(&mut self, buf: &[u8], target: usize, ended: bool) -> Result<usize> {
        let mut i = 0;
        loop {
            while buf.get(i).is_some_and(is_json_space) {
                i += 1;
            }
            let Some(&b) = buf.get(i) else {
                if ended && !matches!(self.state, ArrayPos::Start | ArrayPos::Done) {
                    return Err(ArraySplitter::malformed("the body ended inside the array"));
                }
                return Ok(i);
            };
            match self.state {
                ArrayPos::Start if b == b'[' => self.state = ArrayPos::BeforeElement,
                ArrayPos::Start => {
                    return Err(ArraySplitter::malformed("the body does not start with `[`"));
                }
                ArrayPos::BeforeElement if b == b']' && self.elements == 0 => {
                    self.state = ArrayPos::Done;
                }
                ArrayPos::BeforeElement if b == b',' || b == b']' => {
                    return Err(ArraySplitter::malformed("missing element"));
                }
                ArrayPos::BeforeElement => {
                    if i >= target {
                        return Ok(i);
                    }
                    match self.element(&buf[i..], ended)? {
                        Some(len) => {
                            i += len;
                            self.state = ArrayPos::AfterElement;
                            continue;
                        }
                        None => return Ok(i),
                    }
                }
                ArrayPos::AfterElement if b == b',' => self.state = ArrayPos::BeforeElement,
                ArrayPos::AfterElement if b == b']' => self.state = ArrayPos::Done,
                ArrayPos::AfterElement => {
                    return Err(ArraySplitter::malformed(
                        "expected `,` or `]` between messages",
                    ));
                }
                ArrayPos::Done => {
                    return Err(ArraySplitter::malformed("data after the closing `]`"));
                }
            }
            i += 1;
        }
    }

    /// Decode the element at the start of `rest`: its length, or `None`
    /// when it is not all there yet (more of the body is to come).
    fn element(&mut self, rest: &[u8], ended: bool) -> Result<Option<usize>> {
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        match values.next() {
            Some(Ok(value)) => {
                let len = values.byte_offset();
                if len > self.limit {
                    return Err(too_large(self.limit));
                }
                // A number at the end of `buf` may go on in the next piece:
                // an element counts once the byte after it is here.
                if !ended && rest[len..].iter().all(is_json_space) {
                    return self.incomplete(rest);
                }
                self.elements += 1;
                if self.elements > self.skip {
                    self.items.push(value);
                }
                Ok(Some(len))
            }
            // Errors count only for a whole element: one cut short may
            // fail in ways the whole one does not.
            Some(Err(e)) if !ended && (e.is_eof() || !holds_whole_element(rest)) => {
                self.incomplete(rest)
            }
            Some(Err(e)) => Err(message_error(e)),
            None => Err(ArraySplitter::malformed("the body ended inside the array")),
        }
    }

    fn incomplete(&self, rest: &[u8]) -> Result<Option<usize>> {
        if rest.len() > self.limit {
            return Err(too_large(self.limit));
        }
        Ok(None)
    }
}

/// JSON's whitespace (RFC 8259), as serde_json reads it: narrower than
/// ASCII whitespace (no form feed).
fn is_json_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn too_large(limit: usize) -> Error {
    Error::new(crate::ErrorKind::ResponseTooLarge { limit })
        .with_message("a single JSON message exceeds the size limit")
}

/// Whether `rest`, which starts with an element, holds all of it (its
/// nesting closed, or a delimiter after a scalar).
fn holds_whole_element(rest: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for &b in rest {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 0 {
                    return true;
                }
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth <= 1 => return true,
            b']' | b'}' => depth -= 1,
            b',' if depth == 0 => return true,
            b if is_json_space(&b) && depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// Feeds `body` to a typed reader in parts cut at `cuts` (taken modulo
/// the body's length), as a read does: bytes not consumed are kept and the
/// next part appended. For tests and fuzzing.
pub(crate) fn read_in_parts<T: DeserializeOwned>(
    body: &[u8],
    cuts: &[usize],
    target: usize,
    skip: u64,
    limit: usize,
) -> Result<Vec<T>> {
    let mut reader = TypedArrayReader::<T>::new(limit);
    reader.start(skip);
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.push(body.len());
    points.sort_unstable();
    let (mut held, mut from, mut out) = (Vec::new(), 0, Vec::new());
    for point in points {
        held.extend_from_slice(&body[from..point]);
        from = point;
        let ended = point == body.len();
        loop {
            let consumed = reader.read(&held, target, ended)?;
            held.drain(..consumed);
            out.extend(reader.take());
            if consumed == 0 || held.is_empty() {
                break;
            }
        }
    }
    // At the end of the body everything is consumed, or it is an error.
    assert!(held.is_empty(), "typed reader left bytes at the end");
    Ok(out)
}

/// `[a,b,...]` from raw elements.
pub(crate) fn frame_elements(items: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.put_u8(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_u8(b']');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// What the server stores for a POST body (PROTOCOL.md 9.1.2).
    fn server_flatten(body: &[u8]) -> Vec<Value> {
        match serde_json::from_slice::<Value>(body).unwrap() {
            Value::Array(items) => items,
            other => vec![other],
        }
    }

    #[test]
    fn single_values_stay_single_messages() {
        for v in [
            json!({"a":1}),
            json!([1, 2]),
            json!([[1, 2, 3]]),
            json!(null),
            json!("s"),
        ] {
            let body = single_message_body(&v).unwrap();
            assert_eq!(server_flatten(&body), vec![v]);
        }
    }

    #[test]
    fn batches_become_one_message_each() {
        let body = batch_body([json!([1, 2]), json!([3, 4])]).unwrap();
        assert_eq!(server_flatten(&body), vec![json!([1, 2]), json!([3, 4])]);
        let err = batch_body(Vec::<Value>::new()).unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "values" }
        );
    }

    #[test]
    fn split_messages_counts_every_value() {
        let items = split_messages(&Bytes::from_static(b" [ {\"a\":1}, [2], 3 ] ")).unwrap();
        let got: Vec<Value> = decode_slices(&items).unwrap();
        assert_eq!(got, vec![json!({"a":1}), json!([2]), json!(3)]);
        assert!(split_messages(&Bytes::new()).unwrap().is_empty());
        assert!(split_messages(&Bytes::from_static(b"{\"a\":1}")).is_err());
        assert!(split_messages(&Bytes::from_static(b"[1,")).is_err());
        // A message that is itself an empty array or object is a message.
        let items = split_messages(&Bytes::from_static(b"[[],{},[[]]]")).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(&items[0][..], b"[]");
    }

    #[test]
    fn decode_type_mismatch_is_a_decode_error() {
        let items = split_messages(&Bytes::from_static(b"[\"x\"]")).unwrap();
        let err = decode_slices::<u32>(&items).unwrap_err();
        assert_eq!(err.kind(), &crate::ErrorKind::Decode(DecodeKind::Json));
    }

    /// A typed message, like the benchmark's.
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Msg {
        id: u64,
        user: String,
        ok: bool,
    }

    /// A decode's value, or its error's class and text.
    fn outcome<T>(r: Result<T>) -> std::result::Result<T, (&'static str, String)> {
        r.map_err(|e| {
            assert_eq!(e.kind(), &crate::ErrorKind::Decode(DecodeKind::Json));
            let text = e.to_string();
            let class = if text.contains("a message is not valid JSON") {
                assert!(text.contains(NOT_A_BOUNDARY), "{text}");
                "syntax"
            } else if text.contains("message does not match the requested type") {
                "type"
            } else if text.contains("expected a JSON array of messages") {
                // The chunk's fallback splits its array first.
                assert!(text.contains(NOT_A_BOUNDARY), "{text}");
                "array"
            } else {
                panic!("unexpected error: {text}")
            };
            (class, text)
        })
    }

    /// Typed decoding against serde_json itself: the same value, or an
    /// error of the same class that quotes serde_json's (a guard for any
    /// change of decoder). The error's class, if any.
    fn check_decode<T>(body: &[u8]) -> Option<&'static str>
    where
        T: DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let shown = String::from_utf8_lossy(body);
        let got = outcome(decode_message::<T>(body));
        match (&got, serde_json::from_slice::<T>(body)) {
            (Ok(value), Ok(reference)) => assert_eq!(value, &reference, "{shown:?}"),
            (Err((class, text)), Err(reference)) => {
                use serde_json::error::Category;
                let syntax = matches!(reference.classify(), Category::Syntax | Category::Eof);
                assert_eq!(*class, if syntax { "syntax" } else { "type" }, "{shown:?}");
                assert!(text.contains(&reference.to_string()), "{shown:?}: {text}");
            }
            (got, reference) => panic!("{shown:?}: {got:?}, serde_json: {reference:?}"),
        }
        got.err().map(|(class, _)| class)
    }

    #[test]
    fn decode_errors_keep_their_class() {
        let cases: &[(&[u8], Option<&str>)] = &[
            // Valid, with escapes, whitespace and non-ASCII text.
            (br#"{"id":1,"user":"u1","ok":true}"#, None),
            (
                b" {\"ok\" : false ,\n \"user\":\"\\u00e9\\\"\\ud83d\\ude00\xc3\xa9\", \"id\": 18446744073709551615 } ",
                None,
            ),
            // serde accepts a sequence for a struct.
            (br#"[7,"x",true]"#, None),
            // Valid JSON of another shape.
            (br#"{"id":"1","user":"u1","ok":true}"#, Some("type")),
            (br#"{"id":-1,"user":"u1","ok":true}"#, Some("type")),
            (br#"{"id":1.5,"user":"u1","ok":true}"#, Some("type")),
            (br#"{"id":1,"user":"u1"}"#, Some("type")),
            (br#"{"id":1,"id":2,"user":"u1","ok":true}"#, Some("type")),
            (br#"{"id":18446744073709551616,"user":"u1","ok":true}"#, Some("type")),
            (b"null", Some("type")),
            (b"\"x\"", Some("type")),
            // Truncated: a read that ended, or began, inside a message.
            (b"", Some("syntax")),
            (b"  ", Some("syntax")),
            (br#"{"id":1,"user":"u1""#, Some("syntax")),
            (br#"{"id":1,"us"#, Some("syntax")),
            // A value first, then the rest: serde_json reports the type.
            (br#"":1,"user":"u1","ok":true}"#, Some("type")),
            (br#"1,"user":"u1","ok":true}"#, Some("type")),
            // Not JSON.
            (br#"{"id":1,"user":"u1","ok":tru}"#, Some("syntax")),
            (br#"{"id":1,"user":"u1","ok":true}x"#, Some("syntax")),
            (br#"{"id":1,"user":"u1","ok":true,}"#, Some("syntax")),
            (br#"{"id":1,"user":"\ud800","ok":true}"#, Some("syntax")),
            (b"{\"id\":1,\"user\":\"a\tb\",\"ok\":true}", Some("syntax")),
            // Invalid UTF-8: in a string, outside one, and where the value
            // would not match the type either.
            (b"{\"id\":1,\"user\":\"\xff\",\"ok\":true}", Some("syntax")),
            (b"{\"id\":1,\"user\":\"\xc3\",\"ok\":true}", Some("syntax")),
            (b"{\"id\":1,\"user\":\"u1\",\"ok\":true}\xff", Some("syntax")),
            (b"\"\xff\"", Some("syntax")),
        ];
        for &(body, class) in cases {
            assert_eq!(
                check_decode::<Msg>(body),
                class,
                "{:?}",
                String::from_utf8_lossy(body)
            );
            check_decode::<Value>(body);
        }
        // A chunk's whole array in one pass, and its fallback: the error
        // names the failing message.
        let mut chunk = crate::testing::chunk_with(
            Bytes::from_static(br#"[{"id":1,"user":"a","ok":true},[2,"b",false]]"#),
            crate::Offset::start(),
            true,
            false,
        );
        assert_eq!(
            decode_chunk::<Msg>(&mut chunk).unwrap(),
            vec![
                Msg {
                    id: 1,
                    user: "a".into(),
                    ok: true
                },
                Msg {
                    id: 2,
                    user: "b".into(),
                    ok: false
                }
            ]
        );
        for (body, class) in [
            (
                &br#"[{"id":1,"user":"a","ok":true},{"id":"2"}]"#[..],
                "type",
            ),
            (b"[{\"id\":1,\"user\":\"\xff\",\"ok\":true}]", "array"),
        ] {
            let mut chunk = crate::testing::chunk_with(
                Bytes::from_static(body),
                crate::Offset::start(),
                true,
                false,
            );
            let (got, _) = outcome(decode_chunk::<Msg>(&mut chunk)).unwrap_err();
            assert_eq!(got, class, "{:?}", String::from_utf8_lossy(body));
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            // Short and long strings, with escaped quotes and backslashes
            // on either side of the splitter's 16-byte look-ahead.
            "[a-z\"\\\\é]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::hash_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn split_all(body: &[u8], cut: usize) -> Result<Vec<Value>> {
        let mut splitter = ArraySplitter::new(1 << 20);
        let cut = cut.min(body.len());
        let body = Bytes::copy_from_slice(body);
        splitter.feed(&body.slice(..cut))?;
        let mut items = splitter.take();
        splitter.feed(&body.slice(cut..))?;
        items.extend(splitter.take());
        splitter.finish()?;
        Ok(items
            .iter()
            .map(|i| serde_json::from_slice(i).unwrap())
            .collect())
    }

    #[test]
    fn splitter_handles_strings_nesting_and_whitespace() {
        let body = br#" [ 1 , "a,]\"b" , {"x":[1,{"y":"]"}]} , [ ] , null ]  "#;
        for cut in 0..body.len() {
            let items = split_all(body, cut).unwrap();
            assert_eq!(
                items,
                vec![
                    Value::from(1),
                    Value::from("a,]\"b"),
                    serde_json::json!({"x":[1,{"y":"]"}]}),
                    serde_json::json!([]),
                    Value::Null
                ],
                "cut {cut}"
            );
        }
        assert!(split_all(b"[]", 1).unwrap().is_empty());
        assert!(split_all(b"", 0).unwrap().is_empty());
    }

    /// Bodies that are no JSON array of messages.
    const MALFORMED: [&[u8]; 7] = [
        b"{}", b"[1,,2]", b"[1 2]", b"[1]x", b"[1,", b"[,1]", b"[1,]",
    ];

    #[test]
    fn splitter_rejects_malformed_bodies() {
        for bad in MALFORMED {
            assert!(
                split_all(bad, bad.len() / 2).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // What the reference Rust server sends for a read that starts
        // inside `{"a":1}` of `[{"a":1},{"b":22}]`.
        let err = split_all(br#"[":1},{"b":22}]"#, 5).unwrap_err();
        assert!(
            err.to_string().contains("probably not a message boundary"),
            "{err}"
        );
        let err = split_messages(&Bytes::from_static(br#"[":1},{"b":22}]"#)).unwrap_err();
        assert!(err.to_string().contains("Stream-Next-Offset"), "{err}");
        let mut small = ArraySplitter::new(4);
        let err = small
            .feed(&Bytes::from_static(br#"["0123456789"]"#))
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            crate::ErrorKind::ResponseTooLarge { limit: 4 }
        ));
    }

    #[test]
    fn typed_reader_decodes_whole_elements_only() {
        let body = br#" [ 1 , "a,]\"b" , {"x":[1,{"y":"]"}]} , [ ] , 12345 ]  "#;
        let want = vec![
            json!(1),
            json!("a,]\"b"),
            json!({"x":[1,{"y":"]"}]}),
            json!([]),
            json!(12345),
        ];
        for cut in 0..body.len() {
            for target in [1, 7, usize::MAX] {
                let got: Vec<Value> = read_in_parts(body, &[cut], target, 0, 1 << 20).unwrap();
                assert_eq!(got, want, "cut {cut}, target {target}");
            }
        }
        // Messages handed out before a re-request are dropped.
        let got: Vec<Value> = read_in_parts(body, &[9], 1, 2, 1 << 20).unwrap();
        assert_eq!(got, want[2..]);
        assert!(
            read_in_parts::<Value>(b"", &[], 1, 0, 64)
                .unwrap()
                .is_empty()
        );
        assert!(
            read_in_parts::<Value>(b" [ ] ", &[2], 1, 0, 64)
                .unwrap()
                .is_empty()
        );
    }

    /// An element cut short can fail where the whole one does not (here a
    /// number checked by the type: `1` of `150`); it is decoded again with
    /// the rest, never reported.
    #[test]
    fn typed_reader_judges_only_whole_elements() {
        #[derive(Debug, PartialEq)]
        struct AtLeast100(u32);
        impl<'de> serde::Deserialize<'de> for AtLeast100 {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let v = u32::deserialize(d)?;
                if v < 100 {
                    return Err(serde::de::Error::custom("below 100"));
                }
                Ok(AtLeast100(v))
            }
        }
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct M {
            v: AtLeast100,
        }
        let body = br#"[{"v":150},{"v":200}]"#;
        for cut in 0..body.len() {
            let got: Vec<M> = read_in_parts(body, &[cut], 1, 0, 1 << 20).unwrap();
            assert_eq!(
                got,
                vec![M { v: AtLeast100(150) }, M { v: AtLeast100(200) }]
            );
        }
        let bad = br#"[{"v":150},{"v":20}]"#;
        for cut in 0..bad.len() {
            let (class, text) =
                outcome(read_in_parts::<M>(bad, &[cut], 1, 0, 1 << 20)).unwrap_err();
            assert_eq!(class, "type", "{text}");
            assert!(text.contains("below 100"), "{text}");
        }
    }

    #[test]
    fn typed_reader_rejects_malformed_bodies_and_oversize_elements() {
        let more: [&[u8]; 3] = [b"[1}", b"[tru]", br#"[":1},{"b":22}]"#];
        for bad in MALFORMED.into_iter().chain(more) {
            for cut in 0..=bad.len() {
                let err = read_in_parts::<Value>(bad, &[cut], 1, 0, 1 << 20).unwrap_err();
                assert_eq!(
                    err.kind(),
                    &crate::ErrorKind::Decode(DecodeKind::Json),
                    "{:?}",
                    String::from_utf8_lossy(bad)
                );
                assert!(err.to_string().contains(NOT_A_BOUNDARY), "{err}");
            }
        }
        for cut in 0..14 {
            let err = read_in_parts::<Value>(br#"[1,"0123456789"]"#, &[cut], 1, 0, 4).unwrap_err();
            assert!(matches!(
                err.kind(),
                crate::ErrorKind::ResponseTooLarge { limit: 4 }
            ));
        }
    }

    proptest! {
        #[test]
        fn typed_reader_matches_serde_at_any_cuts(
            values in prop::collection::vec(arb_json(), 0..6),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            target in 1usize..64,
            damage in prop::collection::vec((any::<usize>(), any::<u8>()), 0..2),
        ) {
            for body in [
                serde_json::to_vec(&values).unwrap(),
                serde_json::to_vec_pretty(&values).unwrap(),
            ] {
                let got: Vec<Value> = read_in_parts(&body, &cuts, target, 0, 1 << 20).unwrap();
                prop_assert_eq!(&got, &values);
                let mut damaged = body;
                for (at, byte) in &damage {
                    let len = damaged.len();
                    damaged[at % len] = *byte;
                }
                if damaged.trim_ascii().is_empty() {
                    continue;
                }
                let got = read_in_parts::<Value>(&damaged, &cuts, target, 0, 1 << 20);
                match serde_json::from_slice::<Vec<Value>>(&damaged) {
                    Ok(reference) => prop_assert_eq!(got.unwrap(), reference),
                    Err(_) => {
                        let err = got.unwrap_err();
                        prop_assert_eq!(err.kind(), &crate::ErrorKind::Decode(DecodeKind::Json));
                    }
                }
            }
        }

        #[test]
        fn splitter_matches_serde_at_any_cut(values in prop::collection::vec(arb_json(), 0..6), cut in 0usize..400) {
            let body = serde_json::to_vec(&values).unwrap();
            prop_assert_eq!(split_all(&body, cut).unwrap(), values.clone());
            let pretty = serde_json::to_vec_pretty(&values).unwrap();
            prop_assert_eq!(split_all(&pretty, cut).unwrap(), values);
        }

        #[test]
        fn decode_matches_serde_json_on_cut_and_damaged_bodies(
            values in prop::collection::vec(arb_json(), 0..4),
            cut in 0usize..200,
            damage in prop::collection::vec((0usize..200, any::<u8>()), 0..3),
        ) {
            let body = serde_json::to_vec(&values).unwrap();
            prop_assert_eq!(check_decode::<Vec<Value>>(&body), None);
            check_decode::<Vec<Value>>(&body[..cut.min(body.len())]);
            let mut damaged = body;
            for (at, byte) in damage {
                if let Some(b) = damaged.get_mut(at) {
                    *b = byte;
                }
            }
            check_decode::<Vec<Value>>(&damaged);
        }

        #[test]
        fn flattening_preserves_each_value(values in prop::collection::vec(arb_json(), 1..6)) {
            let body = batch_body(values.iter()).unwrap();
            prop_assert_eq!(server_flatten(&body), values.clone());
            for v in &values {
                let single = single_message_body(v).unwrap();
                prop_assert_eq!(server_flatten(&single), vec![v.clone()]);
            }
        }
    }
}
