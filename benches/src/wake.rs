//! Benchmarks 2b and 3: how fast a sleeping host loop hears about main-thread work.
//!
//! **Wake latency.** The host sleeps in `ppoll` on the doorbell fd; a hostloop worker stamps
//! the time and posts one item; the latency is stamp → `ppoll` returns on the main thread.
//! The limit is the same with a raw eventfd that a plain thread writes, measured in the same
//! rounds. Posts are spaced 200–600 µs apart (jittered) so the host is asleep at each one.
//!
//! **Marshal latency.** A simulated host loop ticks every 1, 10 or 50 ms. A worker posts items
//! at random moments (0.3–1.1 ticks apart); the latency is post → the item runs at a pump. With
//! the fd the host also pumps when the doorbell rings between ticks; with timer polling only
//! (what Houdini and Blender add-ons do) it pumps at its ticks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hostloop::Runtime;

use crate::doorbell::pump_until_idle;
use crate::report::{Distribution, Row, Target, Unit};
use crate::sys::{self, EventFd};

/// A small deterministic generator for jitter.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi - lo).mul_f64(self.next())
    }
}

fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Longest a sample may take before the benchmark gives up (only on a broken doorbell).
const STUCK: Duration = Duration::from_secs(5);

fn gap(j: &mut Jitter) -> Duration {
    j.between(Duration::from_micros(200), Duration::from_micros(600))
}

/// `samples` wake-ups of the main thread through hostloop's doorbell.
fn hostloop_wake(
    rt: &Runtime,
    samples: usize,
    seed: u64,
    out: &mut Distribution,
) -> hostloop::Result<()> {
    pump_until_idle(rt)?;
    let base = Instant::now();
    // `seq` counts posts, so a ring by anything else (a simulation's late frame) is not taken
    // for one of ours.
    let stamp = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let job = {
        let (stamp, seq) = (stamp.clone(), seq.clone());
        rt.spawn(move |ctx| {
            let handle = ctx.handle();
            let mut jitter = Jitter::new(seed);
            for i in 0..samples as u64 {
                thread::sleep(gap(&mut jitter));
                if ctx.is_cancelled() {
                    break;
                }
                stamp.store(nanos_since(base), Ordering::Relaxed);
                seq.store(i + 1, Ordering::Release);
                handle.post(|_main| {})?;
            }
            Ok(())
        })?
    };
    let fd = rt.doorbell_fd();
    let mut seen = 0;
    while seen < samples as u64 {
        if !sys::wait_readable(fd, Some(STUCK)).map_err(hostloop::Error::from)? {
            job.cancel();
            return Err(hostloop::Error::Timeout);
        }
        let woke = nanos_since(base);
        let now_seq = seq.load(Ordering::Acquire);
        if now_seq != seen {
            let posted = stamp.load(Ordering::Relaxed);
            out.push(woke.saturating_sub(posted) as f64 * 1e-9);
        }
        rt.pump(Duration::from_millis(2))?;
        // A post that came after the `seq` read was just acknowledged by that pump: skip its
        // sample (the main thread was awake, so it is no wake-up).
        seen = seq.load(Ordering::Acquire);
    }
    crate::doorbell::await_job(&job, STUCK)
}

/// `samples` wake-ups of the main thread through a raw eventfd written by a plain thread.
fn eventfd_wake(samples: usize, seed: u64, out: &mut Distribution) -> std::io::Result<()> {
    let efd = EventFd::new()?;
    let base = Instant::now();
    // As in `hostloop_wake`: two rings read by one `clear` (the main thread was preempted) give
    // one sample, the later one.
    let stamp = AtomicU64::new(0);
    let seq = AtomicU64::new(0);
    thread::scope(|s| {
        let (efd, stamp, seq) = (&efd, &stamp, &seq);
        s.spawn(move || {
            let mut jitter = Jitter::new(seed);
            for i in 0..samples as u64 {
                thread::sleep(gap(&mut jitter));
                stamp.store(nanos_since(base), Ordering::Relaxed);
                seq.store(i + 1, Ordering::Release);
                efd.ring();
            }
        });
        let mut seen = 0;
        while seen < samples as u64 {
            if !sys::wait_readable(efd.fd(), Some(STUCK))? {
                return Err(std::io::Error::other("eventfd never became readable"));
            }
            let woke = nanos_since(base);
            let now_seq = seq.load(Ordering::Acquire);
            if now_seq != seen {
                let posted = stamp.load(Ordering::Relaxed);
                out.push(woke.saturating_sub(posted) as f64 * 1e-9);
            }
            efd.clear();
            // A ring that came after the `seq` read was just cleared: skip its sample (the
            // main thread was awake, so it is no wake-up).
            seen = seq.load(Ordering::Acquire);
        }
        Ok(())
    })
}

/// How the simulated host decides when to pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Sleeps in `ppoll` on the doorbell until the next tick; pumps when it rings and at ticks.
    Fd,
    /// Sleeps until the next tick; pumps at ticks only.
    Timer,
}

