//! Typed State Protocol writes through the idempotent producer.

use serde::Serialize;
use serde_json::Value;

use super::message::{Change, Control, ControlKind, Operation, StateMessage};
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::producer::{Ack, Producer};

/// Writes change and control messages to a JSON stream through an
/// idempotent [`Producer`], so every message is stored exactly once under
/// retries. Single changes are batched with their neighbours like any
/// producer message; a [`Transaction`] is written as one append, which the
/// server stores atomically.
///
/// ```no_run
/// # async fn demo(stream: durable_streams_client::Stream) -> durable_streams_client::Result<()> {
/// use durable_streams_client::Producer;
/// use durable_streams_client::state::StateWriter;
/// let writer = StateWriter::new(Producer::builder(&stream, "users-writer").connect().await?);
/// writer.insert("user", "1", &serde_json::json!({"name": "Alice"})).await?;
/// let mut tx = writer.transaction("tx-42");
/// tx.update("user", "1", &serde_json::json!({"name": "Alice Smith"}))?;
/// tx.delete("user", "2");
/// tx.commit().await?.await?; // stored (the receipt), one append
/// writer.close().await?;
/// # Ok(()) }
/// ```
/// Share it across tasks behind an `Arc`.
#[derive(Debug)]
pub struct StateWriter {
    producer: Producer,
}

impl StateWriter {
    /// Write through `producer` (its stream must be `application/json`).
    pub fn new(producer: Producer) -> Self {
        StateWriter { producer }
    }

    /// The producer underneath.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Write one message (waits for buffer room; the [`Ack`] resolves once
    /// the server stored it).
    pub async fn send(&self, message: &StateMessage) -> Result<Ack> {
        self.producer.send_json(&message.to_json()).await
    }

    /// Insert `value` at `entity_type`/`key`.
    pub async fn insert<T: Serialize + Sync + ?Sized>(
        &self,
        entity_type: &str,
        key: &str,
        value: &T,
    ) -> Result<Ack> {
        let change = Change::new(Operation::Insert, entity_type, key, Some(to_value(value)?));
        self.send(&StateMessage::Change(change)).await
    }

    /// Replace the value at `entity_type`/`key`.
    pub async fn update<T: Serialize + Sync + ?Sized>(
        &self,
        entity_type: &str,
        key: &str,
        value: &T,
    ) -> Result<Ack> {
        let change = Change::new(Operation::Update, entity_type, key, Some(to_value(value)?));
        self.send(&StateMessage::Change(change)).await
    }

    /// Delete the entity at `entity_type`/`key`.
    pub async fn delete(&self, entity_type: &str, key: &str) -> Result<Ack> {
        let change = Change::new(Operation::Delete, entity_type, key, None);
        self.send(&StateMessage::Change(change)).await
    }

    /// Mark the start of a snapshot: readers see the changes up to
    /// [`snapshot_end`](Self::snapshot_end) all at once.
    pub async fn snapshot_start(&self) -> Result<Ack> {
        self.control(ControlKind::SnapshotStart, None).await
    }

    /// Mark the end of a snapshot.
    pub async fn snapshot_end(&self) -> Result<Ack> {
        self.control(ControlKind::SnapshotEnd, None).await
    }

    /// Tell readers to clear their state (and continue from `offset` when
    /// it lies ahead of the reset).
    pub async fn reset(&self, offset: Option<Offset>) -> Result<Ack> {
        self.control(ControlKind::Reset, offset).await
    }

    async fn control(&self, kind: ControlKind, offset: Option<Offset>) -> Result<Ack> {
        self.send(&StateMessage::Control(Control::new(kind, offset)))
            .await
    }

    /// Start a transaction: changes collected under `txid` and written as
    /// one append by [`Transaction::commit`].
    pub fn transaction(&self, txid: impl Into<String>) -> Transaction<'_> {
        Transaction {
            writer: self,
            txid: txid.into(),
            messages: Vec::new(),
        }
    }

    /// Wait until everything written so far is stored.
    pub async fn flush(&self) -> Result<()> {
        self.producer.flush().await
    }

    /// Flush and stop the producer.
    pub async fn close(&self) -> Result<()> {
        self.producer.close().await
    }
}

/// Changes grouped under one `txid`, written together as one append.
#[derive(Debug)]
pub struct Transaction<'w> {
    writer: &'w StateWriter,
    txid: String,
    messages: Vec<Value>,
}

impl Transaction<'_> {
    /// Add an insert.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        entity_type: &str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        self.put(Operation::Insert, entity_type, key, value)
    }

    /// Add an update.
    pub fn update<T: Serialize + ?Sized>(
        &mut self,
        entity_type: &str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        self.put(Operation::Update, entity_type, key, value)
    }

    fn put<T: Serialize + ?Sized>(
        &mut self,
        operation: Operation,
        entity_type: &str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let change = Change::new(operation, entity_type, key, Some(to_value(value)?));
        self.push(change);
        Ok(())
    }

    /// Add a delete.
    pub fn delete(&mut self, entity_type: &str, key: &str) {
        self.push(Change::new(Operation::Delete, entity_type, key, None));
    }

    /// Add a change as is (its txid is replaced by the transaction's).
    pub fn push(&mut self, change: Change) {
        let change = change.txid(self.txid.clone());
        self.messages.push(StateMessage::Change(change).to_json());
    }

    /// Number of changes so far.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Write every change in one append (waits for buffer room). The
    /// [`Ack`] resolves once the server stored them.
    pub async fn commit(self) -> Result<Ack> {
        if self.messages.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument {
                field: "transaction",
            })
            .with_message("a transaction needs at least one change"));
        }
        self.writer.producer.send_json_group(&self.messages).await
    }
}

fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| {
        Error::invalid_argument(
            "value",
            format!("the value does not serialize to JSON: {e}"),
        )
    })
}
