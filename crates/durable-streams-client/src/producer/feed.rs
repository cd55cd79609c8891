//! The futures of [`Producer::send`], [`Producer::feed`], their `_slice`
//! forms and [`Producer::send_json`] / [`Producer::feed_json`]: one
//! hand-written future for all of them. At its first poll it spends a unit
//! of tokio's cooperative budget, checks the message and appends it when the
//! buffer budget has room, with no async state machine per message (the
//! chain of `async fn`s it replaced cost 10-60 of a message's 400-580
//! instructions); only a wait for room takes a boxed future (rare, and its
//! state inline would be moved with every message).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;

use super::batch::OutcomeReceiver;
use super::{Ack, Producer};
use crate::error::Result;

/// A payload appended now (its outcome receiver, if asked for), or the
/// payload back when the buffer budget had no room for it (nothing taken).
pub(super) type PushedNow<P> = std::result::Result<Option<OutcomeReceiver>, P>;

/// A wait for buffer room, then the append.
type PushWhenRoom<'p> = Pin<Box<dyn Future<Output = Result<Option<OutcomeReceiver>>> + Send + 'p>>;

/// What a feed resolves to: nothing ([`Producer::feed`]) or an [`Ack`]
/// ([`Producer::send`]).
pub(super) trait Outcome: Sized {
    /// Whether the message's batch must report its outcome to it.
    const WANTED: bool;

    /// The result from the receiver a push returned (`Some` exactly when
    /// [`WANTED`](Self::WANTED)).
    fn from_receiver(rx: Option<OutcomeReceiver>) -> Self;
}

impl Outcome for () {
    const WANTED: bool = false;

    #[inline]
    fn from_receiver(_: Option<OutcomeReceiver>) {}
}

impl Outcome for Ack {
    const WANTED: bool = true;

    #[inline]
    fn from_receiver(rx: Option<OutcomeReceiver>) -> Ack {
        Ack {
            rx: rx.expect("a push asked for its outcome returns a receiver"),
        }
    }
}

/// A message as the caller gave it: owned (kept as is when it is a whole
/// body by itself), or borrowed (always copied).
pub(super) enum Message<'a> {
    Owned(Bytes),
    Borrowed(&'a [u8]),
}

impl Message<'_> {
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Message::Owned(bytes) => bytes,
            Message::Borrowed(slice) => slice,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(super) fn into_bytes(self) -> Bytes {
        match self {
            Message::Owned(bytes) => bytes,
            Message::Borrowed(slice) => Bytes::copy_from_slice(slice),
        }
    }
}

/// What a feed appends: bytes, or a value to encode as JSON.
pub(super) trait Payload<'p>: Sized + Send + Unpin {
    /// Append now if the buffer budget has room: the outcome receiver, or
    /// the payload back when there is no room (nothing taken).
    fn try_push(self, producer: &'p Producer, want_outcome: bool) -> Result<PushedNow<Self>>;

    /// Wait for room, then append.
    fn push_when_room(self, producer: &'p Producer, want_outcome: bool) -> PushWhenRoom<'p>;
}

impl<'p> Payload<'p> for Message<'p> {
    #[inline(always)]
    fn try_push(self, producer: &'p Producer, want_outcome: bool) -> Result<PushedNow<Self>> {
        producer.check_message(self.as_slice())?;
        producer.try_push_now(self, want_outcome)
    }

    fn push_when_room(self, producer: &'p Producer, want_outcome: bool) -> PushWhenRoom<'p> {
        Box::pin(producer.push_after_room(self, want_outcome))
    }
}

/// A value for a JSON stream, encoded straight into the batch when there is
/// room.
pub(super) struct Json<'p, T: ?Sized>(pub(super) &'p T);

impl<'p, T: Serialize + Sync + ?Sized> Payload<'p> for Json<'p, T> {
    #[inline(always)]
    fn try_push(self, producer: &'p Producer, want_outcome: bool) -> Result<PushedNow<Self>> {
        Ok(producer
            .try_push_json_now(self.0, want_outcome)?
            .map_err(|()| self))
    }

    fn push_when_room(self, producer: &'p Producer, want_outcome: bool) -> PushWhenRoom<'p> {
        // Encoded now, into a message of its own, to wait with.
        let encoded = producer.encode_json(self.0);
        Box::pin(async move {
            let message = Message::Owned(encoded?);
            producer.check_message(message.as_slice())?;
            producer.push_after_room(message, want_outcome).await
        })
    }
}

/// The future of one feed of payload `P` resolving to `O` (see the module
/// docs).
pub(super) struct FeedFuture<'p, P, O> {
    state: FeedState<'p, P>,
    outcome: PhantomData<fn() -> O>,
}

enum FeedState<'p, P> {
    /// Not yet appended: the producer and the payload.
    Start(&'p Producer, P),
    /// Waiting for buffer room.
    Waiting(PushWhenRoom<'p>),
    /// Finished (polled again: a bug in the caller, answered with a panic
    /// like any finished future's).
    Done,
}

impl<'p, P, O> FeedFuture<'p, P, O> {
    #[inline]
    pub(super) fn new(producer: &'p Producer, payload: P) -> Self {
        FeedFuture {
            state: FeedState::Start(producer, payload),
            outcome: PhantomData,
        }
    }
}

impl<'p, P: Payload<'p>, O: Outcome> Future for FeedFuture<'p, P, O> {
    type Output = Result<O>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<O>> {
        // Unpin: a reference, a box and the payload (bytes or a reference).
        let this = self.get_mut();
        match std::mem::replace(&mut this.state, FeedState::Done) {
            FeedState::Start(producer, payload) => {
                // With room in the budget nothing here waits; counting
                // against tokio's cooperative budget lets the producer's own
                // task (and the connections) run on a single-threaded
                // runtime while a caller appends in a loop.
                match tokio::task::coop::poll_proceed(cx) {
                    Poll::Ready(spent) => spent.made_progress(),
                    Poll::Pending => {
                        this.state = FeedState::Start(producer, payload);
                        return Poll::Pending;
                    }
                }
                match payload.try_push(producer, O::WANTED)? {
                    Ok(rx) => Poll::Ready(Ok(O::from_receiver(rx))),
                    Err(payload) => this.poll_wait(payload.push_when_room(producer, O::WANTED), cx),
                }
            }
            FeedState::Waiting(wait) => this.poll_wait(wait, cx),
            FeedState::Done => panic!("a producer's send or feed polled after it finished"),
        }
    }
}

impl<'p, P, O: Outcome> FeedFuture<'p, P, O> {
    /// Poll the wait for room, kept until it is done (the state is `Done`
    /// meanwhile).
    fn poll_wait(&mut self, mut wait: PushWhenRoom<'p>, cx: &mut Context<'_>) -> Poll<Result<O>> {
        match wait.as_mut().poll(cx) {
            Poll::Ready(pushed) => Poll::Ready(pushed.map(O::from_receiver)),
            Poll::Pending => {
                self.state = FeedState::Waiting(wait);
                Poll::Pending
            }
        }
    }
}
