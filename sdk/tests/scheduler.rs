//! The pool: priorities, the IO lane, parking without lost wake-ups or idle CPU, shutdown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pump_until, runtime, wait_for, HANG};
use hostloop::{Error, Priority, Runtime};

/// Blocks the pool's only worker until released, so that a backlog can be queued behind it.
fn occupy_the_worker(rt: &Runtime) -> (Arc<AtomicBool>, hostloop::Job<()>) {
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let job = {
        let release = release.clone();
        let started = started.clone();
        rt.spawn(move |_| {
            started.store(true, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            Ok(())
        })
        .unwrap()
    };
    wait_for("blocker to start", || started.load(Ordering::SeqCst));
    (release, job)
}

#[test]
fn high_priority_overtakes_ten_thousand_queued_low_jobs() {
    let rt = runtime(1);
    let order = Arc::new(Mutex::new(Vec::with_capacity(10_003)));
    let (release, blocker) = occupy_the_worker(&rt);
    let push = |p: Priority, tag: &'static str| {
        let order = order.clone();
        rt.spawn_with(p, move |_| {
            order.lock().unwrap().push(tag);
            Ok(())
        })
        .unwrap()
    };
    let mut jobs: Vec<_> = (0..10_000).map(|_| push(Priority::Low, "low")).collect();
    jobs.push(push(Priority::Background, "background"));
    jobs.push(push(Priority::Normal, "normal"));
    jobs.push(push(Priority::High, "high"));
    release.store(true, Ordering::SeqCst);
    wait_for("all jobs", || {
        jobs.iter().all(|j| j.is_finished()) && blocker.is_finished()
    });
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 10_003);
    assert_eq!(order[0], "high");
    assert_eq!(order[1], "normal");
    assert_eq!(order[10_002], "background");
}

#[test]
fn no_lost_wake_up_across_100k_spawn_park_races() {
    let rt = runtime(2);
    let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
    for i in 0..100_000u32 {
        // Hit every phase of a worker's way to sleep: fully parked, still spinning, and the
        // window between announcing sleepiness and blocking (reached with a varying delay).
        match i % 3 {
            0 => wait_for("workers to park", || rt.stats().sleeping_workers == 2),
            1 => {}
            _ => {
                let jitter = Duration::from_nanos(u64::from(i.wrapping_mul(7919) % 50_000));
                let start = Instant::now();
                while start.elapsed() < jitter {
                    std::hint::spin_loop();
                }
            }
        }
        let tx = tx.clone();
        // Alternate submitters: the main thread (global injector) and a worker (its own deque).
        if i % 2 == 0 {
            rt.spawn(move |_| {
                tx.send(i).unwrap();
                Ok(())
            })
            .unwrap();
        } else {
            rt.spawn(move |ctx| {
                ctx.handle().spawn(move |_| {
                    tx.send(i).unwrap();
                    Ok(())
                })?;
                Ok(())
            })
            .unwrap();
        }
        // A lost wake-up leaves the job queued with every worker parked: this times out.
        assert_eq!(
            rx.recv_timeout(HANG).expect("lost wake-up: job never ran"),
            i
        );
    }
}

#[test]
fn io_lane_runs_while_every_cpu_worker_is_busy() {
    let rt = Runtime::builder()
        .workers(1)
        .io_threads(2)
        .thread_name("iolane")
        .build()
        .unwrap();
    let (release, blocker) = occupy_the_worker(&rt);
    let io = rt
        .spawn_io(|_| Ok(std::thread::current().name().map(str::to_owned)))
        .unwrap();
    wait_for("io job", || io.is_finished());
    let name = io.try_result().unwrap().unwrap().unwrap();
    assert!(name.starts_with("iolane-io-"), "{name}");
    release.store(true, Ordering::SeqCst);
    wait_for("blocker", || blocker.is_finished());
}

#[test]
fn workers_carry_the_configured_names_and_default_to_cores_minus_one() {
    let rt = Runtime::builder().thread_name("studio").build().unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(rt.workers(), (cores - 1).max(1));
    let job = rt
        .spawn(|_| Ok(std::thread::current().name().map(str::to_owned)))
        .unwrap();
    wait_for("job", || job.is_finished());
    let name = job.try_result().unwrap().unwrap().unwrap();
    assert!(name.starts_with("studio-worker-"), "{name}");
}

