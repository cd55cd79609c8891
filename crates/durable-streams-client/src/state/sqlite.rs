//! The SQLite state store (feature `sqlite`): changes and the stream offset
//! commit in one SQLite transaction, so state survives restarts and every
//! change is applied exactly once.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::store::{ApplyBatch, StateStore, StoreOp};
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;

/// Tables (one database materializes one stream):
///
/// ```sql
/// ds_state(entity_type TEXT, key TEXT, value TEXT /* JSON */, PRIMARY KEY(entity_type, key))
/// ds_cursor(id = 1, stream TEXT, offset TEXT, applied_changes INTEGER)
/// ```
///
/// Query values with SQLite's JSON functions, for example
/// `SELECT key, value ->> '$.name' FROM ds_state WHERE entity_type = 'user'`.
/// The database runs in WAL mode, so other connections (or processes) can
/// read while the materializer writes, and always see whole batches and
/// whole snapshots. A snapshot streams into one open transaction and commits
/// at `snapshot-end`, so it is not held in memory.
const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS ds_state (
        entity_type TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (entity_type, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS ds_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        stream TEXT NOT NULL,
        offset TEXT NOT NULL,
        applied_changes INTEGER NOT NULL
    );
";

/// A [`StateStore`] in a SQLite database file (bundled SQLite).
pub struct SqliteStore {
    conn: Connection,
    stream: Option<String>,
    /// A transaction is open (a snapshot, or a batch not yet committed).
    open: bool,
    /// Changes applied in the open transaction.
    pending_changes: i64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("stream", &self.stream)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

fn store_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Store)
        .with_message(format!("SQLite state store: {what}"))
        .with_source(e)
}

impl SqliteStore {
    /// Open (or create) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let conn = Connection::open(path.as_ref()).map_err(|e| store_error("open", e))?;
        Self::with_connection(conn)
    }

    /// A database in memory (tests).
    pub fn in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(|e| store_error("open", e))?;
        Self::with_connection(conn)
    }

    fn with_connection(conn: Connection) -> Result<SqliteStore> {
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| store_error("configure", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| store_error("create tables", e))?;
        Ok(SqliteStore {
            conn,
            stream: None,
            open: false,
            pending_changes: 0,
        })
    }

    /// The committed offset and the stream it belongs to.
    pub fn cursor(&self) -> Result<Option<(String, Offset, u64)>> {
        let row = self
            .conn
            .query_row(
                "SELECT stream, offset, applied_changes FROM ds_cursor WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| store_error("read the cursor", e))?;
        row.map(|(stream, offset, applied)| {
            let offset = Offset::parse(&offset).map_err(|e| {
                Error::new(ErrorKind::Store).with_message(format!(
                    "SQLite state store: stored offset {offset:?} is invalid: {e}"
                ))
            })?;
            Ok((stream, offset, applied.max(0) as u64))
        })
        .transpose()
    }

    /// How many changes were applied in total (each exactly once).
    pub fn applied_changes(&self) -> Result<u64> {
        Ok(self.cursor()?.map_or(0, |(_, _, n)| n))
    }

    /// The value at `entity_type`/`key` (committed state).
    pub fn get(&self, entity_type: &str, key: &str) -> Result<Option<Value>> {
        let raw: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM ds_state WHERE entity_type = ?1 AND key = ?2",
                params![entity_type, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| store_error("read", e))?;
        raw.map(|r| parse_value(&r)).transpose()
    }

    /// Everything: type -> key -> value (committed state).
    pub fn snapshot(&self) -> Result<BTreeMap<String, BTreeMap<String, Value>>> {
        let mut stmt = self
            .conn
            .prepare("SELECT entity_type, key, value FROM ds_state")
            .map_err(|e| store_error("read", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| store_error("read", e))?;
        let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for row in rows {
            let (t, k, v) = row.map_err(|e| store_error("read", e))?;
            out.entry(t).or_default().insert(k, parse_value(&v)?);
        }
        Ok(out)
    }

    /// The connection, for queries of your own.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn exec(&self, sql: &str, what: &str) -> Result<()> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| store_error(what, e))
    }

    fn apply_ops(&mut self, ops: &[StoreOp]) -> Result<()> {
        let mut put = self
            .conn
            .prepare_cached(
                "INSERT INTO ds_state (entity_type, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (entity_type, key) DO UPDATE SET value = excluded.value",
            )
            .map_err(|e| store_error("prepare", e))?;
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM ds_state WHERE entity_type = ?1 AND key = ?2")
            .map_err(|e| store_error("prepare", e))?;
        let mut changes = 0;
        for op in ops {
            match op {
                StoreOp::Put {
                    entity_type,
                    key,
                    value,
                    ..
                } => {
                    put.execute(params![entity_type, key, value.to_string()])
                        .map_err(|e| store_error("write", e))?;
                    changes += 1;
                }
                StoreOp::Delete {
                    entity_type, key, ..
                } => {
                    delete
                        .execute(params![entity_type, key])
                        .map_err(|e| store_error("delete", e))?;
                    changes += 1;
                }
                StoreOp::Clear => {
                    self.conn
                        .execute("DELETE FROM ds_state", [])
                        .map_err(|e| store_error("clear", e))?;
                }
            }
        }
        self.pending_changes += changes;
        Ok(())
    }
}

