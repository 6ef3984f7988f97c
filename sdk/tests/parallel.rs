//! `parallel_for`: coverage, inline small work, mutable chunks, panics, nesting.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{runtime, wait_for};
use hostloop::Error;

#[test]
fn parallel_for_covers_every_index_exactly_once_for_odd_sizes_and_grains() {
    let rt = runtime(2);
    for &len in &[0usize, 1, 2, 3, 7, 64, 1000, 4097, 100_003] {
        for &grain in &[0usize, 1, 3, 7, 64, 1000, 1 << 20] {
            let hits: Vec<AtomicU8> = (0..len).map(|_| AtomicU8::new(0)).collect();
            let offset = 5;
            rt.parallel_for(offset..offset + len, grain, |r| {
                assert!(r.start < r.end, "empty chunk");
                if grain > 0 {
                    assert!(r.len() <= grain);
                }
                for i in r {
                    hits[i - offset].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "len {len} grain {grain}"
            );
        }
    }
}

#[test]
fn work_no_larger_than_one_chunk_runs_inline_on_the_caller() {
    let rt = runtime(2);
    let me = std::thread::current().id();
    let calls = AtomicUsize::new(0);
    rt.parallel_for(0..100, 100, |r| {
        assert_eq!(std::thread::current().id(), me);
        assert_eq!(r, 0..100);
        calls.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(rt.stats().jobs_spawned, 0);
}

#[test]
fn parallel_for_mut_hands_out_disjoint_chunks_with_their_offsets() {
    let rt = runtime(2);
    let mut data = vec![0u64; 100_001];
    rt.parallel_for_mut(&mut data, 997, |offset, chunk| {
        for (k, x) in chunk.iter_mut().enumerate() {
            *x += (offset + k) as u64;
        }
    });
    assert!(data.iter().enumerate().all(|(i, &x)| x == i as u64));
}

#[test]
fn the_pool_does_take_part() {
    let rt = runtime(2);
    let threads = Mutex::new(std::collections::HashSet::new());
    let job = rt
        .spawn(move |ctx| {
            // Long enough chunks that helpers get a share before the caller takes them all.
            let h = ctx.handle();
            let seen = &threads;
            h.parallel_for(0..64, 1, |_| {
                seen.lock().unwrap().insert(std::thread::current().id());
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
            });
            Ok(threads.into_inner().unwrap().len())
        })
        .unwrap();
    wait_for("job", || job.is_finished());
    // The calling worker plus the other worker (the main thread does not help here).
    assert_eq!(job.try_result().unwrap().unwrap(), 2);
}

#[test]
fn a_panicking_chunk_becomes_the_jobs_error_and_the_pool_lives_on() {
    let rt = runtime(2);
    let job = rt
        .spawn(|ctx| {
            ctx.handle().parallel_for(0..10_000, 10, |r| {
                if r.contains(&5_000) {
                    panic!("chunk boom");
                }
            });
            Ok(())
        })
        .unwrap();
    wait_for("job", || job.is_finished());
    match job.try_result() {
        Some(Err(Error::Panicked(msg))) => assert!(msg.contains("chunk boom"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let sum = AtomicUsize::new(0);
    rt.parallel_for(0..1000, 10, |r| {
        sum.fetch_add(r.len(), Ordering::Relaxed);
    });
    assert_eq!(sum.load(Ordering::Relaxed), 1000);
}

#[test]
fn nested_parallel_for_completes() {
    let rt = runtime(2);
    let total = AtomicUsize::new(0);
    rt.parallel_for(0..16, 1, |_| {
        rt.parallel_for(0..1000, 10, |r| {
            total.fetch_add(r.len(), Ordering::Relaxed);
        });
    });
    assert_eq!(total.load(Ordering::Relaxed), 16_000);
}

#[test]
fn many_calls_in_a_row_never_hang() {
    let rt = runtime(2);
    let h = rt.handle().clone();
    let job = rt
        .spawn(move |_| {
            let mut n = 0usize;
            for _ in 0..20_000 {
                let c = AtomicUsize::new(0);
                h.parallel_for(0..8, 1, |r| {
                    c.fetch_add(r.len(), Ordering::Relaxed);
                });
                n += c.load(Ordering::Relaxed);
            }
            Ok(n)
        })
        .unwrap();
    wait_for("job", || job.is_finished());
    assert_eq!(job.try_result().unwrap().unwrap(), 160_000);
}

#[test]
fn a_cheap_loop_of_many_chunks_runs_inline_on_the_caller() {
    let rt = runtime(2);
    let workers = rt.stats().workers.len();
    let parked = || {
        wait_for("every worker to park", || {
            rt.stats().sleeping_workers == workers
        });
        rt.stats()
            .workers
            .iter()
            .map(|w| w.busy)
            .sum::<std::time::Duration>()
    };
    // The choice is made by timing the first chunk, so one attempt can be slowed past the
    // threshold by a preemption or a page fault on a loaded machine. The property is that the
    // inline path exists and is taken for cheap work: in at least one of many attempts no
    // worker wakes (its busy time does not move). A pool that always wakes its helpers fails
    // every attempt.
    let mut inline_runs = 0;
    for _ in 0..100 {
        let before = parked();
        let count = AtomicUsize::new(0);
        // 100 chunks of trivial work: far less than a wake-up costs.
        rt.parallel_for(0..1000, 10, |r| {
            count.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 1000);
        if parked() == before {
            inline_runs += 1;
        }
    }
    assert!(
        inline_runs > 0,
        "a cheap loop woke the pool in all 100 attempts"
    );
}
