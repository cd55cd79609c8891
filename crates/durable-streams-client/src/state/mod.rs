//! The State Protocol (STATE-PROTOCOL.md): structured state on a JSON
//! stream as insert/update/delete change messages and snapshot/reset
//! control messages, materialized in order into a store.
//!
//! * [`StateMessage`], [`Change`], [`Control`]: the messages, validated on
//!   read (every MUST of sections 4-5) with errors of kind
//!   [`ErrorKind::InvalidMessage`](crate::ErrorKind::InvalidMessage) that
//!   name the offset, the message and the field; unknown fields are
//!   tolerated.
//! * [`StateWriter`]: typed inserts, updates and deletes through the
//!   idempotent producer (exactly once), transactions written as one
//!   append, snapshot boundaries and resets.
//! * [`Materializer`]: reads the stream (catch-up, then live in any mode)
//!   and applies each read batch to a [`StateStore`] together with its
//!   offset: [`MemoryStore`] (typed [`Collection`]s, change notifications,
//!   [`MemoryState::await_txid`]) or, with the `sqlite` feature,
//!   `SqliteStore`, where changes and offset commit in one SQLite
//!   transaction, so a restart resumes exactly where the state is: no
//!   change applied twice, none lost.
//!
//! Snapshots: the changes between `snapshot-start` and `snapshot-end` are
//! staged and become visible together. `reset` clears the state in the same
//! transaction as the changes around it; a reset whose `offset` lies ahead
//! makes the materializer continue from there (one pointing at or before
//! itself means "from here": jumping back would replay the reset forever).
//! A reset also ends a snapshot left open before it.
//!
//! Transactions: [`MemoryState::await_txid`] resolves once every change of a
//! transaction is applied. A transaction counts as complete when a later
//! message is outside it or the read reached the tail; appends are atomic,
//! so a transaction written in one append (as [`StateWriter`] does) is
//! never seen half.

mod materializer;
mod message;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod writer;

pub use materializer::{Materializer, MaterializerBuilder, MaterializerHandle};
pub use message::{Change, Control, ControlKind, Operation, StateMessage};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;
pub use store::{
    AppliedChange, ApplyBatch, Collection, MemoryState, MemoryStore, NOTIFY_CAPACITY,
    REMEMBERED_TXIDS, StateStore, StoreOp,
};
pub use writer::{StateWriter, Transaction};