#[test]
fn stack_size_is_applied_to_runtime_threads() {
    // A job that needs a deep stack succeeds with a big stack size configured.
    let rt = Runtime::builder()
        .workers(1)
        .stack_size(64 << 20)
        .build()
        .unwrap();
    fn depth(n: u32) -> u32 {
        let pad = [n as u8; 1024];
        if n == 0 {
            0
        } else {
            std::hint::black_box(&pad);
            1 + depth(n - 1)
        }
    }
    // ~20 MiB of frames: more than the 2 MiB default, less than the 64 MiB we asked for.
    let job = rt.spawn(|_| Ok(depth(20_000))).unwrap();
    wait_for("deep job", || job.is_finished());
    assert_eq!(job.try_result().unwrap().unwrap(), 20_000);
}

/// CPU time (utime + stime, in clock ticks) of this process's threads whose name starts with
/// `prefix`, from /proc.
fn cpu_ticks_of_threads(prefix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        total += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    total
}

#[test]
fn an_idle_runtime_uses_almost_no_cpu() {
    let rt = Runtime::builder()
        .workers(2)
        .io_threads(1)
        .thread_name("idlecpu")
        .build()
        .unwrap();
    // Some work first, so the workers have gone through a busy → idle cycle.
    let jobs: Vec<_> = (0..1_000)
        .map(|i| rt.spawn(move |_| Ok(i)).unwrap())
        .collect();
    wait_for("jobs", || jobs.iter().all(|j| j.is_finished()));
    wait_for("workers to park", || rt.stats().sleeping_workers == 2);
    let before = cpu_ticks_of_threads("idlecpu");
    // The measurement window itself (not a wait for some thread to finish).
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks_of_threads("idlecpu") - before;
    // Clock ticks are 10 ms: a spinning worker would use ~100 ticks here.
    assert!(
        used <= 3,
        "idle runtime threads used {used} ticks of CPU in 1 s"
    );
    assert_eq!(rt.stats().sleeping_workers, 2);
}

static STUBBORN_MAY_EXIT: AtomicBool = AtomicBool::new(false);

#[test]
fn shutdown_returns_near_its_deadline_while_a_job_ignores_cancel() {
    let rt = runtime(1);
    let started = Arc::new(AtomicBool::new(false));
    {
        let started = started.clone();
        rt.job()
            .name("stubborn")
            .spawn(move |_| {
                started.store(true, Ordering::SeqCst);
                while !STUBBORN_MAY_EXIT.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                Ok(())
            })
            .unwrap();
    }
    wait_for("stubborn job to start", || started.load(Ordering::SeqCst));
    let deadline = Duration::from_millis(200);
    let start = Instant::now();
    let report = rt.shutdown(deadline);
    let took = start.elapsed();
    assert!(took >= deadline, "returned before the deadline: {took:?}");
    assert!(
        took < deadline * 10,
        "shutdown took {took:?} for a {deadline:?} deadline"
    );
    assert_eq!(report.stragglers.len(), 1, "{report:?}");
    assert_eq!(report.stragglers[0].name.as_deref(), Some("stubborn"));
    assert!(report.stragglers[0].age >= deadline);
    assert_eq!(report.cancelled_running, 1);
    // Shutdown is final.
    assert!(matches!(rt.spawn(|_| Ok(())), Err(Error::ShutDown)));
    assert!(matches!(rt.post(|_| {}), Err(Error::ShutDown)));
    assert!(matches!(
        rt.pump(Duration::from_millis(1)),
        Err(Error::ShutDown)
    ));
    // Calling it again returns the same report at once.
    assert_eq!(rt.shutdown(deadline), report);
    STUBBORN_MAY_EXIT.store(true, Ordering::SeqCst);
}

