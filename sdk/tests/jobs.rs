//! Jobs: results, errors, cancellation, continuations, groups, `spawn_latest`, panics, stats.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pump_until, runtime, wait_for, HANG};
use hostloop::{Error, Priority};

/// A gate a job can block on cooperatively (waking on cancellation), opened by the test.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    /// Spawns a job (at `priority`) that waits at this gate, cooperatively cancellable.
    fn blocker(&self, rt: &hostloop::Runtime, priority: Priority) -> hostloop::Job<()> {
        let gate = self.clone();
        rt.spawn_with(priority, move |ctx| {
            gate.wait(|| ctx.is_cancelled());
            Ok(())
        })
        .unwrap()
    }

    /// Waits until opened, or until `cancelled()` (checked every millisecond), or a hang.
    fn wait(&self, cancelled: impl Fn() -> bool) {
        let mut open = self.0 .0.lock().unwrap();
        let start = std::time::Instant::now();
        while !*open && !cancelled() {
            assert!(start.elapsed() < HANG, "gate never opened");
            open = self
                .0
                 .1
                .wait_timeout(open, Duration::from_millis(1))
                .unwrap()
                .0;
        }
    }
}

#[test]
fn on_main_receives_the_jobs_value_on_the_main_thread() {
    let rt = runtime(2);
    let main_id = std::thread::current().id();
    let got = Arc::new(Mutex::new(None));
    let job = {
        let got = got.clone();
        rt.spawn(|_| Ok(6 * 7)).unwrap().on_main(move |r, _| {
            assert_eq!(std::thread::current().id(), main_id);
            *got.lock().unwrap() = Some(r.unwrap());
        })
    };
    pump_until(rt.handle(), || got.lock().unwrap().is_some());
    assert_eq!(*got.lock().unwrap(), Some(42));
    assert!(job.is_finished());
    assert!(
        job.try_result().is_none(),
        "the continuation took the result"
    );
}

#[test]
fn try_result_and_wait_timeout_take_the_result_once() {
    let rt = runtime(1);
    let job = rt.spawn(|_| Ok("value")).unwrap();
    let h = rt.handle().clone();
    let r = std::thread::spawn(move || {
        let job = job;
        let first = job.wait_timeout(HANG);
        let second = job.wait_timeout(Duration::from_millis(1));
        (first, second, job.try_result().is_none())
    })
    .join()
    .unwrap();
    assert_eq!(r.0.unwrap(), "value");
    assert!(matches!(r.1, Err(Error::ResultTaken)));
    assert!(r.2);
    drop(h);
}

#[test]
fn wait_timeout_on_the_main_thread_is_wrong_thread() {
    let rt = runtime(1);
    let job = rt.spawn(|_| Ok(1)).unwrap();
    assert!(matches!(job.wait_timeout(HANG), Err(Error::WrongThread)));
}

#[test]
fn wait_timeout_times_out_on_a_job_that_has_not_finished() {
    let rt = runtime(1);
    let gate = Gate::default();
    let job = gate.blocker(&rt, Priority::Normal);
    let r = std::thread::scope(|s| {
        s.spawn(|| job.wait_timeout(Duration::from_millis(20)))
            .join()
    });
    assert!(matches!(r.unwrap(), Err(Error::Timeout)));
    gate.open();
    wait_for("job", || job.is_finished());
}

#[test]
fn a_jobs_own_error_is_its_result() {
    let rt = runtime(1);
    let job = rt
        .spawn(|_| -> hostloop::Result<()> {
            std::fs::read("/nonexistent/hostloop/file")?;
            Ok(())
        })
        .unwrap();
    wait_for("job", || job.is_finished());
    assert!(matches!(job.try_result(), Some(Err(Error::Failed(_)))));
    assert_eq!(rt.stats().jobs_failed, 1);
}