fn parse_value(raw: &str) -> Result<Value> {
    serde_json::from_str(raw).map_err(|e| store_error("a stored value is not JSON", e))
}

impl StateStore for SqliteStore {
    fn committed_offset(&mut self, stream: &str) -> Result<Option<Offset>> {
        self.stream = Some(stream.to_owned());
        match self.cursor()? {
            Some((stored, _, _)) if stored != stream => Err(Error::new(ErrorKind::Store)
                .with_message(format!(
                    "this database materializes {stored}, not {stream}; use one database per stream"
                ))),
            Some((_, offset, _)) => Ok(Some(offset)),
            None => Ok(None),
        }
    }

    fn apply(&mut self, batch: &ApplyBatch) -> Result<()> {
        if !self.open {
            self.exec("BEGIN IMMEDIATE", "begin")?;
            self.open = true;
            self.pending_changes = 0;
        }
        if let Err(e) = self.apply_ops(&batch.ops) {
            let _ = self.discard_staged();
            return Err(e);
        }
        if batch.commit {
            let stream = self.stream.clone().unwrap_or_default();
            let written = self.conn.execute(
                "INSERT INTO ds_cursor (id, stream, offset, applied_changes) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET offset = excluded.offset,
                     applied_changes = ds_cursor.applied_changes + excluded.applied_changes",
                params![stream, batch.offset.as_str(), self.pending_changes],
            );
            if let Err(e) = written {
                let _ = self.discard_staged();
                return Err(store_error("save the offset", e));
            }
            if let Err(e) = self.exec("COMMIT", "commit") {
                let _ = self.discard_staged();
                return Err(e);
            }
            self.open = false;
            self.pending_changes = 0;
        }
        Ok(())
    }

    fn discard_staged(&mut self) -> Result<()> {
        if self.open {
            self.open = false;
            self.pending_changes = 0;
            self.exec("ROLLBACK", "roll back")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Operation;

    fn put(k: &str, v: i64) -> StoreOp {
        StoreOp::Put {
            entity_type: "t".into(),
            key: k.into(),
            value: Value::from(v),
            operation: Operation::Insert,
            txid: None,
        }
    }

    fn batch(ops: Vec<StoreOp>, offset: &str, commit: bool) -> ApplyBatch {
        ApplyBatch {
            ops,
            offset: Offset::parse(offset).unwrap(),
            commit,
            completed_txids: vec![],
        }
    }

    #[test]
    fn batches_and_offset_commit_together_and_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("ds-sqlite-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.committed_offset("http://h/s").unwrap(), None);
            s.apply(&batch(vec![put("a", 1), put("b", 2)], "0_1", true))
                .unwrap();
            // A snapshot in progress: staged, not committed.
            s.apply(&batch(vec![StoreOp::Clear, put("c", 3)], "0_2", false))
                .unwrap();
            let reader = SqliteStore::open(&path).unwrap();
            assert_eq!(
                reader.snapshot().unwrap()["t"].len(),
                2,
                "readers never see half a snapshot"
            );
        } // dropped mid-snapshot: rolled back
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.committed_offset("http://h/s").unwrap(),
            Some(Offset::parse("0_1").unwrap())
        );
        assert_eq!(s.get("t", "a").unwrap(), Some(Value::from(1)));
        assert_eq!(s.get("t", "c").unwrap(), None);
        assert_eq!(s.applied_changes().unwrap(), 2);
        s.apply(&batch(
            vec![StoreOp::Delete {
                entity_type: "t".into(),
                key: "a".into(),
                txid: None,
            }],
            "0_3",
            true,
        ))
        .unwrap();
        assert_eq!(s.applied_changes().unwrap(), 3);
        assert_eq!(s.get("t", "a").unwrap(), None);
        let err = s.committed_offset("http://h/other").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Store), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
