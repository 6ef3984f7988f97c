//! Benchmark 3: doorbell rings per burst.
//!
//! With the host not pumping, a job posts `burst` items to the main thread. The doorbell should
//! ring once for the whole burst (one empty → non-empty transition), not once per item.

use std::thread;
use std::time::Duration;

use hostloop::Runtime;

use crate::report::{Row, Samples, Target, Unit};

/// Pumps until the main queue is empty; returns how many items ran.
pub fn pump_until_idle(rt: &Runtime) -> hostloop::Result<usize> {
    let mut ran = 0;
    loop {
        let report = rt.pump(Duration::from_millis(50))?;
        ran += report.ran;
        if report.remaining == 0 {
            return Ok(ran);
        }
    }
}

/// Waits (off the blocking path: the main thread may not block on a job) until `job` has
/// finished, and returns its result.
pub fn await_job<T: Send + 'static>(
    job: &hostloop::Job<T>,
    timeout: Duration,
) -> hostloop::Result<T> {
    let give_up = std::time::Instant::now() + timeout;
    while !job.is_finished() {
        if std::time::Instant::now() > give_up {
            return Err(hostloop::Error::Timeout);
        }
        thread::sleep(Duration::from_micros(50));
    }
    job.try_result()
        .unwrap_or(Err(hostloop::Error::ResultTaken))
}

/// Rings of one burst of `burst` posts.
fn rings_per_burst(rt: &Runtime, burst: usize) -> hostloop::Result<u64> {
    // An idle host: nothing queued, and the last ring acknowledged.
    pump_until_idle(rt)?;
    let before = rt.stats().doorbell_rings;
    let job = rt.spawn(move |ctx| {
        let handle = ctx.handle();
        for _ in 0..burst {
            handle.post(|_main| {})?;
        }
        Ok(())
    })?;
    while !job.is_finished() {
        thread::yield_now();
    }
    let rings = rt.stats().doorbell_rings - before;
    job.try_result()
        .unwrap_or(Err(hostloop::Error::ResultTaken))?;
    let ran = pump_until_idle(rt)?;
    assert_eq!(ran, burst, "every posted item runs at the next pumps");
    Ok(rings)
}

/// The doorbell benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    burst: usize,
    rings: Samples,
}

impl Bench {
    pub fn new(burst: usize) -> Self {
        Bench {
            burst,
            rings: Samples::default(),
        }
    }

    /// Measures one burst.
    pub fn round(&mut self, rt: &Runtime) -> hostloop::Result<()> {
        let rings = rings_per_burst(rt, self.burst)?;
        self.rings.push(rings as f64);
        Ok(())
    }

    pub fn rows(&self) -> Vec<Row> {
        vec![Row::alone(
            format!("doorbell rings per {}-post burst", self.burst),
            Unit::Count(0),
            &self.rings,
            Target::Exactly(1.0),
        )]
    }
}