#[test]
fn a_panicking_job_becomes_an_error_and_the_pool_lives_on() {
    let rt = runtime(1);
    let bad = rt
        .spawn(|_| -> hostloop::Result<()> { panic!("job boom {}", 7) })
        .unwrap();
    wait_for("panicking job", || bad.is_finished());
    match bad.try_result() {
        Some(Err(Error::Panicked(msg))) => assert!(msg.contains("job boom 7"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // The single worker survived and runs later jobs.
    let jobs: Vec<_> = (0..100)
        .map(|i| rt.spawn(move |_| Ok(i)).unwrap())
        .collect();
    wait_for("later jobs", || jobs.iter().all(|j| j.is_finished()));
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.try_result().unwrap().unwrap(), i);
    }
    assert_eq!(rt.stats().jobs_panicked, 1);
}

#[test]
fn a_panicking_continuation_does_not_stop_the_pump() {
    let rt = runtime(1);
    let later = Arc::new(AtomicBool::new(false));
    let a = rt
        .spawn(|_| Ok(()))
        .unwrap()
        .on_main(|_, _| panic!("continuation boom"));
    let b = {
        let later = later.clone();
        rt.spawn(|_| Ok(()))
            .unwrap()
            .on_main(move |_, _| later.store(true, Ordering::SeqCst))
    };
    pump_until(rt.handle(), || later.load(Ordering::SeqCst));
    assert!(a.is_finished() && b.is_finished());
    wait_for("panic counted", || rt.stats().main_items_panicked == 1);
}

#[test]
fn cancel_before_start_means_the_job_never_runs() {
    let rt = runtime(1);
    let gate = Gate::default();
    let blocker = gate.blocker(&rt, Priority::Normal);
    let ran = Arc::new(AtomicBool::new(false));
    let got = Arc::new(Mutex::new(None));
    let job = {
        let ran = ran.clone();
        let got = got.clone();
        rt.spawn(move |_| {
            ran.store(true, Ordering::SeqCst);
            Ok(1)
        })
        .unwrap()
        .on_main(move |r, _| *got.lock().unwrap() = Some(r))
    };
    job.cancel();
    gate.open();
    pump_until(rt.handle(), || got.lock().unwrap().is_some());
    assert!(!ran.load(Ordering::SeqCst));
    assert!(matches!(
        got.lock().unwrap().take(),
        Some(Err(Error::Cancelled))
    ));
    assert!(blocker.is_finished());
}

#[test]
fn a_running_job_sees_cancellation_and_stops() {
    let rt = runtime(1);
    let started = Arc::new(AtomicBool::new(false));
    let job = {
        let started = started.clone();
        rt.spawn(move |ctx| {
            started.store(true, Ordering::SeqCst);
            loop {
                ctx.check()?;
                std::hint::spin_loop();
            }
            #[allow(unreachable_code)]
            Ok(())
        })
        .unwrap()
    };
    wait_for("job start", || started.load(Ordering::SeqCst));
    job.cancel();
    wait_for("job to observe cancel", || job.is_finished());
    assert!(matches!(job.try_result(), Some(Err(Error::Cancelled))));
}

#[test]
fn cancel_after_finish_turns_a_pending_continuation_into_cancelled() {
    let rt = runtime(1);
    let got = Arc::new(Mutex::new(None));
    let job = {
        let got = got.clone();
        rt.spawn(|_| Ok(5))
            .unwrap()
            .on_main(move |r, _| *got.lock().unwrap() = Some(r))
    };
    wait_for("job", || job.is_finished());
    job.cancel(); // before the host pumped: the value must not land
    pump_until(rt.handle(), || got.lock().unwrap().is_some());
    assert!(matches!(
        got.lock().unwrap().take(),
        Some(Err(Error::Cancelled))
    ));
}

#[test]
fn spawn_latest_never_delivers_a_stale_result() {
    let rt = runtime(2);
    let delivered = Arc::new(Mutex::new(Vec::new()));
    // Case 1: the old job is still running when superseded.
    let gate = Gate::default();
    let old = {
        let gate = gate.clone();
        let delivered = delivered.clone();
        rt.spawn_latest("node/path", move |ctx| {
            gate.wait(|| ctx.is_cancelled());
            Ok("old-running")
        })
        .unwrap()
        .on_main(move |r, _| delivered.lock().unwrap().push(r.map_err(|e| e.to_string())))
    };
    // Case 2: the old job already finished and its continuation waits in the main queue.
    let finished = {
        let delivered = delivered.clone();
        rt.spawn_latest("other", |_| Ok("old-finished"))
            .unwrap()
            .on_main(move |r, _| delivered.lock().unwrap().push(r.map_err(|e| e.to_string())))
    };
    wait_for("finished job", || finished.is_finished());
    let new1 = {
        let delivered = delivered.clone();
        rt.spawn_latest("node/path", |_| Ok("new-1"))
            .unwrap()
            .on_main(move |r, _| delivered.lock().unwrap().push(r.map_err(|e| e.to_string())))
    };
    let new2 = {
        let delivered = delivered.clone();
        rt.spawn_latest("other", |_| Ok("new-2"))
            .unwrap()
            .on_main(move |r, _| delivered.lock().unwrap().push(r.map_err(|e| e.to_string())))
    };
    assert!(old.is_cancelled(), "superseding cancels the old job");
    gate.open();
    pump_until(rt.handle(), || {
        [&old, &finished, &new1, &new2]
            .iter()
            .all(|j| j.is_finished())
            && rt.stats().queued.main == 0
    });
    let mut got = delivered.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![Ok("new-1"), Ok("new-2")]);
}

