//! Protobuf messages through prost (feature `protobuf`).

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;

use super::Codec;
use crate::error::{DecodeKind, Error, Result};

/// Protobuf messages of type `T` (prost). Decoding checks the payload
/// against `T`'s schema (wire types and required structure); unknown
/// fields are skipped as Protobuf prescribes.
pub struct ProstCodec<T>(PhantomData<fn() -> T>);

impl<T> ProstCodec<T> {
    /// The codec.
    pub fn new() -> Self {
        ProstCodec(PhantomData)
    }
}

impl<T> Default for ProstCodec<T> {
    fn default() -> Self {
        ProstCodec::new()
    }
}

impl<T> Clone for ProstCodec<T> {
    fn clone(&self) -> Self {
        ProstCodec::new()
    }
}

impl<T> fmt::Debug for ProstCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProstCodec<{}>", std::any::type_name::<T>())
    }
}

impl<T: prost::Message + Default + 'static> Codec for ProstCodec<T> {
    type Item = T;

    fn encode(&self, item: &T, out: &mut Vec<u8>) -> Result<()> {
        item.encode(out)
            .map_err(|e| Error::invalid_argument("item", format!("protobuf: {e}")))
    }

    fn decode(&self, payload: Bytes) -> Result<T> {
        T::decode(payload).map_err(|e| Error::decode(DecodeKind::Payload, format!("protobuf: {e}")))
    }
}
