//! Compact JSON encoding straight into a request body, as `serde_json`
//! writes it, with strings escaped eight bytes at a time.
//!
//! `serde_json` scans a string one byte at a time for characters to
//! escape; for the short string-heavy messages producers send, that scan
//! is the largest part of encoding. This encoder produces the same bytes:
//! numbers are formatted by `serde_json` itself, strings and keys are
//! escaped here (the same escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//! `\t`, `\u00XX` for other control characters), map keys follow
//! `serde_json`'s rules (strings, or numbers and booleans written as
//! strings), and `serde_json::value::RawValue` (and its arbitrary-precision
//! numbers) are written verbatim. The tests compare it with `serde_json`
//! byte for byte.

use std::fmt::{self, Display};

use bytes::BufMut;
use serde::ser::{self, Impossible, Serialize};

use crate::swar;

/// `serde_json`'s private names for values it writes verbatim.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Encode `value` as compact JSON at the end of `out`. On error, `out` may
/// hold part of the value; callers truncate it.
pub(crate) fn write<B: BufMut, T: Serialize + ?Sized>(
    out: &mut B,
    value: &T,
) -> Result<(), EncodeError> {
    value.serialize(&mut Encoder { out })
}

/// Why a value could not be encoded (a map key that is not a string, a
/// non-finite float key, or the value's own `Serialize` failing).
#[derive(Debug)]
pub(crate) struct EncodeError(String);

impl Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

fn key_must_be_a_string() -> EncodeError {
    EncodeError("key must be a string".into())
}

/// Whether any byte of `word` is a control character, `"` or `\`.
#[inline]
fn word_needs_escape(word: u64) -> bool {
    (swar::below(word, 0x20) | swar::equal(word, b'"') | swar::equal(word, b'\\')) != 0
}

/// The escape of one byte, if it needs one.
fn escape_of(byte: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const CONTROL: [[u8; 6]; 32] = {
        let mut table = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            table[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        table
    };
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x0c => b"\\f",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0..=0x1f => &CONTROL[byte as usize],
        _ => return None,
    })
}

/// Whether `byte` needs an escape (branch-free, for [`swar::any_byte_wide`]).
#[inline(always)]
fn needs_escape(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\')
}

/// Whether any byte of `bytes` needs an escape: sixteen (or eight) at a
/// time.
#[inline]
fn any_needs_escape(bytes: &[u8]) -> bool {
    swar::any_byte_wide(bytes, word_needs_escape, needs_escape)
}

fn write_str<B: BufMut>(out: &mut B, s: &str) {
    let bytes = s.as_bytes();
    out.put_u8(b'"');
    // Most strings have nothing to escape: one scan, one copy.
    if !any_needs_escape(bytes) {
        out.put_slice(bytes);
        out.put_u8(b'"');
        return;
    }
    // `run` is where the bytes not yet written start.
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !word_needs_escape(word) {
                i += 8;
                continue;
            }
        }
        if let Some(escape) = escape_of(bytes[i]) {
            out.put_slice(&bytes[run..i]);
            out.put_slice(escape);
            run = i + 1;
        }
        i += 1;
    }
    out.put_slice(&bytes[run..]);
    out.put_u8(b'"');
}

/// A number as `serde_json` formats it.
fn write_number<B: BufMut, N: Serialize>(out: &mut B, n: N) -> Result<(), EncodeError> {
    serde_json::to_writer(out.writer(), &n).map_err(|e| EncodeError(e.to_string()))
}

/// The integer methods of a serializer, each `$write(self, value)`.
macro_rules! integers {
    (|$this:ident, $v:ident| $write:expr) => {
        integers!(@ |$this, $v| $write; serialize_i8 i8, serialize_i16 i16, serialize_i32 i32,
            serialize_i64 i64, serialize_i128 i128, serialize_u8 u8, serialize_u16 u16,
            serialize_u32 u32, serialize_u64 u64, serialize_u128 u128);
    };
    (@ |$this:ident, $v:ident| $write:expr; $($method:ident $ty:ty),*) => {$(
        fn $method(self, $v: $ty) -> Result<(), EncodeError> {
            let $this = self;
            $write
        }
    )*};
}

