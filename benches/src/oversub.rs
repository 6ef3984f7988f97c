//! Benchmark 10: oversubscription. The 1-producer drain (benchmark 1) and the tiny-job spawn
//! (benchmark 4) again, in two placements that resemble a DCC host on a small machine:
//!
//! * **pinned**: every thread of the process restricted to one CPU (`sched_setaffinity` on each
//!   thread), so producer and consumer, spawner and worker, share it;
//! * **busy host**: all CPUs, but one extra thread spins for the whole measurement, as a busy
//!   host main thread would, so there are more runnable threads than CPUs.
//!
//! Spin-waiting designs collapse here (crossbeam #821 reports 20×); the target is that hostloop
//! keeps at least half of its normal drain rate (the normal rate is benchmark 1's, same round).

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use hostloop::Runtime;
use rayon::ThreadPool;

use crate::report::{Row, Samples, Target, Unit};
use crate::{drain, spawn, sys};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Pinned,
    BusyHost,
}

impl Placement {
    const ALL: [Placement; 2] = [Placement::Pinned, Placement::BusyHost];

    fn name(self) -> &'static str {
        match self {
            Placement::Pinned => "pinned to 1 CPU",
            Placement::BusyHost => "busy host thread",
        }
    }
}

/// Drain contenders measured (indices into `drain::Contender::ALL`): hostloop, crossbeam, mutex.
const DRAIN: [usize; 3] = [0, 1, 2];

/// The oversubscription benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    items: usize,
    jobs: usize,
    /// `drain[placement][k]`: items/s of `drain::Contender::ALL[DRAIN[k]]`, one producer.
    drain: [[Samples; 3]; 2],
    /// `spawn[placement][k]`: jobs/s of hostloop and rayon.
    spawn: [[Samples; 2]; 2],
}

impl Bench {
    pub fn new(items: usize, jobs: usize) -> Self {
        Bench {
            items,
            jobs,
            drain: Default::default(),
            spawn: Default::default(),
        }
    }

    pub fn round(
        &mut self,
        rt: &Runtime,
        pool: &ThreadPool,
        reversed: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        for (p, placement) in Placement::ALL.into_iter().enumerate() {
            let stop = AtomicBool::new(false);
            thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
                match placement {
                    Placement::Pinned => sys::pin_process(true)?,
                    Placement::BusyHost => {
                        let stop = &stop;
                        s.spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                spin_loop();
                            }
                        });
                    }
                }
                let result = self.measure(p, rt, pool, reversed);
                stop.store(true, Ordering::Relaxed);
                if placement == Placement::Pinned {
                    sys::pin_process(false)?;
                }
                result
            })?;
        }
        Ok(())
    }

    fn measure(
        &mut self,
        p: usize,
        rt: &Runtime,
        pool: &ThreadPool,
        reversed: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut order = [0, 1, 2];
        if reversed {
            order.reverse();
        }
        for k in order {
            let contender = drain::Contender::ALL[DRAIN[k]];
            self.drain[p][k].push(contender.run(rt, self.items, 1));
        }
        for k in if reversed { [1, 0] } else { [0, 1] } {
            let contender = spawn::Contender::ALL[k];
            self.spawn[p][k].push(contender.throughput(rt, pool, self.jobs)?);
        }
        Ok(())
    }

    /// Rows; `normal` is hostloop's 1-producer drain rate of benchmark 1, per round.
    pub fn rows(&self, normal: &Samples) -> Vec<Row> {
        let mut rows = Vec::new();
        for (p, placement) in Placement::ALL.into_iter().enumerate() {
            let name = placement.name();
            let drain = &self.drain[p];
            rows.push(Row::versus(
                format!("drain 1P, {name}: hostloop vs itself unconstrained"),
                Unit::Rate,
                &drain[0],
                normal,
                Target::RatioAtLeast(0.5),
            ));
            for k in 1..DRAIN.len() {
                rows.push(Row::versus(
                    format!(
                        "drain 1P, {name} vs {}",
                        drain::Contender::ALL[DRAIN[k]].name()
                    ),
                    Unit::Rate,
                    &drain[0],
                    &drain[k],
                    Target::None,
                ));
            }
            rows.push(Row::versus(
                format!("spawn+run tiny jobs, {name} vs rayon::spawn"),
                Unit::Rate,
                &self.spawn[p][0],
                &self.spawn[p][1],
                Target::None,
            ));
        }
        rows
    }
}
