//! Benchmark 2: spawning tiny jobs from the main thread, and running them.
//!
//! The main thread spawns `jobs` jobs that each increment a counter, then polls the counter
//! until all have run (no blocking wait). Timed from the first spawn to the last job's
//! increment. hostloop's `Job` handles are dropped at once (the job is detached).
//!
//! `std::thread::scope` spawns one OS thread per job, so it runs at most `THREAD_JOBS` jobs per
//! measurement (its rate is still jobs per second).
//!
//! Allocations per job are counted in a separate, untimed run of the same code each round, so
//! counting never slows a timed run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use hostloop::Runtime;
use rayon::ThreadPool;

use crate::alloc;
use crate::report::{Row, Samples, Target, Unit};

/// Jobs run in the current measurement.
static DONE: AtomicUsize = AtomicUsize::new(0);

/// Most jobs a `std::thread::scope` measurement runs (one OS thread each).
const THREAD_JOBS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    Hostloop,
    Rayon,
    Threads,
}

impl Contender {
    pub const ALL: [Contender; 3] = [Contender::Hostloop, Contender::Rayon, Contender::Threads];

    /// Jobs one measurement runs.
    fn jobs(self, jobs: usize) -> usize {
        match self {
            Contender::Threads => jobs.min(THREAD_JOBS),
            _ => jobs,
        }
    }

    /// Spawns `jobs` jobs and waits until they all ran.
    fn run(self, rt: &Runtime, pool: &ThreadPool, jobs: usize) -> hostloop::Result<()> {
        let jobs = self.jobs(jobs);
        DONE.store(0, Ordering::Relaxed);
        let done: &'static AtomicUsize = &DONE;
        match self {
            Contender::Hostloop => {
                for _ in 0..jobs {
                    let job = rt.spawn(move |_ctx| {
                        done.fetch_add(1, Ordering::Release);
                        Ok(())
                    })?;
                    // Detach: the job runs on without its handle.
                    drop(job);
                }
            }
            Contender::Rayon => {
                for _ in 0..jobs {
                    pool.spawn(move || {
                        done.fetch_add(1, Ordering::Release);
                    });
                }
            }
            Contender::Threads => thread::scope(|s| {
                for _ in 0..jobs {
                    s.spawn(move || {
                        done.fetch_add(1, Ordering::Release);
                    });
                }
            }),
        }
        while done.load(Ordering::Acquire) < jobs {
            thread::yield_now();
        }
        Ok(())
    }

    /// Jobs per second of one timed run.
    pub fn throughput(self, rt: &Runtime, pool: &ThreadPool, jobs: usize) -> hostloop::Result<f64> {
        let start = Instant::now();
        self.run(rt, pool, jobs)?;
        Ok(self.jobs(jobs) as f64 / start.elapsed().as_secs_f64())
    }

    /// Heap allocations per job, all threads included, of one untimed run.
    fn allocations_per_job(
        self,
        rt: &Runtime,
        pool: &ThreadPool,
        jobs: usize,
    ) -> hostloop::Result<f64> {
        let (result, allocations) = alloc::count(|| self.run(rt, pool, jobs));
        result.map(|()| allocations as f64 / self.jobs(jobs) as f64)
    }
}

/// The spawn benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    jobs: usize,
    /// Jobs/s, indexed like `Contender::ALL`.
    rates: [Samples; 3],
    /// Allocations per job, indexed like `Contender::ALL`.
    allocations: [Samples; 3],
}

impl Bench {
    pub fn new(jobs: usize) -> Self {
        Bench {
            jobs,
            rates: Default::default(),
            allocations: Default::default(),
        }
    }

    /// Times hostloop, rayon and std threads once each, then counts their allocations once each, in
    /// alternating order.
    pub fn round(
        &mut self,
        rt: &Runtime,
        pool: &ThreadPool,
        reversed: bool,
    ) -> hostloop::Result<()> {
        let mut order = [0, 1, 2];
        if reversed {
            order.reverse();
        }
        for c in order {
            let rate = Contender::ALL[c].throughput(rt, pool, self.jobs)?;
            self.rates[c].push(rate);
        }
        for c in order {
            let allocations = Contender::ALL[c].allocations_per_job(rt, pool, self.jobs)?;
            self.allocations[c].push(allocations);
        }
        Ok(())
    }

    pub fn rows(&self) -> Vec<Row> {
        vec![
            Row::versus(
                "spawn+run tiny jobs vs rayon::spawn",
                Unit::Rate,
                &self.rates[0],
                &self.rates[1],
                Target::RatioAtLeast(1.0),
            ),
            // Context, not a goal: a pool against one OS thread per job cannot lose.
            Row::versus(
                format!("spawn+run tiny jobs vs std::thread::scope ({THREAD_JOBS} threads)"),
                Unit::Rate,
                &self.rates[0],
                &self.rates[2],
                Target::None,
            ),
            Row::versus(
                "allocations per job vs rayon::spawn",
                Unit::Count(3),
                &self.allocations[0],
                &self.allocations[1],
                Target::AtMost(1.0),
            ),
            Row::versus(
                "allocations per job vs std::thread::scope",
                Unit::Count(3),
                &self.allocations[0],
                &self.allocations[2],
                Target::None,
            ),
        ]
    }
}
