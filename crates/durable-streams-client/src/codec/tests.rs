use bytes::Bytes;
use proptest::prelude::*;

use super::frame::{parse_varint, put_varint};
use super::*;
use crate::ErrorKind;

fn offset(s: &str) -> Offset {
    Offset::parse(s).unwrap()
}

fn decode_all(framing: &Framing, data: &[u8], cuts: &[usize]) -> Result<Vec<Bytes>> {
    let mut decoder = framing.decoder(Offset::start());
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(at, data.len());
        decoder.push(Bytes::copy_from_slice(&data[at..cut]), &mut out)?;
        at = cut;
    }
    decoder.finish()?;
    Ok(out)
}

fn compressions() -> Vec<Compression> {
    let mut all = vec![Compression::None];
    if cfg!(feature = "frame-zstd") {
        all.push(Compression::zstd());
    }
    if cfg!(feature = "frame-gzip") {
        all.push(Compression::Gzip);
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split of a framed byte stream gives the same messages, whatever
    /// their sizes (0 to multi-KiB) and compression.
    #[test]
    fn any_split_gives_the_same_messages(
        messages in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(any::<u8>(), 100..300),
                // Compressible multi-KiB payloads.
                (1usize..6000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
            ],
            0..12,
        ),
        choices in proptest::collection::vec(0usize..3, 12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let all = compressions();
        let mut data = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let framing = Framing::new().compression(all[choices[i] % all.len()]);
            framing.encode_frame(m, &mut data).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        cuts.sort_unstable();
        let decoded = decode_all(&Framing::new(), &data, &cuts).unwrap();
        let decoded: Vec<Vec<u8>> = decoded.into_iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(decoded, messages);
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..200) {
        let _ = decode_all(&Framing::new().max_frame_bytes(64), &data, &[cut]);
    }

    #[test]
    fn varints_round_trip(n in any::<u64>()) {
        let mut out = Vec::new();
        put_varint(&mut out, n);
        prop_assert_eq!(parse_varint(&out), Ok(Some((n, out.len()))));
        prop_assert_eq!(parse_varint(&out[..out.len() - 1]), Ok(None));
    }
}

fn frame_error(data: &[u8], framing: Framing) -> crate::Error {
    decode_all(&framing, data, &[]).unwrap_err()
}

#[test]
fn bad_varints_are_typed_errors() {
    // 11 continuation bytes, an overflow in the 10th byte, an overlong zero.
    for data in [
        &[0x80u8; 11][..],
        &[0xFF; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>(),
        &[0x80, 0x00, 0x00],
    ] {
        let err = frame_error(data, Framing::new());
        assert_eq!(
            err.kind(),
            &ErrorKind::Decode(crate::DecodeKind::Frame),
            "{data:?}"
        );
    }
    // Length 0: no flags byte.
    let err = frame_error(&[0x00], Framing::new());
    assert_eq!(err.kind(), &ErrorKind::Decode(crate::DecodeKind::Frame));
}

#[test]
fn unknown_flag_is_a_typed_error() {
    let err = frame_error(&[0x02, 7, b'x'], Framing::new());
    assert_eq!(err.kind(), &ErrorKind::Decode(crate::DecodeKind::Frame));
    assert!(err.to_string().contains("flags byte 7"), "{err}");
}

#[test]
fn length_over_the_limit_fails_before_buffering() {
    let mut data = Vec::new();
    put_varint(&mut data, 1 << 40);
    let mut decoder = Framing::new().max_frame_bytes(1024).decoder(offset("a"));
    let err = decoder
        .push(Bytes::from(data), &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::FrameTooLarge {
            limit: 1024,
            offset: offset("a")
        }
    );
}

#[test]
fn truncated_frame_names_the_last_clean_offset() {
    let framing = Framing::new();
    let mut data = Vec::new();
    framing.encode_frame(b"hello", &mut data).unwrap();
    framing.encode_frame(b"world", &mut data).unwrap();
    let mut decoder = framing.decoder(offset("s"));
    let mut out = Vec::new();
    decoder
        .push(Bytes::copy_from_slice(&data[..9]), &mut out)
        .unwrap();
    assert_eq!(out, vec![Bytes::from_static(b"hello")]);
    assert_eq!(decoder.carried(), 2);
    let err = decoder.finish().unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::TruncatedFrame {
            offset: offset("s")
        }
    );
    assert!(err.to_string().contains("7 bytes after offset s"), "{err}");
}

#[test]
fn small_or_incompressible_payloads_stay_plain() {
    let framing = Framing::new()
        .compression(Compression::zstd())
        .compress_threshold(16);
    let mut out = Vec::new();
    framing.encode_frame(b"short", &mut out).unwrap();
    assert_eq!(out, b"\x06\x00short");
    if cfg!(feature = "frame-zstd") {
        let random: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        let mut out = Vec::new();
        framing.encode_frame(&random, &mut out).unwrap();
        assert_eq!(out[2], FLAG_PLAIN, "random data is not worth compressing");
        let mut out = Vec::new();
        framing.encode_frame(&[b'a'; 4096], &mut out).unwrap();
        assert_eq!(out[1], FLAG_ZSTD);
        assert!(out.len() < 100);
    }
}

#[test]
fn oversized_payloads_are_refused_on_write() {
    let err = Framing::new()
        .max_frame_bytes(4)
        .encode_frame(b"hello", &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "item" });
}

