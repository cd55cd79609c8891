//! Offsets: opaque positions in a stream.
//!
//! A leaf module: it depends on nothing else in the crate. Its own error,
//! [`InvalidOffset`], becomes the crate's [`Error`](crate::Error) through a
//! `From` impl in `error.rs`.

use std::fmt;
use std::sync::Arc;

/// A position in a stream: the start (`-1`), the current tail (`now`), or an
/// opaque token the server returned in `Stream-Next-Offset`.
///
/// Tokens are never parsed: they compare byte-wise, which the protocol
/// guarantees matches stream order for tokens of the same stream. Cloning is
/// cheap (shared string).
///
/// ```
/// use durable_streams_client::Offset;
/// assert!(Offset::start().is_start());
/// let o = Offset::parse("0000000000000001_0000000000000042").unwrap();
/// assert_eq!(o.as_str(), "0000000000000001_0000000000000042");
/// assert!(Offset::parse("a&b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Offset(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Start,
    Now,
    Token(Arc<str>),
}

impl Offset {
    /// The beginning of the stream (`-1`).
    pub const fn start() -> Offset {
        Offset(Repr::Start)
    }

    /// The current tail: skip existing data and read only what arrives next.
    pub const fn now() -> Offset {
        Offset(Repr::Now)
    }

    /// Accept an offset as text: `-1`, `now`, or a server token. Rejects empty
    /// strings, the characters the protocol forbids in tokens
    /// (`,` `&` `=` `?` `/`) and control characters; anything else is a
    /// valid opaque token (spaces and non-ASCII included: they are
    /// percent-encoded in request URLs).
    ///
    /// The error converts into the crate's [`Error`](crate::Error) (kind
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// with field `offset`), so `?` works in functions returning
    /// [`Result`](crate::Result).
    pub fn parse(token: &str) -> Result<Offset, InvalidOffset> {
        match token {
            "-1" => return Ok(Offset::start()),
            "now" => return Ok(Offset::now()),
            _ => {}
        }
        validate_token(token).map_err(|reason| InvalidOffset::new(Origin::Argument, reason))?;
        Ok(Offset(Repr::Token(Arc::from(token))))
    }

    /// An offset from a server response header or control event. The error
    /// converts into a [`DecodeKind::Header`](crate::DecodeKind::Header)
    /// decode error.
    pub(crate) fn from_server(token: &str) -> Result<Offset, InvalidOffset> {
        if token == "-1" || token == "now" {
            return Err(InvalidOffset::new(
                Origin::Server,
                format!("server returned the reserved offset {token:?}"),
            ));
        }
        validate_token(token).map_err(|reason| InvalidOffset::new(Origin::Server, reason))?;
        Ok(Offset(Repr::Token(Arc::from(token))))
    }

    /// The wire form: `-1`, `now` or the token.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Start => "-1",
            Repr::Now => "now",
            Repr::Token(t) => t,
        }
    }

    /// True for the start sentinel.
    pub fn is_start(&self) -> bool {
        matches!(self.0, Repr::Start)
    }

    /// True for the `now` sentinel.
    pub fn is_now(&self) -> bool {
        matches!(self.0, Repr::Now)
    }
}

/// Why a text is not a valid [`Offset`]: it is empty, contains a character
/// the protocol forbids in tokens (`,` `&` `=` `?` `/`) or a control
/// character, or (from a server) is one of the reserved sentinels `-1` and
/// `now`. `Display` says which, naming the offending character.
///
/// Returned by [`Offset::parse`] and [`str::parse`]; `?` turns it into the
/// crate's [`Error`](crate::Error) of kind
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
/// (field `offset`) with the same text as its message.
///
/// ```
/// use durable_streams_client::{Error, ErrorKind, Offset};
/// let err = Offset::parse("a/b").unwrap_err();
/// assert_eq!(err.to_string(), "offset contains the forbidden character '/'");
/// let err = Error::from(err);
/// assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "offset" });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOffset {
    origin: Origin,
    reason: String,
}

/// Where a rejected offset came from, which decides the crate error it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An argument ([`Offset::parse`]).
    Argument,
    /// A server response ([`Offset::from_server`]).
    Server,
}

impl InvalidOffset {
    fn new(origin: Origin, reason: impl Into<String>) -> Self {
        InvalidOffset {
            origin,
            reason: reason.into(),
        }
    }

    /// Whether the offset came from an argument or from a server.
    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }

    /// What was wrong, e.g. `offset contains the forbidden character '/'`
    /// (the same text as `Display`).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InvalidOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for InvalidOffset {}

/// Printable ASCII bytes other than the protocol's forbidden characters.
const PLAIN_TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = !matches!(b as u8, b',' | b'&' | b'=' | b'?' | b'/');
        b += 1;
    }
    table
};

fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("offset is empty".into());
    }
    // What servers send: printable ASCII without a forbidden character,
    // checked a word at a time (no character decoding).
    if !crate::swar::any_byte(token.as_bytes(), word_not_plain, |b| {
        !PLAIN_TOKEN_BYTE[usize::from(b)]
    }) {
        return Ok(());
    }
    if let Some(c) = token.chars().find(|&c| is_forbidden(c)) {
        return Err(format!("offset contains the forbidden character {c:?}"));
    }
    Ok(())
}

/// Whether a byte of `word` is not in [`PLAIN_TOKEN_BYTE`].
#[inline]
fn word_not_plain(word: u64) -> bool {
    use crate::swar::{below, del_or_above, equal};
    (below(word, 0x20)
        | del_or_above(word)
        | equal(word, b',')
        | equal(word, b'&')
        | equal(word, b'=')
        | equal(word, b'?')
        | equal(word, b'/'))
        != 0
}

