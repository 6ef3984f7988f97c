//! Benchmark 10: oversubscription. The 1-producer drain (benchmark 1) and the tiny-job spawn
//! (benchmark 4) again, in two placements that resemble a DCC host on a small machine:
//!
//! * **pinned**: every thread of the process restricted to one CPU (`sched_setaffinity` on each
//!   thread), so producer and consumer, spawner and worker, share it;
//! * **busy host**: all CPUs, but one extra thread spins for the whole measurement, as a busy
//!   host main thread would, so there are more runnable threads than CPUs.
//!
//! Spin-waiting designs collapse here (crossbeam #821 reports 20×). The drain rows hold hostloop
//! to the same targets as benchmark 1, in each placement: at least 1.0× the fair peer (crossbeam
//! + coalesced eventfd) and the `Mutex<VecDeque>` swap, at least 0.9× bare crossbeam.

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

/// Drain contenders measured, hostloop first.
const DRAIN: [drain::Contender; 4] = [
    drain::Contender::Hostloop,
    drain::Contender::Coalesced,
    drain::Contender::Crossbeam,
    drain::Contender::Mutex,
];

/// The oversubscription benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    items: usize,
    jobs: usize,
    /// `drain[placement][k]`: items/s of `DRAIN[k]`, one producer.
    drain: [[Samples; DRAIN.len()]; 2],
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
        let mut order: [usize; DRAIN.len()] = std::array::from_fn(|k| k);
        if reversed {
            order.reverse();
        }
        for k in order {
            self.drain[p][k].push(DRAIN[k].run(rt, self.items, 1));
        }
        for k in if reversed { [1, 0] } else { [0, 1] } {
            let contender = spawn::Contender::ALL[k];
            self.spawn[p][k].push(contender.throughput(rt, pool, self.jobs)?);
        }
        Ok(())
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (p, placement) in Placement::ALL.into_iter().enumerate() {
            let name = placement.name();
            let drain = &self.drain[p];
            for (k, peer) in DRAIN.into_iter().enumerate().skip(1) {
                rows.push(Row::versus(
                    format!("drain 1P, {name} vs {}", peer.name()),
                    Unit::Rate,
                    &drain[0],
                    &drain[k],
                    peer.target(),
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