#[cfg(feature = "frame-zstd")]
#[test]
fn a_zstd_bomb_is_stopped_at_the_limit() {
    // 64 MiB of zeros compress to a few KiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    assert!(bomb.len() < 1 << 20);
    let mut data = Vec::new();
    put_varint(&mut data, bomb.len() as u64 + 1);
    data.push(FLAG_ZSTD);
    data.extend_from_slice(&bomb);
    let err = frame_error(&data, Framing::new().max_frame_bytes(1 << 20));
    assert!(matches!(err.kind(), ErrorKind::FrameTooLarge { limit, .. } if *limit == 1 << 20));
}

#[cfg(not(feature = "frame-zstd"))]
#[test]
fn a_zstd_frame_without_the_feature_is_unsupported() {
    let err = frame_error(&[0x03, FLAG_ZSTD, 1, 2], Framing::new());
    assert!(matches!(
        err.kind(),
        ErrorKind::UnsupportedFrame { flag: 1, .. }
    ));
}

#[test]
fn chunk_exactness_follows_the_carry() {
    let framed = Framed::new(BytesCodec);
    let frame = framed.to_frame(&Bytes::from_static(b"abc")).unwrap();
    let mut decoder = framed.settings().decoder(offset("0"));
    let mut chunk = crate::testing::chunk_with(frame.slice(..2), offset("2"), true, false);
    assert!(decoder.decode_chunk(&mut chunk).unwrap().is_empty());
    assert!(!chunk.exact);
    assert_eq!(decoder.resume_offset(), &offset("0"));
    let mut chunk = crate::testing::chunk_with(frame.slice(2..), offset("5"), true, false);
    assert_eq!(
        decoder.decode_chunk(&mut chunk).unwrap(),
        vec![Bytes::from_static(b"abc")]
    );
    assert!(chunk.exact);
    assert_eq!(decoder.resume_offset(), &offset("5"));
}

#[test]
fn json_codec_round_trips_and_names_the_offset() {
    let framed = Framed::new(JsonCodec::<Vec<u32>>::new());
    let frame = framed.to_frame(&vec![1, 2]).unwrap();
    assert_eq!(framed.codec().decode(frame.slice(2..)).unwrap(), vec![1, 2]);
    let err = framed
        .decode_payload(Bytes::from_static(b"{"), &offset("x"))
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Decode(crate::DecodeKind::Json));
    assert!(err.to_string().contains("after offset x"), "{err}");
}

#[cfg(feature = "protobuf")]
#[test]
fn prost_codec_round_trips_and_rejects_garbage() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Point {
        #[prost(int64, tag = "1")]
        x: i64,
        #[prost(string, tag = "2")]
        label: String,
    }
    let codec = ProstCodec::<Point>::new();
    let point = Point {
        x: -5,
        label: "p".into(),
    };
    let mut out = Vec::new();
    codec.encode(&point, &mut out).unwrap();
    assert_eq!(codec.decode(Bytes::from(out)).unwrap(), point);
    let err = codec.decode(Bytes::from_static(&[0x0A, 0x05])).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Decode(crate::DecodeKind::Payload));
}

#[cfg(feature = "avro")]
#[test]
fn avro_codec_validates_on_write_and_read() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        name: String,
        age: i32,
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Wrong {
        name: i64,
    }
    const SCHEMA: &str = r#"{"type":"record","name":"User","fields":[
        {"name":"name","type":"string"},{"name":"age","type":"int"}]}"#;
    let codec = AvroCodec::<User>::parse(SCHEMA).unwrap();
    let user = User {
        name: "ada".into(),
        age: 36,
    };
    let mut out = Vec::new();
    codec.encode(&user, &mut out).unwrap();
    assert_eq!(codec.decode(Bytes::from(out.clone())).unwrap(), user);
    // Trailing bytes and truncated datums are refused.
    let mut longer = out.clone();
    longer.push(0);
    assert!(codec.decode(Bytes::from(longer)).is_err());
    assert!(codec.decode(Bytes::copy_from_slice(&out[..2])).is_err());
    // A value that does not fit the schema is refused on write.
    let wrong = AvroCodec::<Wrong>::parse(SCHEMA).unwrap();
    let err = wrong
        .encode(&Wrong { name: 1 }, &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "item" });
    assert!(AvroCodec::<User>::parse("{").is_err());
}
