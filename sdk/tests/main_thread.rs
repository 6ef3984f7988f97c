//! The main-thread side: pump order and budget, chunked items, re-entrancy, thread checks, the
//! doorbell, `request_pump`, `call_on_main`, streams and coalesced progress.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{is_readable, pump_until, runtime, wait_for, HANG};
use hostloop::{Error, Runtime, Step, TrySendError};

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn pump_runs_main_thread_items_in_fifo_order() {
    let rt = runtime(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..10_000 {
        let seen = seen.clone();
        rt.post(move |_| seen.lock().unwrap().push(i)).unwrap();
    }
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!(report.ran, 10_000);
    assert_eq!(report.remaining, 0);
    assert_eq!(*seen.lock().unwrap(), (0..10_000).collect::<Vec<_>>());
}

#[test]
fn items_from_two_producers_keep_each_producers_order() {
    let rt = runtime(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let h = rt.handle().clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let seen = seen.clone();
                    h.post(move |_| seen.lock().unwrap().push((p, i))).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    pump_until(&rt, || seen.lock().unwrap().len() == 10_000);
    for p in 0..2 {
        let mine: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.0 == p)
            .map(|x| x.1)
            .collect();
        assert_eq!(mine, (0..5_000).collect::<Vec<_>>());
    }
}

#[test]
fn pump_stops_when_budget_is_spent() {
    let rt = runtime(1);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..1_000 {
        let ran = ran.clone();
        rt.post(move |_| {
            spin_for(Duration::from_micros(100));
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    let report = rt.pump(Duration::from_millis(1)).unwrap();
    // 100 µs items in a 1 ms budget: about 10 run (fewer if the machine preempts us), never all.
    assert!(
        (1..=11).contains(&report.ran),
        "ran {} items of 100 µs in a 1 ms budget",
        report.ran
    );
    assert_eq!(report.ran, ran.load(Ordering::Relaxed));
    assert_eq!(report.remaining, 1_000 - report.ran);
    // The budget is spent with work left: the doorbell stays readable so the host comes back.
    assert!(is_readable(rt.doorbell_fd()));
}

#[test]
fn zero_budget_pump_still_runs_one_item() {
    let rt = runtime(1);
    for _ in 0..3 {
        rt.post(|_| {}).unwrap();
    }
    let report = rt.pump(Duration::ZERO).unwrap();
    assert!(report.ran >= 1);
    assert_eq!(report.ran + report.remaining, 3);
}

#[test]
fn chunked_item_resumes_on_the_next_pump_and_keeps_fifo() {
    let rt = runtime(1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let chunks = Arc::new(AtomicUsize::new(0));
    {
        let log = log.clone();
        let chunks = chunks.clone();
        rt.post_chunked(move |_| {
            spin_for(Duration::from_micros(200));
            let n = chunks.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 50 {
                log.lock().unwrap().push("chunked done");
                Step::Done
            } else {
                Step::Continue
            }
        })
        .unwrap();
    }
    {
        let log = log.clone();
        rt.post(move |_| log.lock().unwrap().push("after")).unwrap();
    }
    // 50 chunks of 200 µs do not fit a 1 ms budget: the item must span several pumps.
    let first = rt.pump(Duration::from_millis(1)).unwrap();
    assert!(chunks.load(Ordering::Relaxed) < 50);
    assert!(
        first.remaining >= 2,
        "the chunked item and the one after it wait"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing overtook the chunked item"
    );
    let mut pumps = 1;
    while log.lock().unwrap().len() < 2 {
        rt.pump(Duration::from_millis(1)).unwrap();
        pumps += 1;
        assert!(pumps < 100_000, "chunked item never finished");
    }
    assert!(pumps > 1);
    assert_eq!(*log.lock().unwrap(), vec!["chunked done", "after"]);
}

#[test]
fn pump_inside_pump_is_an_error_not_a_deadlock() {
    let rt = runtime(1);
    let inner = Arc::new(Mutex::new(None));
    {
        let inner = inner.clone();
        rt.post(move |main| {
            *inner.lock().unwrap() = Some(main.handle().pump(Duration::from_millis(1)));
        })
        .unwrap();
    }
    rt.pump(Duration::from_millis(10)).unwrap();
    let r = inner.lock().unwrap().take().expect("item ran");
    assert!(matches!(r, Err(Error::Reentrant)), "{r:?}");
    // The outer pump still works afterwards.
    rt.post(|_| {}).unwrap();
    assert_eq!(rt.pump(Duration::from_millis(10)).unwrap().ran, 1);
}

#[test]
fn pump_from_another_thread_is_wrong_thread() {
    let rt = runtime(1);
    let h = rt.handle().clone();
    let r = std::thread::spawn(move || h.pump(Duration::from_millis(1)))
        .join()
        .unwrap();
    assert!(matches!(r, Err(Error::WrongThread)), "{r:?}");
    // From a job too.
    let job = rt
        .spawn(|ctx| Ok(ctx.handle().pump(Duration::from_millis(1))))
        .unwrap();
    let h = rt.handle().clone();
    pump_until(&h, || job.is_finished());
    let r = job.try_result().unwrap().unwrap();
    assert!(matches!(r, Err(Error::WrongThread)), "{r:?}");
}

#[test]
fn doorbell_is_readable_when_work_arrives_and_cleared_by_pump() {
    let rt = runtime(1);
    let fd = rt.doorbell_fd();
    assert!(!is_readable(fd));
    rt.post(|_| {}).unwrap();
    assert!(is_readable(fd));
    let report = rt.pump(Duration::from_millis(10)).unwrap();
    assert_eq!((report.ran, report.remaining), (1, 0));
    assert!(!is_readable(fd));
    // And rings again for the next item.
    rt.post(|_| {}).unwrap();
    assert!(is_readable(fd));
}

#[test]
fn a_burst_of_100k_results_rings_the_doorbell_once() {
    let rt = runtime(1);
    let before = rt.stats().doorbell_rings;
    let h = rt.handle().clone();
    std::thread::spawn(move || {
        for _ in 0..100_000 {
            h.post(|_| {}).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(rt.stats().doorbell_rings - before, 1);
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!(report.ran, 100_000);
    // After a full drain the next burst rings once more.
    for _ in 0..10 {
        rt.post(|_| {}).unwrap();
    }
    assert_eq!(rt.stats().doorbell_rings - before, 2);
}

/// The bell is acknowledged when the pump finds the queue empty, not when it starts: what items
/// post while the pump drains rings nothing, and the pump leaves the fd quiet.
#[test]
fn posts_during_a_pump_ring_nothing() {
    let rt = runtime(1);
    let fd = rt.doorbell_fd();
    let before = rt.stats().doorbell_rings;
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let ran = ran.clone();
        rt.post(move |main| {
            // A worker posting while the pump runs (here: the pump's own item, and a thread
            // that finishes before the item returns).
            let h = main.handle().clone();
            let r = ran.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let r = r.clone();
                    h.post(move |_| {
                        r.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap();
                }
            })
            .join()
            .unwrap();
        })
        .unwrap();
    }
    assert_eq!(rt.stats().doorbell_rings - before, 1);
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!((report.ran, report.remaining), (1001, 0));
    assert_eq!(ran.load(Ordering::Relaxed), 1000);
    assert_eq!(
        rt.stats().doorbell_rings - before,
        1,
        "posts that the running pump drained rang again"
    );
    assert!(!is_readable(fd));
}

/// A pump that stops with work left rings (so a `request_pump` host is asked again), and the
/// fd stays readable until a pump drains everything.
#[test]
fn a_pump_that_leaves_work_rings_and_the_fd_stays_readable() {
    let rt = runtime(1);
    let fd = rt.doorbell_fd();
    for _ in 0..3 {
        rt.post(|_| {}).unwrap();
    }
    let before = rt.stats().doorbell_rings;
    let report = rt.pump(Duration::ZERO).unwrap();
    assert_eq!((report.ran, report.remaining), (1, 2));
    assert!(is_readable(fd));
    assert_eq!(rt.stats().doorbell_rings - before, 1);
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!((report.ran, report.remaining), (2, 0));
    assert!(!is_readable(fd));
    // An empty pump on a quiet fd changes nothing.
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!((report.ran, report.remaining), (0, 0));
    assert!(!is_readable(fd));
}

#[test]
fn a_worker_wakes_a_host_blocked_on_the_doorbell() {
    let rt = runtime(2);
    let fd = rt.doorbell_fd();
    let job = rt
        .spawn(|_| Ok(42))
        .unwrap()
        .on_main(|r, _| assert_eq!(r.unwrap(), 42));
    // Block in poll on the fd like a host loop would; the job's completion must wake us.
    assert!(common::wait_readable(fd, HANG), "doorbell never rang");
    pump_until(rt.handle(), || {
        job.is_finished() && rt.stats().queued.main == 0
    });
}

#[test]
fn request_pump_callback_is_coalesced_like_the_fd() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let rt = Runtime::builder()
        .workers(1)
        .request_pump(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let h = rt.handle().clone();
    std::thread::spawn(move || {
        for _ in 0..10_000 {
            h.post(|_| {}).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    rt.pump(Duration::from_secs(60)).unwrap();
    rt.post(|_| {}).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panicking_request_pump_callback_does_not_take_the_worker_down() {
    let rt = Runtime::builder()
        .workers(1)
        .request_pump(|| panic!("host callback bug"))
        .build()
        .unwrap();
    let job = rt.spawn(|_| Ok(7)).unwrap().on_main(|_, _| {});
    wait_for("job finished", || job.is_finished());
    let again = rt.spawn(|_| Ok(8)).unwrap();
    wait_for("second job finished", || again.is_finished());
    assert_eq!(again.try_result().unwrap().unwrap(), 8);
}

#[test]
fn call_on_main_runs_inline_on_the_main_thread() {
    let rt = runtime(1);
    let main_id = std::thread::current().id();
    let r = rt
        .call_on_main(move |_| std::thread::current().id() == main_id)
        .unwrap();
    assert!(r);
}

#[test]
fn call_on_main_from_a_worker_returns_the_value_once_the_host_pumps() {
    let rt = runtime(1);
    let main_id = std::thread::current().id();
    let job = rt
        .spawn(move |ctx| {
            let on_main = ctx
                .handle()
                .call_on_main(move |_| std::thread::current().id() == main_id)?;
            Ok(on_main)
        })
        .unwrap();
    pump_until(rt.handle(), || job.is_finished());
    assert!(job.try_result().unwrap().unwrap());
}

#[test]
fn call_on_main_reports_host_busy_and_never_runs_late() {
    let rt = runtime(1);
    let ran = Arc::new(AtomicBool::new(false));
    let h = rt.handle().clone();
    let r = {
        let ran = ran.clone();
        std::thread::spawn(move || {
            h.call_on_main_timeout(Duration::from_millis(50), move |_| {
                ran.store(true, Ordering::SeqCst);
            })
        })
        .join()
        .unwrap()
    };
    assert!(matches!(r, Err(Error::HostBusy)), "{r:?}");
    // The host pumps late: the abandoned call must not run.
    rt.pump(Duration::from_millis(10)).unwrap();
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn call_on_main_reports_a_panic_as_an_error() {
    let rt = runtime(1);
    let h = rt.handle().clone();
    let caller = std::thread::spawn(move || h.call_on_main(|_| -> u32 { panic!("main boom") }));
    pump_until(rt.handle(), || caller.is_finished());
    match caller.join().unwrap() {
        Err(Error::Panicked(msg)) => assert!(msg.contains("main boom")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_panicking_main_item_is_isolated() {
    let rt = runtime(1);
    let after = Arc::new(AtomicBool::new(false));
    rt.post(|_| panic!("item boom")).unwrap();
    {
        let after = after.clone();
        rt.post(move |_| after.store(true, Ordering::SeqCst))
            .unwrap();
    }
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!(report.ran, 2);
    assert!(after.load(Ordering::SeqCst));
    assert_eq!(rt.stats().main_items_panicked, 1);
}

/// A chunked item that panics is dropped at once (what it captured too), and the pump goes on
/// with the items after it; so do the items after a panicking one-shot item.
#[test]
fn a_panicking_chunked_item_is_dropped_and_the_pump_goes_on() {
    let rt = runtime(1);
    let captured = Arc::new(());
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let captured = captured.clone();
        let calls = calls.clone();
        rt.post_chunked(move |_| {
            let _keep = &captured;
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("chunk boom");
            }
            Step::Continue
        })
        .unwrap();
    }
    let after = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let after = after.clone();
        rt.post(move |_| {
            after.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    rt.post(|_| panic!("once boom")).unwrap();
    {
        let after = after.clone();
        rt.post(move |_| {
            after.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let report = rt.pump(Duration::from_secs(60)).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(after.load(Ordering::SeqCst), 4);
    assert_eq!((report.ran, report.remaining), (7, 0));
    assert_eq!(rt.stats().main_items_panicked, 2);
    assert_eq!(
        Arc::strong_count(&captured),
        1,
        "the panicked chunked item was kept"
    );
}

/// What is still queued when a runtime goes away is dropped with it, posts that raced its
/// shutdown included: nothing leaks.
#[test]
fn items_queued_at_shutdown_are_dropped() {
    let captured = Arc::new(());
    let rt = runtime(1);
    for _ in 0..100 {
        let c = captured.clone();
        rt.post(move |_| drop(c)).unwrap();
    }
    {
        let c = captured.clone();
        rt.post_chunked(move |_| {
            let _keep = &c;
            Step::Continue
        })
        .unwrap();
    }
    rt.pump(Duration::ZERO).unwrap();
    let report = rt.shutdown(Duration::from_secs(10));
    assert_eq!(report.main_items_dropped, 100);
    assert_eq!(Arc::strong_count(&captured), 1);
    assert!(rt.post(|_| {}).is_err());
}

#[test]
fn stream_applies_back_pressure_and_delivers_everything_in_order() {
    let rt = runtime(1);
    let got = Arc::new(Mutex::new(Vec::new()));
    let tx = {
        let got = got.clone();
        rt.stream(8, move |x: u32, _| got.lock().unwrap().push(x))
    };
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let tx = tx.clone();
        let sent = sent.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The host is not pumping: the producer fills the stream and then waits.
    wait_for("stream full", || tx.len() == 8);
    assert_eq!(
        sent.load(Ordering::SeqCst),
        8,
        "producer blocked at capacity"
    );
    assert!(matches!(tx.try_send(999), Err(TrySendError::Full(999))));
    assert!(!producer.is_finished());
    pump_until(rt.handle(), || got.lock().unwrap().len() == 100);
    producer.join().unwrap();
    assert_eq!(*got.lock().unwrap(), (0..100).collect::<Vec<_>>());
}

#[test]
fn shutdown_releases_a_sender_blocked_on_a_full_stream() {
    let rt = runtime(1);
    let tx = rt.stream(1, |_: u32, _| {});
    tx.send(0).unwrap();
    let blocked = {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(1))
    };
    wait_for("sender to block", || {
        !blocked.is_finished() && tx.len() == 1
    });
    rt.shutdown(Duration::from_secs(1));
    assert!(matches!(blocked.join().unwrap(), Err(Error::ShutDown)));
}

#[test]
fn ten_million_progress_reports_cost_the_main_thread_a_few_reads() {
    let rt = runtime(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(0.0f32));
    let job = {
        let calls = calls.clone();
        let last = last.clone();
        rt.spawn(|ctx| {
            const N: u32 = 10_000_000;
            for i in 0..N {
                ctx.progress(i as f32 / N as f32);
            }
            ctx.progress_with(1.0, "done");
            Ok(())
        })
        .unwrap()
        .on_progress(move |p, _| {
            calls.fetch_add(1, Ordering::Relaxed);
            *last.lock().unwrap() = p.fraction;
        })
    };
    let mut pumps = 0;
    pump_until(rt.handle(), || {
        pumps += 1;
        job.is_finished() && rt.stats().queued.main == 0
    });
    let calls = calls.load(Ordering::Relaxed);
    assert!(calls >= 1);
    assert!(calls <= pumps, "{calls} listener calls in {pumps} pumps");
    assert_eq!(*last.lock().unwrap(), 1.0);
    let p = job.progress();
    assert_eq!(p.fraction, 1.0);
    assert_eq!(p.message.as_deref(), Some("done"));
}

/// A job that reports, then finishes, while a pump is past its progress entries: its result
/// waits for the last report (delivered first, at the next pump), never the other way round.
#[test]
fn a_jobs_last_progress_reaches_its_listener_before_its_result() {
    let rt = runtime(1);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let go = Arc::new(AtomicBool::new(false));
    let job = {
        let go = go.clone();
        rt.spawn(move |ctx| {
            while !go.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            ctx.progress(1.0);
            Ok(())
        })
        .unwrap()
    };
    let (l1, l2) = (log.clone(), log.clone());
    let _job = job
        .on_progress(move |p, _| l1.lock().unwrap().push(format!("progress {}", p.fraction)))
        .on_main(move |_: hostloop::Result<()>, _| l2.lock().unwrap().push("done".into()));
    // An item that lets the job run and waits, inside the pump, until its progress entry and
    // its result are both queued behind the pump's progress phase.
    rt.post(move |main| {
        go.store(true, Ordering::Release);
        let start = Instant::now();
        while main.handle().stats().queued.main < 2 && start.elapsed() < HANG {
            std::thread::yield_now();
        }
    })
    .unwrap();
    rt.pump(Duration::from_secs(60)).unwrap();
    assert!(
        !log.lock().unwrap().contains(&"done".to_owned()),
        "the result ran ahead of the queued progress report: {:?}",
        log.lock().unwrap()
    );
    pump_until(&rt, || log.lock().unwrap().len() == 2);
    assert_eq!(*log.lock().unwrap(), ["progress 1", "done"]);
}

#[test]
fn run_until_drives_the_pump_until_the_condition_holds() {
    let rt = runtime(1);
    let results = Arc::new(AtomicUsize::new(0));
    for i in 0..100 {
        let results = results.clone();
        let _job = rt.spawn(move |_| Ok(i)).unwrap().on_main(move |r, _| {
            r.unwrap();
            results.fetch_add(1, Ordering::SeqCst);
        });
    }
    let report = rt
        .run_until(
            || results.load(Ordering::SeqCst) == 100,
            Duration::from_millis(2),
            HANG,
        )
        .unwrap();
    assert!(report.finished);
    assert_eq!(results.load(Ordering::SeqCst), 100);
    assert!(report.pumps >= 1 && report.ran >= 100, "{report:?}");
}

#[test]
fn run_until_times_out_asleep_and_refuses_other_threads_and_reentry() {
    let rt = runtime(1);
    let report = rt
        .run_until(
            || false,
            Duration::from_millis(2),
            Duration::from_millis(200),
        )
        .unwrap();
    assert!(!report.finished);
    assert!(report.elapsed >= Duration::from_millis(200));
    // Nothing arrived: it slept on the doorbell between pumps instead of spinning.
    assert!(report.pumps <= 20, "{report:?}");

    let h = rt.handle().clone();
    let off_main = std::thread::spawn(move || {
        h.run_until(|| true, Duration::ZERO, Duration::ZERO)
            .map(|_| ())
    })
    .join()
    .unwrap();
    assert!(matches!(off_main, Err(Error::WrongThread)), "{off_main:?}");

    let inner = Arc::new(Mutex::new(None));
    let slot = inner.clone();
    rt.post(move |main| {
        let r = main
            .handle()
            .run_until(|| false, Duration::ZERO, Duration::from_millis(1));
        *slot.lock().unwrap() = Some(r.map(|_| ()));
    })
    .unwrap();
    rt.pump(HANG).unwrap();
    let inner = inner.lock().unwrap().take().expect("the item ran");
    assert!(matches!(inner, Err(Error::Reentrant)), "{inner:?}");
}

#[test]
fn pump_and_run_until_inside_the_until_condition_are_reentrant() {
    let rt = runtime(1);
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        rt.post(move |_| ran.store(true, Ordering::SeqCst)).unwrap();
    }
    let mut nested = Vec::new();
    let report = rt
        .run_until(
            || {
                if nested.is_empty() {
                    nested.push(rt.pump(Duration::ZERO).map(|_| ()));
                    nested.push(
                        rt.run_until(|| true, Duration::ZERO, Duration::ZERO)
                            .map(|_| ()),
                    );
                }
                ran.load(Ordering::SeqCst)
            },
            Duration::from_millis(2),
            HANG,
        )
        .unwrap();
    assert!(
        matches!(nested[..], [Err(Error::Reentrant), Err(Error::Reentrant)]),
        "{nested:?}"
    );
    // The outer loop is unharmed: its own pump ran the item, and the report counts it.
    assert!(report.finished && report.ran >= 1, "{report:?}");
    // Outside `until` both work again.
    rt.pump(Duration::ZERO).unwrap();
    assert!(
        rt.run_until(|| true, Duration::ZERO, Duration::ZERO)
            .unwrap()
            .finished
    );
}
