//! Flow decisions of the consumer engine, without a server.

use std::sync::Mutex;

use super::*;
use crate::Client;
use crate::RetryPolicy;
use crate::checkpoint::DynCheckpointStore;
use std::time::Duration;

fn offset(s: &str) -> Offset {
    Offset::parse(s).unwrap()
}

fn chunk(data: &'static str, at: &str, up_to_date: bool, closed: bool) -> Chunk {
    Chunk {
        data: Bytes::from_static(data.as_bytes()),
        offset: offset(at),
        exact: true,
        cursor: None,
        up_to_date,
        closed,
        status: 200,
        messages: None,
        typed_bytes: None,
    }
}

#[derive(Default)]
struct Log {
    batches: Vec<Vec<u32>>,
    errors: Vec<ErrorKind>,
    up_to_date: Vec<Offset>,
    closed: Vec<Offset>,
}

/// Handler scripted by the batch's first item: 0 stop, 13 error, 66 panic.
#[derive(Clone, Default)]
struct Scripted {
    log: Arc<Mutex<Log>>,
    on_error: Option<ErrorAction>,
}

impl Handler for Scripted {
    type Format = Json<u32>;

    async fn handle_batch(&mut self, batch: &Batch<u32>) -> Result<Flow> {
        self.log.lock().unwrap().batches.push(batch.items.clone());
        match batch.items[0] {
            0 => Ok(Flow::Stop),
            13 => Err(Error::handler("unlucky")),
            66 => panic!("boom {}", batch.items[0]),
            _ => Ok(Flow::Continue),
        }
    }

    async fn handle_error(&mut self, error: &Error) -> ErrorAction {
        self.log.lock().unwrap().errors.push(error.kind().clone());
        self.on_error
            .unwrap_or_else(|| ErrorAction::default_for(error))
    }

    async fn on_up_to_date(&mut self, offset: &Offset) {
        self.log.lock().unwrap().up_to_date.push(offset.clone());
    }

    async fn on_closed(&mut self, offset: &Offset) {
        self.log.lock().unwrap().closed.push(offset.clone());
    }
}

fn runner(handler: Scripted, store: Option<MemoryCheckpointStore>) -> Runner<Scripted> {
    let stream = Client::new()
        .stream("http://127.0.0.1:9/v1/stream/x")
        .unwrap();
    let (committed, _) = watch::channel(None);
    let mut reader = ReaderConfig::new(stream, "unit");
    reader.start = StartFrom::Start;
    reader.store = store.map(|s| Arc::new(s) as Arc<dyn DynCheckpointStore>);
    Runner::new(reader, handler, (), CancellationToken::new(), committed)
}

#[tokio::test]
async fn continue_commits_after_the_handler_and_empty_batches_skip_it() {
    let store = MemoryCheckpointStore::new();
    let h = Scripted::default();
    let mut r = runner(h.clone(), Some(store.clone()));
    assert_eq!(
        r.process(chunk("[1,2]", "a1", false, false)).await.unwrap(),
        None
    );
    assert_eq!(store.get("unit"), Some(offset("a1")));
    assert_eq!(*r.committed.borrow(), Some(offset("a1")));
    // An empty up-to-date chunk is not a batch but moves the checkpoint.
    assert_eq!(
        r.process(chunk("[]", "a2", true, false)).await.unwrap(),
        None
    );
    assert_eq!(store.get("unit"), Some(offset("a2")));
    assert_eq!(r.position, Some(offset("a2")));
    let log = h.log.lock().unwrap();
    assert_eq!(log.batches, vec![vec![1, 2]]);
    assert_eq!(log.up_to_date, vec![offset("a2")]);
}

#[tokio::test]
async fn only_exact_offsets_are_committed_and_never_backwards() {
    let store = MemoryCheckpointStore::new();
    let h = Scripted::default();
    let mut r = runner(h.clone(), Some(store.clone()));
    r.process(chunk("[1]", "a2", false, false)).await.unwrap();
    assert_eq!(store.get("unit"), Some(offset("a2")));
    // A piece of a large response: handled, not committed.
    let mut piece = chunk("[2,3]", "a2", false, false);
    piece.exact = false;
    r.process(piece).await.unwrap();
    assert_eq!(store.get("unit"), Some(offset("a2")));
    // An offset behind the checkpoint never moves it back.
    r.process(chunk("[4]", "a1", false, false)).await.unwrap();
    assert_eq!(store.get("unit"), Some(offset("a2")));
    assert_eq!(*r.committed.borrow(), Some(offset("a2")));
    r.process(chunk("[5]", "a3", false, false)).await.unwrap();
    assert_eq!(store.get("unit"), Some(offset("a3")));
    assert_eq!(h.log.lock().unwrap().batches.len(), 4);
}

#[tokio::test]
async fn stop_commits_then_stops() {
    let store = MemoryCheckpointStore::new();
    let mut r = runner(Scripted::default(), Some(store.clone()));
    let got = r.process(chunk("[0]", "b1", false, false)).await.unwrap();
    assert_eq!(got, Some(StopReason::Handler));
    assert_eq!(store.get("unit"), Some(offset("b1")));
}

