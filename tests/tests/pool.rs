//! The process pool: a plugin's named tasks run in worker processes, each task answered exactly
//! once on the host's main thread; a task that crashes its worker is retried once on a fresh
//! one and then fails as poisoned, while the pool refills itself; cancel reaches a running task.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::sdk::plugin::{LoadOptions, TaskError, TaskResult};
use bridge::sdk::Runtime;
use hostloop_tests::{fixture, worker_program};

const HANG_LIMIT: Duration = Duration::from_secs(120);

fn options() -> LoadOptions {
    LoadOptions::new()
        .worker_program(worker_program())
        .restart_backoff(Duration::from_millis(10))
        .echo_stderr(false)
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)))
}

#[test]
fn every_task_is_answered_exactly_once_across_the_pool() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let pool = rt
        .task_pool(fixture("fixture_crashy"), 2, &options())
        .unwrap();
    assert_eq!(pool.pids().len(), 2);
    let answers: Arc<Mutex<Vec<(usize, TaskResult)>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = 60;
    for i in 0..n {
        let input: Vec<u8> = (0..1000 + i).map(|b| (b * 7 + i) as u8).collect();
        let task = pool.submit("sum", input);
        let (answers, calls) = (answers.clone(), calls.clone());
        task.on_main(move |r, _main| {
            calls.fetch_add(1, Ordering::SeqCst);
            answers.lock().unwrap().push((i, r));
        });
    }
    let report = rt
        .run_until(
            || calls.load(Ordering::SeqCst) >= n,
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(
        report.finished,
        "{} of {n} answers",
        calls.load(Ordering::SeqCst)
    );
    let answers = answers.lock().unwrap();
    let ids: HashSet<usize> = answers.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids.len(), n, "each task answered once");
    let mut pids = HashSet::new();
    for (i, r) in answers.iter() {
        let bytes = r.as_ref().expect("a result");
        let input: Vec<u8> = (0..1000 + i).map(|b| (b * 7 + i) as u8).collect();
        assert_eq!(
            u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            checksum(&input)
        );
        pids.insert(u32::from_le_bytes(bytes[8..12].try_into().unwrap()));
    }
    assert!(!pids.contains(&std::process::id()), "tasks run in workers");
    assert_eq!(pids.len(), 2, "both workers took tasks: {pids:?}");
    // One more pump: nothing is answered twice.
    rt.pump(Duration::from_millis(10)).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), n);
    let failing = pool.submit("fail", Vec::new());
    rt.run_until(
        || failing.try_result().is_some(),
        Duration::from_millis(2),
        HANG_LIMIT,
    )
    .unwrap();
    assert!(matches!(
        failing.try_result(),
        Some(Err(TaskError::Failed(why))) if why.contains("on purpose")
    ));
}

#[test]
fn a_task_that_crashes_its_worker_is_retried_once_then_poisoned_and_the_pool_refills() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let pool = rt
        .task_pool(fixture("fixture_crashy"), 1, &options())
        .unwrap();
    let before = pool.pids();
    let task = pool.submit("segv", Vec::new());
    let report = rt
        .run_until(
            || task.try_result().is_some(),
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished);
    match task.try_result() {
        Some(Err(TaskError::Poisoned(why))) => assert!(why.contains("SIGSEGV"), "{why}"),
        other => panic!("expected poisoned, got {other:?}"),
    }
    assert_eq!(task.attempts(), 2, "run, crash, retried once, crash");
    // The pool refilled itself: a new worker answers the next task.
    let sum = pool.submit("sum", b"abc".to_vec());
    rt.run_until(
        || sum.try_result().is_some(),
        Duration::from_millis(2),
        HANG_LIMIT,
    )
    .unwrap();
    let bytes = sum
        .try_result()
        .unwrap()
        .expect("the pool works after the crashes");
    assert_eq!(
        u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        checksum(b"abc")
    );
    let after = pool.pids();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a fresh worker");
}

#[test]
fn cancel_reaches_a_running_task_and_a_queued_one_never_runs() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let pool = rt
        .task_pool(fixture("fixture_crashy"), 1, &options())
        .unwrap();
    let spinning = pool.submit("spin", Vec::new());
    let queued = pool.submit("sum", b"never".to_vec());
    let report = rt
        .run_until(
            || spinning.progress() >= 0.5,
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished, "the task started and reported progress");
    queued.cancel();
    spinning.cancel();
    let report = rt
        .run_until(
            || spinning.try_result().is_some() && queued.try_result().is_some(),
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished);
    assert_eq!(spinning.try_result(), Some(Err(TaskError::Cancelled)));
    assert_eq!(queued.try_result(), Some(Err(TaskError::Cancelled)));
    assert_eq!(queued.attempts(), 0, "the queued task never ran");
    // Stopping the pool answers what is left as shut down.
    let left = pool.submit("spin", Vec::new());
    pool.stop(Duration::from_secs(2));
    rt.run_until(
        || left.try_result().is_some(),
        Duration::from_millis(2),
        HANG_LIMIT,
    )
    .unwrap();
    assert_eq!(left.try_result(), Some(Err(TaskError::ShutDown)));
}
