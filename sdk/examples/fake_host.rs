//! A fake host application: a 60 Hz main loop that sleeps on the doorbell fd between frames,
//! pumps hostloop with a 2 ms budget, and prints pump statistics while 10,000 jobs run.
//!
//! Run it with `cargo run --release -p hostloop --example fake_host`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostloop::Runtime;

const JOBS: usize = 10_000;
const FRAME: Duration = Duration::from_micros(16_667);
const BUDGET: Duration = Duration::from_millis(2);

/// ~`micros` µs of arithmetic, standing in for a piece of simulation or cache decoding.
fn work(seed: u64, micros: u64) -> u64 {
    let start = Instant::now();
    let mut x = seed | 1;
    while start.elapsed() < Duration::from_micros(micros) {
        for _ in 0..256 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().thread_name("fakehost").build()?;
    println!(
        "fake host: {} workers, {JOBS} jobs, 60 Hz frames, {BUDGET:?} pump budget",
        rt.workers()
    );

    // The "scene": only ever touched on the main thread, by continuations.
    let applied = Arc::new(AtomicUsize::new(0));
    let mut checksum = 0u64;
    let results = Arc::new(std::sync::Mutex::new(Vec::with_capacity(JOBS)));
    for i in 0..JOBS {
        let applied = applied.clone();
        let results = results.clone();
        rt.job()
            .name("tile")
            .spawn(move |ctx| {
                ctx.check()?;
                Ok(work(i as u64, 200))
            })?
            .on_main(move |r, _main| {
                // A host API call would go here (set an attribute, update a mesh).
                if let Ok(v) = r {
                    results.lock().unwrap().push(v);
                }
                applied.fetch_add(1, Ordering::Relaxed);
            });
    }

    // The host's event loop: a poll() on the doorbell fd with the frame timer as timeout.
    let mut poll = mio::Poll::new()?;
    let fd = rt.doorbell_fd();
    poll.registry().register(
        &mut mio::unix::SourceFd(&fd),
        mio::Token(0),
        mio::Interest::READABLE,
    )?;
    let mut events = mio::Events::with_capacity(4);

    let start = Instant::now();
    let mut next_frame = start + FRAME;
    let mut next_print = start + Duration::from_secs(1);
    let (mut frames, mut wakes, mut worst_frame) = (0u64, 0u64, Duration::ZERO);
    let mut last_frame = start;
    let mut idle_after_done = None;
    loop {
        let timeout = next_frame.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(timeout))?;
        if !events.is_empty() {
            // Results arrived between frames: apply some now, within budget.
            wakes += 1;
            rt.pump(BUDGET)?;
        }
        let now = Instant::now();
        if now >= next_frame {
            // The frame: the host draws, then gives hostloop its slice.
            frames += 1;
            worst_frame = worst_frame.max(now - last_frame);
            last_frame = now;
            next_frame += FRAME;
            rt.pump(BUDGET)?;
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            let s = rt.stats();
            println!(
                "t={:>4.1}s frames={frames:<4} doorbell wakes={wakes:<5} applied={:<6} pumps={:<6} \
                 pump p50={:>8.1?} p99={:>8.1?} overruns={} worst frame={worst_frame:.1?}",
                start.elapsed().as_secs_f32(),
                applied.load(Ordering::Relaxed),
                s.pumps,
                s.pump_p50,
                s.pump_p99,
                s.budget_overruns,
            );
            worst_frame = Duration::ZERO;
        }
        if applied.load(Ordering::Relaxed) == JOBS {
            // Keep the loop running one more second, idle, to show the pool parks.
            let done_at = *idle_after_done.get_or_insert(now);
            if now - done_at >= Duration::from_secs(1) {
                break;
            }
        }
    }
    for v in results.lock().unwrap().iter() {
        checksum ^= v;
    }
    let s = rt.stats();
    println!(
        "done: {} jobs applied on the main thread in {:.2?} over {frames} frames; checksum {checksum:#x}",
        applied.load(Ordering::Relaxed),
        start.elapsed(),
    );
    println!(
        "pumps {} (p50 {:.1?}, p99 {:.1?}), budget overruns {}, doorbell rings {}, workers parked {}/{}",
        s.pumps,
        s.pump_p50,
        s.pump_p99,
        s.budget_overruns,
        s.doorbell_rings,
        s.sleeping_workers,
        rt.workers()
    );
    let report = rt.shutdown(Duration::from_secs(1));
    println!(
        "shutdown in {:.2?}: {} threads joined, {} stragglers",
        report.elapsed,
        report.threads_joined,
        report.stragglers.len()
    );
    Ok(())
}