/// The number methods (integers and floats) of a serializer.
macro_rules! numbers {
    (|$this:ident, $v:ident| $write:expr) => {
        integers!(|$this, $v| $write);
        integers!(@ |$this, $v| $write; serialize_f32 f32, serialize_f64 f64);
    };
}

/// `serialize_str` and `serialize_char`: an escaped JSON string.
macro_rules! strings {
    () => {
        fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
            write_str(self.out, v);
            Ok(())
        }
        fn serialize_char(self, v: char) -> Result<(), EncodeError> {
            write_str(self.out, v.encode_utf8(&mut [0; 4]));
            Ok(())
        }
    };
}

/// Values `serde_json` writes as what they wrap: `Some(v)` and newtype
/// structs as `v`, a unit variant as its name.
macro_rules! transparent {
    () => {
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
            value.serialize(self)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            value: &T,
        ) -> Result<(), EncodeError> {
            value.serialize(self)
        }
        fn serialize_unit_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
        ) -> Result<(), EncodeError> {
            self.serialize_str(variant)
        }
    };
}

struct Encoder<'o, B> {
    out: &'o mut B,
}

/// Arrays, objects and enum variants in progress.
struct Compound<'e, 'o, B> {
    enc: &'e mut Encoder<'o, B>,
    first: bool,
    /// The closing bytes.
    end: &'static [u8],
}

impl<'e, 'o, B: BufMut> Compound<'e, 'o, B> {
    fn open(enc: &'e mut Encoder<'o, B>, start: &[u8], end: &'static [u8]) -> Self {
        enc.out.put_slice(start);
        Compound {
            enc,
            first: true,
            end,
        }
    }

    fn comma(&mut self) {
        if !self.first {
            self.enc.out.put_u8(b',');
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.comma();
        value.serialize(&mut *self.enc)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), EncodeError> {
        self.comma();
        write_str(self.enc.out, key);
        self.enc.out.put_u8(b':');
        value.serialize(&mut *self.enc)
    }

    fn close(self) -> Result<(), EncodeError> {
        self.enc.out.put_slice(self.end);
        Ok(())
    }
}

/// `{"variant":` before a variant's content.
fn open_variant<'e, 'o, B: BufMut>(
    enc: &'e mut Encoder<'o, B>,
    variant: &str,
    content_start: &[u8],
    end: &'static [u8],
) -> Compound<'e, 'o, B> {
    enc.out.put_u8(b'{');
    write_str(enc.out, variant);
    enc.out.put_u8(b':');
    Compound::open(enc, content_start, end)
}

/// A struct in progress: an object, or a value `serde_json` writes verbatim.
enum StructCompound<'e, 'o, B> {
    Object(Compound<'e, 'o, B>),
    Verbatim(&'e mut Encoder<'o, B>),
}

impl<'e, 'o, B: BufMut> ser::Serializer for &'e mut Encoder<'o, B> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'e, 'o, B>;
    type SerializeTuple = Compound<'e, 'o, B>;
    type SerializeTupleStruct = Compound<'e, 'o, B>;
    type SerializeTupleVariant = Compound<'e, 'o, B>;
    type SerializeMap = Compound<'e, 'o, B>;
    type SerializeStruct = StructCompound<'e, 'o, B>;
    type SerializeStructVariant = Compound<'e, 'o, B>;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.put_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    numbers!(|enc, v| write_number(enc.out, v));
    strings!();
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.out.put_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    transparent!();
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        let variant = open_variant(self, variant, b"", b"}");
        value.serialize(&mut *variant.enc)?;
        variant.close()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        Ok(Compound::open(self, b"[", b"]"))
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Ok(open_variant(self, variant, b"[", b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        Ok(Compound::open(self, b"{", b"}"))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        Ok(if name == RAW_VALUE_TOKEN || name == NUMBER_TOKEN {
            StructCompound::Verbatim(self)
        } else {
            StructCompound::Object(Compound::open(self, b"{", b"}"))
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Ok(open_variant(self, variant, b"{", b"}}"))
    }
}

/// Arrays: elements (or fields) separated by commas.
macro_rules! array_compound {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl<B: BufMut> ser::$trait for Compound<'_, '_, B> {
            type Ok = ();
            type Error = EncodeError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
                self.element(value)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.close()
            }
        }
    )*};
}

