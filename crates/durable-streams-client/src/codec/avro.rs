//! Avro datums checked against a user-given schema (feature `avro`).

use std::fmt;
use std::marker::PhantomData;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Codec;
use crate::error::{DecodeKind, Error, Result};

/// Avro messages of a serde type `T`, written as **raw Avro datums** of
/// one schema (the binary encoding, without the single-object header or
/// a container file: writer and reader share the schema, so no fingerprint
/// is carried). Every value is resolved and validated against the schema
/// on encode (a mismatch is `InvalidArgument` `item`) and on decode (a
/// mismatch, trailing bytes or a value that does not fit `T` is
/// `Decode(Payload)`).
pub struct AvroCodec<T> {
    schema: Schema,
    _type: PhantomData<fn() -> T>,
}

impl<T> AvroCodec<T> {
    /// The codec for `schema`.
    pub fn new(schema: Schema) -> Self {
        AvroCodec {
            schema,
            _type: PhantomData,
        }
    }

    /// Parse a JSON schema; an invalid schema is `InvalidArgument` `schema`.
    pub fn parse(schema: &str) -> Result<Self> {
        Schema::parse_str(schema)
            .map(Self::new)
            .map_err(|e| Error::invalid_argument("schema", format!("avro schema: {e}")))
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl<T> fmt::Debug for AvroCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroCodec")
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

fn bad(e: impl fmt::Display) -> Error {
    Error::decode(DecodeKind::Payload, format!("avro: {e}"))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Codec for AvroCodec<T> {
    type Item = T;

    fn encode(&self, item: &T, out: &mut Vec<u8>) -> Result<()> {
        let invalid = |e: apache_avro::Error| Error::invalid_argument("item", format!("avro: {e}"));
        let value = apache_avro::to_value(item)
            .and_then(|v| v.resolve(&self.schema))
            .map_err(invalid)?;
        let writer = GenericDatumWriter::builder(&self.schema)
            .build()
            .map_err(invalid)?;
        writer.write_value(out, value).map_err(invalid)?;
        Ok(())
    }

    fn decode(&self, payload: Bytes) -> Result<T> {
        let reader = GenericDatumReader::builder(&self.schema)
            .build()
            .map_err(bad)?;
        let mut rest: &[u8] = &payload;
        let value = reader.read_value(&mut rest).map_err(bad)?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes after the datum", rest.len())));
        }
        if !value.validate(&self.schema) {
            return Err(bad("the value does not match the schema"));
        }
        apache_avro::from_value::<T>(&value).map_err(bad)
    }
}
