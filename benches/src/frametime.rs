//! Benchmark 7: what hostloop does to the host's frame time.
//!
//! A host loop on the main thread runs at a fixed period (60 Hz; shorter in `--quick`): each
//! frame it does its own work (a spin of about a third of the period, standing in for drawing),
//! then sleeps until the next frame. With hostloop, a 1M-particle simulation plays as fast as it
//! can on the pool (saturating the workers, and the driver thread that takes part in each step)
//! and the loop sleeps in `ppoll` on the doorbell instead, pumping with a 2 ms budget whenever it
//! rings and once per frame. Without, the same loop runs with the simulation paused (the pool
//! idle) and never pumps. Blocks of frames alternate between the two.
//!
//! The frame time is the interval between the starts of consecutive frames; the table compares
//! its p99 (and the p99 of the busy part: own work + pumps).
//!
//! A third, diagnostic block plays the simulation with every thread but the main one at nice
//! 19, to show how much of the difference is the main thread losing its CPU to the simulation's
//! threads (it runs only where priorities can be restored afterwards: as root or with
//! `RLIMIT_NICE`).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hostloop::{Runtime, SimControl, SimOptions};
use hostloop_particles::{Kernel, Particles};

use crate::report::{Distribution, Row, Target, Unit};
use crate::sys;

/// The pump budget of the host loop.
const BUDGET: Duration = Duration::from_millis(2);

/// Spins for `d`, doing arithmetic the compiler cannot drop.
fn host_work(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..256 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    black_box(x);
}

/// The benchmark's configuration, simulation and samples.
pub struct Bench {
    period: Duration,
    frames_per_block: usize,
    particles: usize,
    sim: Option<SimControl>,
    /// Frames the simulation delivered to the main thread.
    delivered: Arc<AtomicU64>,
    /// `[with hostloop, without, with and the other threads at nice 19]`: frame intervals and
    /// busy times, seconds.
    pub interval: [Distribution; 3],
    pub busy: [Distribution; 3],
    /// Wall time of the end-of-frame pump call (with hostloop).
    pump: [Distribution; 3],
    /// Whether the nice-19 block runs.
    niced: bool,
    steps: u64,
    sim_time: Duration,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("frametime::Bench").finish_non_exhaustive()
    }
}

impl Bench {
    pub fn new(period: Duration, frames_per_block: usize, particles: usize) -> Self {
        Bench {
            period,
            frames_per_block,
            particles,
            sim: None,
            delivered: Arc::default(),
            interval: Default::default(),
            busy: Default::default(),
            pump: Default::default(),
            niced: sys::can_restore_priority(),
            steps: 0,
            sim_time: Duration::ZERO,
        }
    }

    fn sim(&mut self, rt: &Runtime) -> hostloop::Result<&SimControl> {
        if self.sim.is_none() {
            let delivered = self.delivered.clone();
            let sim = rt.simulate(
                Particles::new(self.particles, Kernel::Rust),
                SimOptions {
                    name: "bench-frametime".to_owned(),
                    ..SimOptions::default()
                },
                move |positions, _info, _main| {
                    black_box(positions.first());
                    delivered.fetch_add(1, Ordering::Relaxed);
                },
            )?;
            self.sim = Some(sim);
        }
        Ok(self.sim.as_ref().expect("just set"))
    }

    /// One block of frames with the simulation playing, one without (and the diagnostic nice-19
    /// block), in alternating order.
    pub fn round(&mut self, rt: &Runtime, reversed: bool) -> hostloop::Result<()> {
        let mut order = vec![0, 1];
        if self.niced {
            order.push(2);
        }
        if reversed {
            order.reverse();
        }
        for k in order {
            let with = k != 1;
            let sim = self.sim(rt)?.clone();
            let step_before = sim.step();
            let start = Instant::now();
            if k == 2 {
                sys::nice_other_threads(19).map_err(hostloop::Error::from)?;
            }
            if with {
                sim.play();
            }
            let result = self.block(rt, k);
            if k == 2 {
                sys::nice_other_threads(0).map_err(hostloop::Error::from)?;
            }
            result?;
            if with {
                sim.pause();
                if k == 0 {
                    self.steps += sim.step() - step_before;
                    self.sim_time += start.elapsed();
                }
                // Let the driver stop and its last frame reach the main thread before the quiet
                // block.
                let give_up = Instant::now() + Duration::from_secs(10);
                while sim.is_playing() && Instant::now() < give_up {
                    thread::sleep(Duration::from_millis(1));
                }
                crate::doorbell::pump_until_idle(rt)?;
            }
        }
        Ok(())
    }