#[test]
fn a_group_cancels_all_and_reports_when_all_are_done() {
    let rt = runtime(2);
    let group = rt.group();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let ran = ran.clone();
        group
            .spawn(move |_| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    {
        let done = done.clone();
        group.on_done(move |_| {
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    pump_until(rt.handle(), || done.load(Ordering::SeqCst) == 1);
    assert!(group.is_done());
    assert_eq!(ran.load(Ordering::Relaxed), 100);

    // cancel_all: queued members never run.
    let g2 = rt.group();
    let gate = Gate::default();
    let blocker = gate.blocker(&rt, Priority::High);
    let blocker2 = gate.blocker(&rt, Priority::High);
    let ran2 = Arc::new(AtomicUsize::new(0));
    let members: Vec<_> = (0..50)
        .map(|_| {
            let ran2 = ran2.clone();
            g2.job_count_probe(&rt, ran2)
        })
        .collect();
    g2.cancel_all();
    gate.open();
    wait_for("members", || g2.is_done());
    assert_eq!(ran2.load(Ordering::Relaxed), 0);
    for m in members {
        assert!(matches!(m.try_result(), Some(Err(Error::Cancelled))));
    }
    wait_for("blockers", || {
        blocker.is_finished() && blocker2.is_finished()
    });
}

/// Spawns a member that counts its runs.
trait Probe {
    fn job_count_probe(&self, rt: &hostloop::Runtime, ran: Arc<AtomicUsize>) -> hostloop::Job<()>;
}

impl Probe for hostloop::JobGroup {
    fn job_count_probe(&self, rt: &hostloop::Runtime, ran: Arc<AtomicUsize>) -> hostloop::Job<()> {
        rt.job()
            .group(self)
            .priority(Priority::Low)
            .spawn(move |_| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap()
    }
}

#[test]
fn stats_count_what_happened() {
    let rt = runtime(2);
    let ok: Vec<_> = (0..10).map(|_| rt.spawn(|_| Ok(())).unwrap()).collect();
    let failed = rt
        .spawn(|_| -> hostloop::Result<()> { Err("nope".into()) })
        .unwrap();
    wait_for("jobs", || {
        ok.iter().all(|j| j.is_finished()) && failed.is_finished()
    });
    rt.post(|_| {}).unwrap();
    rt.pump(Duration::from_secs(10)).unwrap();
    let s = rt.stats();
    assert_eq!(s.jobs_spawned, 11);
    assert_eq!(s.jobs_finished, 10);
    assert_eq!(s.jobs_failed, 1);
    assert_eq!(s.pumps, 1);
    assert_eq!(s.main_items_run, 1);
    assert!(s.pump_p50 <= s.pump_p99);
    assert_eq!(s.workers.len(), 2);
    assert_eq!(s.io_threads.len(), 1);
    assert!(s.workers.iter().any(|w| !w.busy.is_zero()), "{s:?}");
}

#[test]
fn job_names_and_ids_are_visible() {
    let rt = runtime(1);
    let job = rt
        .job()
        .name("bake-cache")
        .spawn(|ctx| Ok((ctx.id(), ctx.name().map(str::to_owned))))
        .unwrap();
    wait_for("job", || job.is_finished());
    let (id, name) = job.try_result().unwrap().unwrap();
    assert_eq!(id, job.id());
    assert_eq!(name.as_deref(), Some("bake-cache"));
    assert_eq!(job.name(), Some("bake-cache"));
}

#[test]
fn a_job_cancelled_while_running_resolves_cancelled_whatever_it_returns() {
    let rt = runtime(1);
    let started = Arc::new(AtomicBool::new(false));
    let gate = Gate::default();
    let job = {
        let started = started.clone();
        let gate = gate.clone();
        rt.spawn(move |_| {
            started.store(true, Ordering::SeqCst);
            gate.wait(|| false);
            Ok("finished anyway")
        })
        .unwrap()
    };
    wait_for("job start", || started.load(Ordering::SeqCst));
    assert_eq!(job.status(), hostloop::JobStatus::Pending);
    job.cancel();
    gate.open();
    wait_for("job", || job.is_finished());
    assert_eq!(job.status(), hostloop::JobStatus::Cancelled);
    assert!(matches!(job.try_result(), Some(Err(Error::Cancelled))));
    assert_eq!(rt.stats().jobs_cancelled, 1);
}

#[test]
fn job_handles_do_not_keep_the_runtime_alive() {
    let rt = runtime(1);
    let h = rt.handle().clone();
    let weak_probe = Arc::new(());
    let job = {
        let probe = weak_probe.clone();
        h.spawn(|_| Ok(()))
            .unwrap()
            .on_main(move |_, _| drop(probe))
    };
    let group = rt.group();
    wait_for("job", || job.is_finished());
    // Its continuation is queued (or about to be) for a pump that never comes.
    wait_for("continuation queued", || rt.stats().queued.main == 1);
    assert_eq!(Arc::strong_count(&weak_probe), 2);
    drop(h);
    drop(rt);
    // The continuation never ran (no pump) and was released with the runtime.
    assert_eq!(Arc::strong_count(&weak_probe), 1);
    assert!(matches!(group.spawn(|_| Ok(())), Err(Error::ShutDown)));
    assert_eq!(job.status(), hostloop::JobStatus::Finished);
}