#[test]
fn shutdown_cancels_queued_jobs_without_running_them() {
    let rt = runtime(1);
    let (release, _blocker) = occupy_the_worker(&rt);
    let ran = Arc::new(AtomicUsize::new(0));
    let continuations = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<_> = (0..1_000)
        .map(|_| {
            let ran = ran.clone();
            let continuations = continuations.clone();
            rt.spawn(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap()
            .on_main(move |_, _| {
                continuations.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let io = rt.spawn_io(|_| Ok(())).unwrap();
    let h = rt.handle().clone();
    let releaser = std::thread::spawn(move || {
        // Let the blocker go only once shutdown has begun.
        wait_for("shutdown to begin", || h.is_shut_down());
        release.store(true, Ordering::SeqCst);
    });
    let report = rt.shutdown(HANG);
    releaser.join().unwrap();
    assert!(report.stragglers.is_empty(), "{report:?}");
    assert_eq!(report.threads_joined, 2);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    for j in &jobs {
        assert!(matches!(j.try_result(), Some(Err(Error::Cancelled))));
    }
    assert_eq!(continuations.load(Ordering::SeqCst), 0);
    assert!(io.is_finished());
    assert!(rt.stats().jobs_cancelled >= 1_000);
}

#[test]
fn dropping_the_runtime_shuts_it_down() {
    let rt = runtime(1);
    let h = rt.handle().clone();
    let job = rt.spawn(|ctx| {
        while !ctx.is_cancelled() {
            std::hint::spin_loop();
        }
        ctx.check()
    });
    drop(rt);
    assert!(h.is_shut_down());
    let job = job.unwrap();
    assert!(job.is_finished());
    assert!(matches!(h.spawn(|_| Ok(())), Err(Error::ShutDown)));
}

#[test]
fn a_job_spawned_from_a_job_uses_the_workers_deque_and_still_finishes() {
    let rt = runtime(2);
    let total = Arc::new(AtomicUsize::new(0));
    {
        let total = total.clone();
        rt.spawn(move |ctx| {
            let h = ctx.handle();
            for _ in 0..10_000 {
                let total = total.clone();
                h.spawn(move |_| {
                    total.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })?;
            }
            Ok(())
        })
        .unwrap();
    }
    pump_until(rt.handle(), || total.load(Ordering::Relaxed) == 10_000);
}

#[test]
fn shutdown_counts_every_queued_job_that_never_ran() {
    let rt = hostloop::Runtime::builder().workers(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let n = 200_000;
    for _ in 0..n {
        let ran = ran.clone();
        drop(rt.spawn(move |_| {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
    }
    let report = rt.shutdown(Duration::from_secs(20));
    assert!(report.stragglers.is_empty());
    // Whether the sweep or a worker took a queued job at shutdown, it is counted.
    assert_eq!(
        ran.load(Ordering::Relaxed) + report.cancelled_queued,
        n,
        "{report:?}"
    );
}

#[test]
fn a_bogus_worker_count_is_refused_with_the_cap_in_the_message() {
    // A negative "all but N threads" host setting cast to unsigned, and two merely huge ones.
    for n in [u32::MAX as usize, 200_000, 5_000, hostloop::MAX_WORKERS + 1] {
        let err = Runtime::builder()
            .workers(n)
            .build()
            .expect_err("an absurd worker count must not start a runtime");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{n}: {err}");
        assert!(err.to_string().contains("1024"), "{n}: {err}");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert!(
            matches!(inner, Some(Error::InvalidArgument(_))),
            "{n}: {inner:?}"
        );
    }
    let err = Runtime::builder()
        .workers(1)
        .io_threads(u32::MAX as usize)
        .build()
        .expect_err("an absurd IO thread count must not start a runtime");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn the_largest_worker_count_allowed_starts_runs_work_and_shuts_down() {
    let workers = hostloop::MAX_WORKERS;
    let rt = Runtime::builder()
        .workers(workers)
        .io_threads(1)
        .build()
        .expect("MAX_WORKERS workers start");
    assert_eq!(rt.workers(), workers);
    // Work spawned from inside a job lands on one worker's deque: the others must still find
    // it without each of them scanning all 1024 deques on every search.
    let total = Arc::new(AtomicUsize::new(0));
    {
        let total = total.clone();
        rt.spawn(move |ctx| {
            let h = ctx.handle();
            for _ in 0..2_000 {
                let total = total.clone();
                h.spawn(move |_| {
                    total.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })?;
            }
            Ok(())
        })
        .unwrap();
    }
    pump_until(rt.handle(), || total.load(Ordering::Relaxed) == 2_000);
    let report = rt.shutdown(HANG);
    assert!(report.stragglers.is_empty(), "{report:?}");
    assert_eq!(report.threads_joined, workers + 1, "{report:?}");
}