/// `samples` posts, each timed from post to run, with the host loop ticking every `tick`.
fn marshal(
    rt: &Runtime,
    tick: Duration,
    mode: Mode,
    samples: usize,
    seed: u64,
    out: &mut Distribution,
) -> hostloop::Result<()> {
    pump_until_idle(rt)?;
    let base = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(samples)));
    let job = {
        let latencies = latencies.clone();
        rt.spawn(move |ctx| {
            let handle = ctx.handle();
            let mut jitter = Jitter::new(seed);
            for _ in 0..samples {
                thread::sleep(jitter.between(tick.mul_f64(0.3), tick.mul_f64(1.1)));
                if ctx.is_cancelled() {
                    break;
                }
                let posted = nanos_since(base);
                let latencies = latencies.clone();
                handle.post(move |_main| {
                    let ran = nanos_since(base);
                    latencies
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(ran.saturating_sub(posted) as f64 * 1e-9);
                })?;
            }
            Ok(())
        })?
    };
    let fd = rt.doorbell_fd();
    let give_up = Instant::now() + tick * (2 * samples as u32) + STUCK;
    let mut next_tick = Instant::now() + tick;
    let done = || {
        latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            >= samples
    };
    while !done() {
        let now = Instant::now();
        if now >= give_up {
            job.cancel();
            return Err(hostloop::Error::Timeout);
        }
        if now >= next_tick {
            rt.pump(Duration::from_millis(2))?;
            next_tick += tick;
            continue;
        }
        match mode {
            Mode::Fd => {
                if sys::wait_readable(fd, Some(next_tick - now)).map_err(hostloop::Error::from)? {
                    rt.pump(Duration::from_millis(2))?;
                }
            }
            Mode::Timer => thread::sleep(next_tick - now),
        }
    }
    crate::doorbell::await_job(&job, STUCK)?;
    for &l in latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        out.push(l);
    }
    Ok(())
}

/// Host ticks measured by the marshal benchmark.
pub const TICKS_MS: [u64; 3] = [1, 10, 50];

/// The wake and marshal benchmarks' configuration and samples.
#[derive(Debug)]
pub struct Bench {
    wake_samples: usize,
    /// Marshal samples per round and tick, indexed like `TICKS_MS`.
    marshal_samples: [usize; 3],
    pub hostloop: Distribution,
    pub eventfd: Distribution,
    /// `[tick][0 = fd, 1 = timer]`.
    pub marshal: [[Distribution; 2]; 3],
    seed: u64,
}

impl Bench {
    pub fn new(wake_samples: usize, marshal_samples: [usize; 3]) -> Self {
        Bench {
            wake_samples,
            marshal_samples,
            hostloop: Distribution::default(),
            eventfd: Distribution::default(),
            marshal: Default::default(),
            seed: 0x5851_F42D_4C95_7F2D,
        }
    }

    fn seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed
    }

    /// One round of wake-ups (hostloop and eventfd, in alternating order).
    pub fn round_wake(
        &mut self,
        rt: &Runtime,
        reversed: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let seed = self.seed();
        for which in if reversed { [1, 0] } else { [0, 1] } {
            if which == 0 {
                hostloop_wake(rt, self.wake_samples, seed, &mut self.hostloop)?;
            } else {
                eventfd_wake(self.wake_samples, seed, &mut self.eventfd)?;
            }
        }
        Ok(())
    }

    /// One round of marshal latencies at every tick (fd and timer, in alternating order).
    pub fn round_marshal(&mut self, rt: &Runtime, reversed: bool) -> hostloop::Result<()> {
        for (t, &ms) in TICKS_MS.iter().enumerate() {
            let seed = self.seed();
            let tick = Duration::from_millis(ms);
            let modes = if reversed {
                [Mode::Timer, Mode::Fd]
            } else {
                [Mode::Fd, Mode::Timer]
            };
            for mode in modes {
                let m = usize::from(mode == Mode::Timer);
                marshal(
                    rt,
                    tick,
                    mode,
                    self.marshal_samples[t],
                    seed,
                    &mut self.marshal[t][m],
                )?;
            }
        }
        Ok(())
    }

    pub fn rows(&mut self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            let limit = self.eventfd.quantile(q);
            rows.push(Row::limited(
                format!("wake latency {name} (worker post -> poll returns) vs raw eventfd"),
                Unit::Time,
                self.hostloop.quantile(q),
                limit,
                Target::None,
            ));
        }
        let wake_limit = self.eventfd.quantile(0.5);
        for (t, ms) in TICKS_MS.iter().enumerate() {
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                let [fd, timer] = &mut self.marshal[t];
                rows.push(
                    Row::pair(
                        format!("marshal latency {name}, {ms} ms host tick: fd vs timer polling"),
                        Unit::Time,
                        fd.quantile(q),
                        timer.quantile(q),
                        // Context, not a goal: the timer waits half a tick on average by
                        // construction, so the fd cannot lose.
                        Target::None,
                    )
                    .with_limit(wake_limit),
                );
            }
        }
        rows
    }

    pub fn notes(&self) -> Vec<String> {
        let counts: Vec<String> = TICKS_MS
            .iter()
            .zip(&self.marshal)
            .map(|(ms, [fd, timer])| format!("{ms} ms: {}+{}", fd.len(), timer.len()))
            .collect();
        vec![format!(
            "wake latency: {} hostloop and {} eventfd samples; marshal samples (fd+timer): {}; \
             the marshal rows' limit is the eventfd wake p50",
            self.hostloop.len(),
            self.eventfd.len(),
            counts.join(", ")
        )]
    }
}

impl Bench {
    /// Copies of the distributions, for plotting: (hostloop wake, eventfd wake, marshal).
    pub fn clone_distributions(&self) -> (Distribution, Distribution, [[Distribution; 2]; 3]) {
        (
            self.hostloop.clone(),
            self.eventfd.clone(),
            self.marshal.clone(),
        )
    }
}