/// The protocol's forbidden token characters, and control characters.
fn is_forbidden(c: char) -> bool {
    matches!(c, ',' | '&' | '=' | '?' | '/') || c.is_control()
}

impl Default for Offset {
    fn default() -> Self {
        Offset::start()
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset({})", self.as_str())
    }
}

impl std::str::FromStr for Offset {
    type Err = InvalidOffset;
    fn from_str(s: &str) -> Result<Offset, InvalidOffset> {
        Offset::parse(s)
    }
}

impl serde::Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Offset, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Offset::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sentinels_round_trip() {
        assert_eq!(Offset::parse("-1").unwrap(), Offset::start());
        assert_eq!(Offset::parse("now").unwrap(), Offset::now());
        assert_eq!(Offset::start().as_str(), "-1");
        assert!(Offset::from_server("now").is_err());
        assert!(Offset::from_server("-1").is_err());
    }

    #[test]
    fn the_plain_byte_table_accepts_exactly_printable_allowed_ascii() {
        for b in 0..=255u8 {
            let plain = b.is_ascii() && !b.is_ascii_control() && !is_forbidden(char::from(b));
            assert_eq!(PLAIN_TOKEN_BYTE[usize::from(b)], plain, "byte {b:#04x}");
            // The word test agrees, wherever the byte sits in the word.
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = b;
                assert_eq!(
                    word_not_plain(u64::from_le_bytes(word)),
                    !plain,
                    "byte {b:#04x} at {at}"
                );
            }
        }
    }

    #[test]
    fn rejects_forbidden_characters() {
        for bad in [
            "", "a,b", "a&b", "a=b", "a?b", "a/b", "a\nb", "a\tb", "\u{7f}", "a\u{85}",
        ] {
            let err = Offset::parse(bad).unwrap_err();
            assert_eq!(err.origin(), Origin::Argument);
            assert!(err.reason().starts_with("offset "), "{err}");
            assert_eq!(err.to_string(), err.reason());
            let err = Offset::from_server(bad).unwrap_err();
            assert_eq!(err.origin(), Origin::Server);
        }
    }

    #[test]
    fn accepts_any_other_token() {
        let long = "9".repeat(4096);
        for good in [
            "a b",
            " ",
            "+",
            "%20",
            "ü_ß",
            "a;b:c",
            "#",
            "[x]",
            "\"",
            "-2",
            "NOW",
            long.as_str(),
        ] {
            assert_eq!(Offset::parse(good).unwrap().as_str(), good);
            assert_eq!(Offset::from_server(good).unwrap().as_str(), good);
        }
    }
    #[test]
    fn serde_round_trip() {
        let o = Offset::parse("abc_123").unwrap();
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, "\"abc_123\"");
        let back: Offset = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
        assert!(serde_json::from_str::<Offset>("\"a/b\"").is_err());
    }

    /// Any character but the forbidden ones.
    fn token_char() -> impl Strategy<Value = char> {
        any::<char>().prop_filter("allowed", |&c| !is_forbidden(c))
    }

    /// Any valid server token (not a sentinel).
    fn token() -> impl Strategy<Value = String> {
        prop::collection::vec(token_char(), 1..40)
            .prop_map(|cs| cs.into_iter().collect::<String>())
            .prop_filter("not a sentinel", |s| s != "-1" && s != "now")
    }

    /// A valid token with one forbidden character inserted.
    fn bad_token() -> impl Strategy<Value = String> {
        let forbidden = prop_oneof![
            prop::sample::select(vec![',', '&', '=', '?', '/']),
            any::<char>().prop_filter("control", |c| c.is_control()),
        ];
        (token(), forbidden, any::<prop::sample::Index>()).prop_map(|(t, c, at)| {
            let mut cs: Vec<char> = t.chars().collect();
            let i = at.index(cs.len() + 1);
            cs.insert(i, c);
            cs.into_iter().collect()
        })
    }

    proptest! {
        #[test]
        fn tokens_round_trip_and_order_bytewise(a in token(), b in token()) {
            let oa = Offset::parse(&a).unwrap();
            let ob = Offset::parse(&b).unwrap();
            prop_assert_eq!(oa.as_str(), a.as_str());
            prop_assert_eq!(oa.to_string(), a.clone());
            prop_assert_eq!(oa.cmp(&ob), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(oa == ob, a == b);
            prop_assert_eq!(oa.to_string().parse::<Offset>().unwrap(), oa.clone());
            prop_assert_eq!(Offset::from_server(&a).unwrap(), oa.clone());
            // Serde keeps the token as is.
            let json = serde_json::to_string(&oa).unwrap();
            prop_assert_eq!(serde_json::from_str::<Offset>(&json).unwrap(), oa.clone());
            // The start is before every token.
            prop_assert!(Offset::start() < oa);
        }

        #[test]
        fn forbidden_characters_are_rejected(t in bad_token()) {
            prop_assert!(Offset::parse(&t).is_err());
            prop_assert!(Offset::from_server(&t).is_err());
        }

        #[test]
        fn any_string_either_parses_back_identically_or_is_rejected(s in "\\PC{0,20}|.{0,20}") {
            match Offset::parse(&s) {
                Ok(o) => {
                    prop_assert_eq!(o.as_str(), s.as_str());
                    prop_assert!(!s.is_empty() && !s.chars().any(is_forbidden));
                }
                Err(_) => prop_assert!(s.is_empty() || s.chars().any(is_forbidden)),
            }
        }
    }
}
