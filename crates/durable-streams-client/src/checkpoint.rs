//! Where consumers remember how far they got.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::offset::Offset;

/// Longest consumer name a [`FileCheckpointStore`] accepts.
pub const MAX_NAME_LEN: usize = 200;

/// Persists the last committed offset of each consumer, by consumer name.
///
/// The consumer calls [`save`](CheckpointStore::save) only after its handler
/// finished a batch successfully, and [`load`](CheckpointStore::load) once at
/// start (for [`StartFrom::Checkpoint`](crate::consumer::StartFrom::Checkpoint)).
/// Implementations must be atomic per save: a crash mid-save leaves either the
/// old or the new offset, never a torn value.
///
/// Implement it with `async fn` (the futures must be `Send`):
///
/// ```
/// use durable_streams_client::consumer::CheckpointStore;
/// use durable_streams_client::{Offset, Result};
///
/// struct Nowhere;
/// impl CheckpointStore for Nowhere {
///     async fn load(&self, _name: &str) -> Result<Option<Offset>> { Ok(None) }
///     async fn save(&self, _name: &str, _offset: &Offset) -> Result<()> { Ok(()) }
/// }
/// ```
pub trait CheckpointStore: Send + Sync + 'static {
    /// The saved offset of consumer `name`, `None` when it never saved one.
    fn load(&self, name: &str) -> impl Future<Output = Result<Option<Offset>>> + Send;

    /// Durably record `offset` as consumer `name`'s position.
    fn save(&self, name: &str, offset: &Offset) -> impl Future<Output = Result<()>> + Send;

    /// Check a consumer name before the consumer starts (default: accept all).
    /// A rejected name fails [`ConsumerBuilder::build`](crate::consumer::ConsumerBuilder::build).
    fn validate_name(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }
}

/// Object-safe form of [`CheckpointStore`], so the consumer can hold any store.
pub(crate) trait DynCheckpointStore: Send + Sync {
    fn load_boxed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Offset>>>;
    fn save_boxed<'a>(&'a self, name: &'a str, offset: &'a Offset) -> BoxFuture<'a, Result<()>>;
    fn validate_name_dyn(&self, name: &str) -> Result<()>;
}

impl<S: CheckpointStore> DynCheckpointStore for S {
    fn load_boxed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Offset>>> {
        Box::pin(self.load(name))
    }
    fn save_boxed<'a>(&'a self, name: &'a str, offset: &'a Offset) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.save(name, offset))
    }
    fn validate_name_dyn(&self, name: &str) -> Result<()> {
        self.validate_name(name)
    }
}

/// Checkpoints in memory, shared by clones (for tests and for consumers that
/// only need to survive reconnects, not process restarts).
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpointStore {
    offsets: Arc<Mutex<HashMap<String, Offset>>>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The saved offset of `name`, without awaiting.
    pub fn get(&self, name: &str) -> Option<Offset> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Offset>> {
        // A poisoned map is still a valid map (values are replaced whole).
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Offset>> {
        Ok(self.get(name))
    }

    async fn save(&self, name: &str, offset: &Offset) -> Result<()> {
        self.lock().insert(name.to_owned(), offset.clone());
        Ok(())
    }
}

/// Checkpoints as files: one file per consumer name in a directory, holding
/// the offset token.
///
/// Saves are atomic and durable: the offset is written to a uniquely named
/// temporary file in the same directory, fsynced, renamed over the
/// checkpoint file, and the directory is fsynced. A crash leaves the old or
/// the new offset. All file I/O runs on tokio's blocking pool, never on the
/// async workers.
///
/// Names may contain ASCII letters, digits, `-`, `_` and `.`, must not start
/// with `.` and are at most [`MAX_NAME_LEN`] bytes, so a name can never
/// address a file outside the directory; other names are `InvalidArgument`.
#[derive(Clone)]
pub struct FileCheckpointStore {
    dir: Arc<PathBuf>,
}

impl fmt::Debug for FileCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCheckpointStore")
            .field("dir", &self.dir)
            .finish()
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileCheckpointStore {
    /// A store in `dir`; the directory is created on the first save.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileCheckpointStore {
            dir: Arc::new(dir.into()),
        }
    }

    /// The directory holding the checkpoint files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the checkpoint of `name` (after validating it).
    pub fn path_for(&self, name: &str) -> Result<PathBuf> {
        validate_file_name(name)?;
        Ok(self.dir.join(name))
    }
}

fn validate_file_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("must be at most {MAX_NAME_LEN} bytes"))
    } else if name.starts_with('.') {
        Some("must not start with '.'".to_owned())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .map(|c| {
                format!("may only contain ASCII letters, digits, '-', '_' and '.'; found {c:?}")
            })
    };
    match why {
        Some(why) => Err(Error::invalid_argument(
            "name",
            format!("checkpoint name {name:?} {why}"),
        )),
        None => Ok(()),
    }
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    let message = format!("{what} {}: {err}", path.display());
    Error::checkpoint(err).with_message(message)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::checkpoint(e).with_message("checkpoint I/O task failed"))?
}

