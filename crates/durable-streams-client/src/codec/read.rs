//! Framed reads ([`ReadBuilder::frames`]) and writes
//! ([`Stream::append_frame`], [`Producer::send_frame`]).

use std::future::Future;

use super::{Codec, Framed};
use crate::error::Result;
use crate::offset::Offset;
use crate::producer::{Ack, Producer};
use crate::read::ReadBuilder;
use crate::stream::{AppendResult, Stream};

/// Typed messages decoded from frames, with their position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameBatch<T> {
    /// The messages completed by this piece of the stream, in order (empty
    /// when it only carried part of a frame).
    pub items: Vec<T>,
    /// Where to resume after these messages when [`FrameBatch::exact`].
    pub offset: Offset,
    /// Whether `offset` is an exact resume position: the chunk was exact
    /// and no partial frame is carried past it. Checkpoint only these.
    pub exact: bool,
    /// The server's cursor.
    pub cursor: Option<String>,
    /// Up to date with the stream when served.
    pub up_to_date: bool,
    /// The stream is closed and this is its end.
    pub closed: bool,
    /// The HTTP status of the response this came from (200 or 204).
    pub status: u16,
}

crate::read::boxed_stream!(
    /// A `futures::Stream` of [`FrameBatch`]es. Ends after the closing
    /// batch, after catching up (for [`LiveMode::Off`](crate::LiveMode::Off)),
    /// or after an error.
    FrameStream<T>, FrameBatch<T>
);

impl ReadBuilder {
    /// Typed messages of a framed binary stream (see [`codec`](crate::codec)),
    /// in batches as the server delivers them; frames split across pieces,
    /// responses and reconnects are reassembled. Frame errors
    /// (`FrameTooLarge`, `TruncatedFrame` at a closed stream's end,
    /// `UnsupportedFrame`, `Decode(Frame)`) and payloads the codec rejects
    /// end the read with an error naming the offset.
    pub fn frames<C: Codec>(self, framed: Framed<C>) -> FrameStream<C::Item> {
        let url = self.stream_url().clone();
        let decoder = framed.framing.decoder(self.start_offset().clone());
        let state = FrameRead { decoder, framed };
        FrameStream {
            inner: crate::read::decode_chunks(self.bytes(), url, state, FrameRead::step),
            _type: std::marker::PhantomData,
        }
    }
}

struct FrameRead<C> {
    decoder: super::FrameDecoder,
    framed: Framed<C>,
}

impl<C: Codec> FrameRead<C> {
    fn step(&mut self, mut chunk: crate::read::Chunk) -> Result<FrameBatch<C::Item>> {
        let payloads = self.decoder.decode_chunk(&mut chunk)?;
        let near = self.decoder.resume_offset();
        let items = payloads
            .into_iter()
            .map(|p| self.framed.decode_payload(p, near))
            .collect::<Result<Vec<_>>>()?;
        Ok(FrameBatch {
            items,
            offset: chunk.offset,
            exact: chunk.exact,
            cursor: chunk.cursor,
            up_to_date: chunk.up_to_date,
            closed: chunk.closed,
            status: chunk.status,
        })
    }
}

impl Stream {
    /// Append `item` as one frame (one request). See [`Stream::append`] for
    /// the outcome of a broken connection.
    pub fn append_frame<C: Codec>(
        &self,
        framed: &Framed<C>,
        item: &C::Item,
    ) -> impl Future<Output = Result<AppendResult>> + Send + '_ {
        // Encode before the future so it does not borrow `item` (keeps it `Send`).
        let frame = framed.to_frame(item).map_err(|e| e.with_url(self.url()));
        async move { self.append(frame?).await }
    }
}

impl Producer {
    /// Encode `item` as one frame and [`send`](Producer::send) it: the
    /// producer batches frames but never splits one across requests.
    pub fn send_frame<C: Codec>(
        &self,
        framed: &Framed<C>,
        item: &C::Item,
    ) -> impl Future<Output = Result<Ack>> + Send + '_ {
        let frame = framed.to_frame(item);
        async move { self.send(frame?).await }
    }
}
