use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn fast() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

#[tokio::test]
async fn panicking_child_is_restarted_until_intensity_is_exceeded() {
    let starts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&starts);
    let supervisor = Supervisor::builder()
        .child(ChildSpec::new("crasher", move |_token| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { panic!("boom") }
        }))
        .intensity(3, Duration::from_secs(10))
        .backoff(fast())
        .build()
        .unwrap();
    let err = supervisor.run(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::RestartIntensity);
    // First start plus three restarts; the fourth failure exceeds the limit.
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    assert!(err.to_string().contains("crasher"), "{err}");
}

// Paused time: the intensity window is measured on tokio's clock, so the
// test does not depend on how busy the machine is.
#[tokio::test(start_paused = true)]
async fn restarts_outside_the_period_do_not_count() {
    let starts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&starts);
    let handle = Supervisor::builder()
        .child(ChildSpec::new("slow-crasher", move |_token| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Err(Error::handler(format!("failure {n}")))
            }
        }))
        // One restart per 20 ms allowed; the child fails every ~30 ms.
        .intensity(1, Duration::from_millis(20))
        .backoff(fast())
        .build()
        .unwrap()
        .spawn();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!handle.is_finished());
    handle.shutdown().await.unwrap();
    assert!(starts.load(Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn restart_policies() {
    let counts: Vec<Arc<AtomicU32>> = (0..3).map(|_| Arc::new(AtomicU32::new(0))).collect();
    let spec = |name: &str, restart: Restart, fail: bool, n: &Arc<AtomicU32>| {
        let n = Arc::clone(n);
        ChildSpec::new(name, move |_token| {
            let k = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if fail && k < 2 {
                    Err(Error::handler("fails twice"))
                } else {
                    Ok(())
                }
            }
        })
        .restart(restart)
    };
    let result = Supervisor::builder()
        .child(spec("temporary", Restart::Temporary, true, &counts[0]))
        .child(spec("transient", Restart::Transient, true, &counts[1]))
        .child(spec("transient-ok", Restart::Transient, false, &counts[2]))
        .intensity(10, Duration::from_secs(10))
        .backoff(fast())
        .build()
        .unwrap()
        .run(CancellationToken::new())
        .await;
    // Every child ended for good: the supervisor stops by itself.
    result.unwrap();
    assert_eq!(counts[0].load(Ordering::SeqCst), 1, "temporary runs once");
    assert_eq!(
        counts[1].load(Ordering::SeqCst),
        3,
        "transient until success"
    );
    assert_eq!(counts[2].load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn permanent_child_restarts_after_normal_exit() {
    let n = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&n);
    let err = Supervisor::builder()
        .child(ChildSpec::new("exits", move |_t| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }))
        .intensity(2, Duration::from_secs(10))
        .backoff(fast())
        .build()
        .unwrap()
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::RestartIntensity);
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn shutdown_is_graceful_then_aborts_after_the_deadline() {
    let graceful = Arc::new(AtomicU32::new(0));
    let g = Arc::clone(&graceful);
    let handle = Supervisor::builder()
        .child(ChildSpec::new("polite", move |token: CancellationToken| {
            let g = Arc::clone(&g);
            async move {
                token.cancelled().await;
                g.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }))
        .child(ChildSpec::new("stubborn", |_token| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }))
        .shutdown_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .spawn();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    handle.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(graceful.load(Ordering::SeqCst), 1);
}

#[test]
fn builder_validation_names_the_field() {
    let field = |b: SupervisorBuilder| match b.build().unwrap_err().kind() {
        ErrorKind::InvalidArgument { field } => *field,
        other => panic!("unexpected {other:?}"),
    };
    let ok = || ChildSpec::new("a", |_t| async { Ok(()) });
    assert_eq!(field(Supervisor::builder()), "children");
    assert_eq!(
        field(Supervisor::builder().child(ok()).child(ok())),
        "children"
    );
    assert_eq!(
        field(Supervisor::builder().child(ChildSpec::new("", |_t| async { Ok(()) }))),
        "name"
    );
    assert_eq!(
        field(
            Supervisor::builder()
                .child(ok())
                .intensity(1, Duration::ZERO)
        ),
        "period"
    );
    assert!(Supervisor::builder().child(ok()).build().is_ok());
}