impl CheckpointStore for FileCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Offset>> {
        let path = self.path_for(name)?;
        blocking(move || {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error("cannot read checkpoint", &path, e)),
            };
            let offset = Offset::parse(text.trim()).map_err(|e| {
                let e = Error::from(e);
                let message = format!("corrupt checkpoint file {}: {e}", path.display());
                Error::checkpoint(e).with_message(message)
            })?;
            Ok(Some(offset))
        })
        .await
    }

    async fn save(&self, name: &str, offset: &Offset) -> Result<()> {
        let path = self.path_for(name)?;
        let dir = Arc::clone(&self.dir);
        let temp = self.dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let contents = format!("{}\n", offset.as_str());
        blocking(move || write_atomically(&dir, &temp, &path, contents.as_bytes())).await
    }

    fn validate_name(&self, name: &str) -> Result<()> {
        validate_file_name(name)
    }
}

fn write_atomically(dir: &Path, temp: &Path, path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(|e| io_error("cannot create", temp, e))?;
        file.write_all(contents)
            .map_err(|e| io_error("cannot write", temp, e))?;
        file.sync_all()
            .map_err(|e| io_error("cannot fsync", temp, e))?;
        drop(file);
        std::fs::rename(temp, path).map_err(|e| io_error("cannot rename over", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result?;
    sync_dir(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot fsync directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    // Directories cannot be opened for fsync on this platform; the rename
    // itself is atomic.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ds-checkpoint-{tag}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn token(s: &str) -> Offset {
        Offset::parse(s).unwrap()
    }

    #[tokio::test]
    async fn memory_store_round_trips_and_is_shared_by_clones() {
        let store = MemoryCheckpointStore::new();
        assert_eq!(store.load("a").await.unwrap(), None);
        store.save("a", &token("1_1")).await.unwrap();
        let clone = store.clone();
        clone.save("a", &token("1_2")).await.unwrap();
        assert_eq!(store.load("a").await.unwrap(), Some(token("1_2")));
        assert_eq!(store.get("b"), None);
    }

    #[tokio::test]
    async fn file_store_round_trips_and_overwrites() {
        let dir = temp_dir("roundtrip");
        let store = FileCheckpointStore::new(&dir);
        assert_eq!(store.load("orders").await.unwrap(), None);
        store.save("orders", &token("0001_0042")).await.unwrap();
        store.save("orders", &token("0001_0043")).await.unwrap();
        store.save("audit.v2", &Offset::start()).await.unwrap();
        assert_eq!(
            store.load("orders").await.unwrap(),
            Some(token("0001_0043"))
        );
        assert_eq!(store.load("audit.v2").await.unwrap(), Some(Offset::start()));
        assert_eq!(
            std::fs::read_to_string(dir.join("orders")).unwrap(),
            "0001_0043\n"
        );
        // Only the checkpoint files remain: no temporary files left behind.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.v2", "orders"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn file_store_rejects_names_that_escape_the_directory() {
        let dir = temp_dir("names");
        let store = FileCheckpointStore::new(&dir);
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "/etc/passwd",
            ".hidden",
            "a\0b",
            "a b",
            "ü",
            &long,
        ] {
            let err = store.save(bad, &token("1")).await.unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::InvalidArgument { field: "name" },
                "{bad:?}"
            );
            let err = store.load(bad).await.unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::InvalidArgument { field: "name" },
                "{bad:?}"
            );
            assert!(store.validate_name(bad).is_err());
        }
        assert!(!dir.exists(), "nothing was written");
        assert!(store.validate_name("consumer-1_a.b").is_ok());
    }

    #[tokio::test]
    async fn an_interrupted_save_leaves_the_previous_checkpoint() {
        let dir = temp_dir("atomic");
        let store = FileCheckpointStore::new(&dir);
        store.save("c", &token("good")).await.unwrap();
        // A crash after writing the temporary file but before the rename:
        // the leftover temp file is ignored and the old value is intact.
        std::fs::write(dir.join(".c.999.0.tmp"), "torn").unwrap();
        assert_eq!(store.load("c").await.unwrap(), Some(token("good")));
        // A save whose rename fails (target is a directory) keeps the old value
        // and cleans up its temporary file.
        std::fs::create_dir(dir.join("d")).unwrap();
        std::fs::create_dir(dir.join("d").join("x")).unwrap();
        let err = store.save("d", &token("new")).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Checkpoint);
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(".d.")
            })
            .count();
        assert_eq!(leftovers, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn concurrent_saves_never_tear_the_file() {
        let dir = temp_dir("concurrent");
        let store = FileCheckpointStore::new(&dir);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .save("c", &token(&format!("{i:04}_{}", "x".repeat(100))))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let got = store.load("c").await.unwrap().unwrap();
        assert!(got.as_str().ends_with(&"x".repeat(100)), "{got}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_checkpoint_is_a_checkpoint_error() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c"), "a/b\n").unwrap();
        let err = FileCheckpointStore::new(&dir).load("c").await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Checkpoint);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
