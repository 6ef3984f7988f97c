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

/// Whether process `pid` still exists (a zombie counts: it was not reaped).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A plugin (loaded as `options` say) starts a pool of its own from its event handler and
/// submits tasks to it; every answer reaches the plugin's continuation on the host's main
/// thread, once; unloading the plugin ends the pool's workers, reaped.
fn a_plugin_fans_out_to_a_pool_of_its_own(load: LoadOptions) {
    use bridge::sdk::{Event, Message, Payload};
    let rt = Runtime::builder().workers(2).build().unwrap();
    type Inbox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        if let Payload::Bytes(b) = m.payload {
            sink.lock().unwrap().push((m.topic.to_owned(), b.to_vec()));
        }
    })));
    let plugin_path = fixture("fixture_crashy");
    let plugin = rt.load_plugin_with(&plugin_path, &load).unwrap();
    let n = 24u64;
    let request = format!(
        "{}\n{}\n{n}",
        worker_program().display(),
        plugin_path.display()
    );
    rt.post_event(Event::Custom {
        topic: "crashy/fan".into(),
        bytes: request.into_bytes(),
        coalesce: false,
    })
    .unwrap();
    let count = |topic: &str| {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .count()
    };
    let report = rt
        .run_until(
            || count("crashy/fanned") as u64 >= n || count("crashy/fan-error") > 0,
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    let got = inbox.lock().unwrap().clone();
    assert!(report.finished, "no answers after {HANG_LIMIT:?}: {got:?}");
    let errors: Vec<String> = got
        .iter()
        .filter(|(t, _)| t == "crashy/fan-error")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(errors.is_empty(), "the plugin's pool failed: {errors:?}");
    let mut seen = HashSet::new();
    let mut pids = HashSet::new();
    for (_, b) in got.iter().filter(|(t, _)| t == "crashy/fanned") {
        let i = u64::from_le_bytes(b[..8].try_into().unwrap());
        assert!(seen.insert(i), "task {i} answered twice");
        let input = vec![i as u8; i as usize + 1];
        assert_eq!(
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            checksum(&input),
            "task {i}'s answer"
        );
        pids.insert(u32::from_le_bytes(b[16..20].try_into().unwrap()));
    }
    assert_eq!(seen.len() as u64, n);
    assert!(!pids.contains(&std::process::id()), "tasks run in workers");
    if let Some(worker) = plugin.info().pid {
        assert!(
            !pids.contains(&worker),
            "the pool's workers are not the plugin's"
        );
    }
    assert!(pids.iter().all(|&p| alive(p)), "the pool is running");
    rt.pump(Duration::from_millis(10)).unwrap();
    assert_eq!(count("crashy/fanned") as u64, n, "nothing answered twice");

    // Unloading the plugin ends (and reaps) the workers of its pool.
    let report = plugin.unload(Duration::from_secs(10));
    assert_eq!(report.stragglers, 0, "unload: {report:?}");
    let deadline = std::time::Instant::now() + HANG_LIMIT;
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin's pool workers {pids:?} outlived its unload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rt);
}

#[test]
fn an_in_process_plugin_submits_tasks_to_a_pool_and_its_unload_ends_it() {
    a_plugin_fans_out_to_a_pool_of_its_own(LoadOptions::new());
}

#[test]
fn an_isolated_plugin_submits_tasks_to_a_pool_of_its_own_workers() {
    a_plugin_fans_out_to_a_pool_of_its_own(
        options().isolation(bridge::sdk::plugin::Isolation::OwnProcess),
    );
}

/// A task's input and result above the inline limit (64 KiB) cross in sealed memfds, not
/// through the socket, and arrive intact.
#[test]
fn large_task_inputs_and_results_arrive_intact() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let pool = rt
        .task_pool(fixture("fixture_crashy"), 1, &options())
        .unwrap();
    let input: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 241) as u8).collect();
    let echo = pool.submit("echo", input.clone());
    let sum = pool.submit("sum", input.clone());
    let report = rt
        .run_until(
            || echo.try_result().is_some() && sum.try_result().is_some(),
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished, "the answers did not come");
    assert!(
        echo.try_result().unwrap().unwrap() == input,
        "the echo differs"
    );
    let summed = sum.try_result().unwrap().unwrap();
    assert_eq!(
        u64::from_le_bytes(summed[..8].try_into().unwrap()),
        checksum(&input)
    );
}