array_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl<B: BufMut> ser::SerializeMap for Compound<'_, '_, B> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.comma();
        key.serialize(MapKey {
            out: &mut *self.enc.out,
        })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.enc.out.put_u8(b':');
        value.serialize(&mut *self.enc)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl<B: BufMut> ser::SerializeStruct for StructCompound<'_, '_, B> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        match self {
            StructCompound::Object(object) => object.field(key, value),
            StructCompound::Verbatim(enc) => value.serialize(Verbatim { out: &mut *enc.out }),
        }
    }
    fn end(self) -> Result<(), EncodeError> {
        match self {
            StructCompound::Object(object) => object.close(),
            StructCompound::Verbatim(_) => Ok(()),
        }
    }
}

impl<B: BufMut> ser::SerializeStructVariant for Compound<'_, '_, B> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

/// Rejects every value but the ones `MapKey` and `Verbatim` accept.
macro_rules! reject {
    ($error:expr; $($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), EncodeError> {
            Err($error)
        })*
    };
}

/// Rejects every compound value.
macro_rules! reject_compounds {
    ($error:expr) => {
        type SerializeSeq = Impossible<(), EncodeError>;
        type SerializeTuple = Impossible<(), EncodeError>;
        type SerializeTupleStruct = Impossible<(), EncodeError>;
        type SerializeTupleVariant = Impossible<(), EncodeError>;
        type SerializeMap = Impossible<(), EncodeError>;
        type SerializeStruct = Impossible<(), EncodeError>;
        type SerializeStructVariant = Impossible<(), EncodeError>;
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), EncodeError> {
            Err($error)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
            Err($error)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
            Err($error)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, EncodeError> {
            Err($error)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, EncodeError> {
            Err($error)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
            Err($error)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, EncodeError> {
            Err($error)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, EncodeError> {
            Err($error)
        }
    };
}

/// An object key, as `serde_json` writes keys: strings, and numbers and
/// booleans in quotes.
struct MapKey<'o, B> {
    out: &'o mut B,
}

impl<B: BufMut> MapKey<'_, B> {
    fn quoted<N: Serialize>(self, n: N) -> Result<(), EncodeError> {
        self.out.put_u8(b'"');
        write_number(self.out, n)?;
        self.out.put_u8(b'"');
        Ok(())
    }
}

impl<B: BufMut> ser::Serializer for MapKey<'_, B> {
    type Ok = ();
    type Error = EncodeError;
    reject_compounds!(key_must_be_a_string());
    reject!(key_must_be_a_string();
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    strings!();
    transparent!();
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out
            .put_slice(if v { b"\"true\"" } else { b"\"false\"" });
        Ok(())
    }
    integers!(|key, v| key.quoted(v));
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        if !v.is_finite() {
            return Err(EncodeError("float key must be finite".into()));
        }
        self.quoted(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        if !v.is_finite() {
            return Err(EncodeError("float key must be finite".into()));
        }
        self.quoted(v)
    }
}

/// The text of a `RawValue` (or an arbitrary-precision number), written
/// as it is.
struct Verbatim<'o, B> {
    out: &'o mut B,
}

fn not_verbatim() -> EncodeError {
    EncodeError("expected the text of a serde_json RawValue".into())
}

impl<B: BufMut> ser::Serializer for Verbatim<'_, B> {
    type Ok = ();
    type Error = EncodeError;
    reject_compounds!(not_verbatim());
    reject!(not_verbatim();
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_bytes(&[u8]), serialize_none(),
        serialize_unit(), serialize_unit_struct(&'static str),
    );

    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.out.put_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), EncodeError> {
        Err(not_verbatim())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), EncodeError> {
        Err(not_verbatim())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), EncodeError> {
        Err(not_verbatim())
    }
}

#[cfg(test)]
#[path = "json_encode_tests.rs"]
mod tests;
