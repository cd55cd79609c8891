//! The State Protocol into SQLite: write user records with `StateWriter`
//! (single changes and a transaction, one atomic append), materialize them
//! into a SQLite file with `SqliteStore`, query the file with SQL, and
//! materialize again to see that nothing is applied twice.
//!
//! Run against a server (the example needs the `sqlite` feature):
//! `cargo run -p durable-streams-client --features sqlite --example state_sqlite -- http://127.0.0.1:4437`
//! (the URL may also come from `DS_URL`; `scripts/demo.sh` shows how to
//! start a local server).

use durable_streams_client::state::{Materializer, SqliteStore, StateWriter};
use durable_streams_client::{Client, CreateOptions, LiveMode, Producer};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct User {
    name: String,
    email: String,
}

fn user(name: &str) -> User {
    User {
        name: name.to_owned(),
        email: format!(
            "{}@example.com",
            name.split_whitespace()
                .next()
                .unwrap_or(name)
                .to_lowercase()
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("state-sqlite-{}", std::process::id());
    let stream = client.stream(format!("{base}/v1/stream/{name}"))?;
    stream.create_with(CreateOptions::json()).await?;
    println!("created {}", stream.url());

    // Writes go through the idempotent producer: exactly once under retries.
    let writer = StateWriter::new(Producer::builder(&stream, "users-writer").connect().await?);
    for (key, name) in [("1", "Alice"), ("2", "Bob"), ("3", "Carol")] {
        // The ack is not awaited here: `close` below waits for everything.
        drop(writer.insert("user", key, &user(name)).await?);
    }
    // A transaction: both changes in one append, seen together or not at all.
    let mut tx = writer.transaction("rename-alice");
    tx.update("user", "1", &user("Alice Smith"))?;
    tx.delete("user", "2");
    tx.commit().await?.await?;
    writer.close().await?;

    // Materialize into a SQLite file: every read batch commits together with
    // its offset, so a restart resumes exactly where the state is.
    let db = std::env::temp_dir().join(format!("{name}.db"));
    let reason = Materializer::builder(&stream)
        .store(SqliteStore::open(&db)?)
        .live(LiveMode::Off) // stop at the tail
        .start()
        .join()
        .await?;
    println!("materialized into {} ({reason:?})", db.display());

    // Plain SQL over the state (SQLite's JSON operators on the value column).
    let store = SqliteStore::open(&db)?;
    let mut query = store.connection().prepare(
        "SELECT key, value ->> '$.name', value ->> '$.email' FROM ds_state
         WHERE entity_type = 'user' ORDER BY key",
    )?;
    let rows = query.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (key, name, email) = row?;
        println!("  user {key}: {name} <{email}>");
    }
    drop(query);
    println!("applied changes: {}", store.applied_changes()?);

    // Again: the stored offset is the tail, nothing is applied twice.
    Materializer::builder(&stream)
        .store(SqliteStore::open(&db)?)
        .live(LiveMode::Off)
        .start()
        .join()
        .await?;
    println!(
        "after a second run, applied changes: {} (exactly once)",
        store.applied_changes()?
    );

    drop(store);
    stream.delete().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(())
}