#[tokio::test]
async fn errors_and_panics_do_not_commit() {
    let store = MemoryCheckpointStore::new();
    let mut r = runner(Scripted::default(), Some(store.clone()));
    r.process(chunk("[1]", "c1", false, false)).await.unwrap();
    let err = r
        .process(chunk("[13]", "c2", false, false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Handler { panicked: false });
    assert!(err.to_string().contains("unlucky"), "{err}");
    let err = r
        .process(chunk("[66]", "c3", false, false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Handler { panicked: true });
    assert!(err.to_string().contains("boom 66"), "{err}");
    assert_eq!(store.get("unit"), Some(offset("c1")));
    assert_eq!(r.position, Some(offset("c1")));
}

#[tokio::test]
async fn closed_calls_the_hook_and_stops() {
    let h = Scripted::default();
    let mut r = runner(h.clone(), None);
    let got = r.process(chunk("[5]", "d1", true, true)).await.unwrap();
    assert_eq!(got, Some(StopReason::Closed));
    let log = h.log.lock().unwrap();
    assert_eq!(log.closed, vec![offset("d1")]);
    assert_eq!(log.batches, vec![vec![5]]);
}

#[tokio::test]
async fn up_to_date_hook_fires_on_transitions_only() {
    let h = Scripted::default();
    let mut r = runner(h.clone(), None);
    r.process(chunk("[1]", "e1", true, false)).await.unwrap();
    r.process(chunk("[2]", "e2", true, false)).await.unwrap();
    r.process(chunk("[3]", "e3", false, false)).await.unwrap();
    r.process(chunk("[4]", "e4", true, false)).await.unwrap();
    assert_eq!(
        h.log.lock().unwrap().up_to_date,
        vec![offset("e1"), offset("e4")]
    );
}

#[tokio::test]
async fn undecodable_json_is_a_decode_error() {
    let mut r = runner(Scripted::default(), None);
    let err = r
        .process(chunk(r#"["not a number"]"#, "f1", false, false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Decode(crate::DecodeKind::Json));
    assert_eq!(ErrorAction::default_for(&err), ErrorAction::Stop);
}

#[test]
fn default_error_action_reconnects_only_for_retryable_errors() {
    assert_eq!(
        ErrorAction::default_for(&Error::new(ErrorKind::Network)),
        ErrorAction::Reconnect
    );
    assert_eq!(
        ErrorAction::default_for(&Error::new(ErrorKind::Server { status: 503 })),
        ErrorAction::Reconnect
    );
    for kind in [
        ErrorKind::NotFound,
        ErrorKind::Handler { panicked: true },
        ErrorKind::Handler { panicked: false },
        ErrorKind::Checkpoint,
    ] {
        assert_eq!(
            ErrorAction::default_for(&Error::new(kind)),
            ErrorAction::Stop
        );
    }
}

#[test]
fn raw_format_keeps_bytes_whole() {
    let data = |d: &'static str| chunk(d, "o", false, false);
    assert!(Raw::decode(&mut (), &mut data("")).unwrap().is_empty());
    assert_eq!(
        Raw::decode(&mut (), &mut data("ab")).unwrap(),
        vec![Bytes::from_static(b"ab")]
    );
    let mut json = <Json<u32>>::decoder(&(), &Offset::start());
    assert!(
        <Json<u32>>::decode(&mut json, &mut data(""))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        <Json<u32>>::decode(&mut json, &mut data("[1, 2]")).unwrap(),
        vec![1, 2]
    );
}

#[test]
fn build_validates_name_and_policy() {
    let stream = Client::new()
        .stream("http://127.0.0.1:9/v1/stream/x")
        .unwrap();
    let err = Consumer::builder(&stream, Scripted::default())
        .name("")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "name" });
    let err = Consumer::builder(&stream, Scripted::default())
        .name("../escape")
        .checkpoint_store(FileCheckpointStore::new(std::env::temp_dir()))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "name" });
    let err = Consumer::builder(&stream, Scripted::default())
        .retry_policy(RetryPolicy::default().jitter(2.0))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "jitter" });
    assert!(
        Consumer::builder(&stream, Scripted::default())
            .name("ok")
            .build()
            .is_ok()
    );
}

fn unreachable_stream() -> Stream {
    // Port 9 (discard) on loopback: connection refused, fast.
    Client::builder()
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap()
        .stream("http://127.0.0.1:9/v1/stream/x")
        .unwrap()
}

#[tokio::test]
async fn reconnects_with_backoff_then_gives_up_after_max_retries() {
    let h = Scripted::default();
    let handle = Consumer::builder(&unreachable_stream(), h.clone())
        .retry_policy(
            RetryPolicy::default()
                .max_retries(3)
                .initial_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap()
        .spawn();
    let err = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Network);
    // The first attempt and three reconnects each failed.
    assert_eq!(h.log.lock().unwrap().errors.len(), 4);
}

#[tokio::test]
async fn handle_error_stop_ends_with_the_error_and_shutdown_interrupts_backoff() {
    let h = Scripted {
        on_error: Some(ErrorAction::Stop),
        ..Scripted::default()
    };
    let handle = Consumer::builder(&unreachable_stream(), h.clone())
        .build()
        .unwrap()
        .spawn();
    let err = handle.join().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Network);
    assert_eq!(h.log.lock().unwrap().errors.len(), 1);

    // Reconnecting with a long backoff: shutdown does not wait for it.
    let handle = Consumer::builder(&unreachable_stream(), Scripted::default())
        .retry_policy(
            default_retry_policy()
                .initial_delay(Duration::from_secs(20))
                .jitter(0.0),
        )
        .build()
        .unwrap()
        .spawn();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(handle.shutdown().await.unwrap(), StopReason::Shutdown);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ConsumerHandle>();
    assert_send_sync::<FileCheckpointStore>();
    assert_send_sync::<MemoryCheckpointStore>();
    fn assert_send<T: Send>(_: &T) {}
    let consumer = Consumer::builder(&unreachable_stream(), Scripted::default())
        .build()
        .unwrap();
    assert_send(&consumer.run(CancellationToken::new()));
}