    /// One block of frames in mode `k` (see `interval`).
    fn block(&mut self, rt: &Runtime, k: usize) -> hostloop::Result<()> {
        let with = k != 1;
        let work = self.period / 3;
        let fd = rt.doorbell_fd();
        let mut next = Instant::now();
        let mut last_start: Option<Instant> = None;
        for _ in 0..=self.frames_per_block {
            // Wait for the frame's start.
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                if with {
                    if sys::wait_readable(fd, Some(next - now)).map_err(hostloop::Error::from)? {
                        rt.pump(BUDGET)?;
                    }
                } else {
                    thread::sleep(next - now);
                }
            }
            let frame_start = Instant::now();
            if let Some(last) = last_start {
                self.interval[k].push((frame_start - last).as_secs_f64());
            }
            last_start = Some(frame_start);
            host_work(work);
            if with {
                let t = Instant::now();
                rt.pump(BUDGET)?;
                self.pump[k].push(t.elapsed().as_secs_f64());
            }
            let busy = frame_start.elapsed();
            self.busy[k].push(busy.as_secs_f64());
            // The next frame starts a period after this one, or now if this one overran.
            next = (next + self.period).max(Instant::now());
        }
        Ok(())
    }

    pub fn rows(&mut self) -> Vec<Row> {
        let ms = self.period.as_secs_f64() * 1e3;
        let [with, without, niced] = &mut self.interval;
        let [busy_with, busy_without, busy_niced] = &mut self.busy;
        let busy_niced_p99 = busy_niced.quantile(0.99);
        let busy_without_p99 = busy_without.quantile(0.99);
        let niced_p99 = niced.quantile(0.99);
        let without_p99 = without.quantile(0.99);
        let mut rows = vec![
            Row::pair(
                format!("host frame time p99 ({ms:.1} ms frames, sim playing) vs no hostloop"),
                Unit::Time,
                with.quantile(0.99),
                without.quantile(0.99),
                Target::RatioAtMost(1.05),
            )
            .with_limit(self.period.as_secs_f64()),
            Row::pair(
                "host busy time per frame p99 (own work + pumps) vs no hostloop",
                Unit::Time,
                busy_with.quantile(0.99),
                busy_without_p99,
                Target::None,
            ),
        ];
        if self.niced {
            rows.push(Row::pair(
                "  diagnostic: frame time p99, sim threads at nice 19, vs no hostloop",
                Unit::Time,
                niced_p99,
                without_p99,
                Target::None,
            ));
            rows.push(Row::pair(
                "  diagnostic: busy time p99, sim threads at nice 19, vs no hostloop",
                Unit::Time,
                busy_niced_p99,
                busy_without_p99,
                Target::None,
            ));
        }
        rows
    }

    pub fn notes(&mut self) -> Vec<String> {
        let rate = self.steps as f64 / self.sim_time.as_secs_f64().max(1e-9);
        vec![format!(
            "frame time: {} + {} (+ {} nice 19) frames; the {}-particle simulation stepped {:.0} times/s while \
             playing and delivered {} frames to the main thread; frame p50 {:.2} ms with, {:.2} ms \
             without; the end-of-frame pump call took p50 {:.3} ms, p99 {:.3} ms of wall time \
             (including any preemption)",
            self.interval[0].len(),
            self.interval[1].len(),
            self.interval[2].len(),
            self.particles,
            rate,
            self.delivered.load(Ordering::Relaxed),
            self.interval[0].quantile(0.5) * 1e3,
            self.interval[1].quantile(0.5) * 1e3,
            self.pump[0].quantile(0.5) * 1e3,
            self.pump[0].quantile(0.99) * 1e3,
        )]
    }

    /// Stops the simulation and waits until its driver has exited (and freed its state).
    pub fn finish(&mut self) {
        if let Some(sim) = self.sim.take() {
            sim.stop();
            let give_up = Instant::now() + Duration::from_secs(10);
            while !sim.is_stopped() && Instant::now() < give_up {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
