//! `soak`: a host that runs hostloop under mixed load for a chosen time and fails on growth, on
//! errors nobody provoked, and on pumps over their budget beyond what their items cost.
//!
//! ```text
//! cargo run --release -p hostloop-tests --bin soak -- --duration 60s --svg target/soak.svg
//! scripts/soak 3h
//! ```
//!
//! # The load
//!
//! The main thread is a host loop: it sleeps in `ppoll` on the doorbell until the next 120 Hz
//! frame, pumps with a budget drawn from 250 µs to 8 ms, and at each frame adds load:
//!
//! - jobs on every lane (`spawn`, `spawn_with` each priority, `spawn_io`, named jobs), some
//!   cancelled at random while queued or running, some failing or panicking on purpose, their
//!   `on_main` continuations costing a bounded time; job groups cancelled with `cancel_all`;
//! - `spawn_latest` storms: 50 to 300 jobs spawned with one key, one after another;
//! - a simulation of its own reconfigured every few seconds (restarted with another size and
//!   delivery, `latest` or `every`; paused, played, reset, seeked, re-rated and edited between);
//! - the particles plugin reconfigured (`particles/configure`), sometimes with a bad value on
//!   purpose, and hot-reloaded from its own path; the counter fixture plugin ticked through
//!   host events and hot-reloaded between its v1 and v2 builds;
//! - host events to a main-thread subscriber and a background channel subscriber, coalescing
//!   ones included;
//! - sink traffic from jobs (`Handle::emit`), from a background thread and from the plugins;
//!   `post` and `post_chunked` items from the main thread and a background thread, bursts of
//!   hundreds of items, a bounded stream fed by a background thread (its handler costing as an
//!   item does), and main-thread items that panic on purpose.
//!
//! Every item the soak runs on the main thread costs at most [`ITEM_COST_MAX`] (a spin of a
//! drawn length: 90 % under 20 µs, 9 % 100–300 µs, 1 % 1–2 ms), and its wall time is measured.
//!
//! # What fails the run
//!
//! Each second it samples RSS, heap in use (glibc's `mallinfo2`), open fds, threads, the queue
//! depths and the p99 of that second's pumps; at the end it fails (exit status 1) when:
//!
//! - **growth**: over the second half of the run, the least-squares slope of RSS (of its floor:
//!   the least RSS of each whole 5 s window, which a leak raises and a passing peak does not;
//!   a half shorter than two windows is not judged on RSS) or of
//!   the heap in use is above `--max-growth` (default 1 MiB/min) *and* the fitted growth over
//!   that half is above 8 MiB. The 8 MiB keep the steps of a simulation restarted with another
//!   size from failing a short run: the CI's 60 s catch only a gross leak (over 16 MiB/min),
//!   an hour-long run one of 1 MiB/min and more;
//! - **fds and threads**: once the load has stopped and drained, they do not come back (within
//!   20 s) to at most the count taken after the warm-up; after shutdown the process does not
//!   come back to its main thread alone;
//! - **errors**: any error the soak did not provoke — a call refused, a job or item result that
//!   is not the one its kind asks for, a continuation that ran twice or never, a `spawn_latest`
//!   storm delivering anything but its last job, a frame out of order, a plugin step out of
//!   sequence across reloads, an error message from a plugin that was not asked for, a failed
//!   reload, panics or failures counted by the runtime that the soak did not cause, a straggler
//!   at shutdown;
//! - **pumps over budget**: a pump never splits an item, so a pump may take its budget plus the
//!   longest item it ran. The soak times each of its own items; the plugins' items are not timed
//!   one by one, so whatever the soak's items leave of a pump counts as one item that may have
//!   been the longest. A pump whose time exceeds `budget + longest item` by more than
//!   [`PUMP_TOLERANCE`] (1 ms: what a preempted main thread may lose between two items) is an
//!   unexplained overrun. A loaded machine preempts now and then, so the run fails only on
//!   systematic ones: more than 10 and more than 1 in 10,000 of the pumps that ran items.
//!   Stricter, and blind to preemption: no pump may *start* two of the soak's items after its
//!   deadline (the pump reads the clock after each item, so at most the one item whose start a
//!   preemption pushed past the deadline can start late); one such pump fails the run.
//!
//! At the end it prints a table of figures (growth per minute, peak RSS, pump p99, counts) and,
//! with `--svg`, writes a plot of the samples.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::sdk as hostloop;
use hostloop::plugin::LoadedPlugin;
use hostloop::{
    Delivery, Error, Event, EventFilter, Handle, Job, JobGroup, Main, Message, OwnedPayload,
    Payload, Priority, Runtime, SimControl, SimOptions, Simulation, Step, StepContext,
    StreamSender,
};

/// The longest a main-thread item of the soak costs (see [`item_cost`]).
const ITEM_COST_MAX: Duration = Duration::from_millis(2);
/// How far past `budget + longest item` a pump may run before it counts as an unexplained
/// overrun.
const PUMP_TOLERANCE: Duration = Duration::from_millis(1);
/// Pump budgets, drawn at random for each pump.
const BUDGETS_US: [u64; 5] = [250, 1000, 2000, 4000, 8000];
/// The host's frame.
const FRAME: Duration = Duration::from_micros(8333);
/// The fitted growth over the second half below which no growth fails the run: RSS, and the
/// heap in use.
/// (The simulations restarted with another size move the heap in use by a few MiB at once.)
const GROWTH_FLOOR_MIB: f64 = 8.0;
const HEAP_FLOOR_MIB: f64 = 8.0;
/// Unexplained overruns allowed: at most this many, or this fraction of the pumps that ran
/// items.
const OVERRUNS_ALLOWED: u64 = 10;
const OVERRUN_FRACTION: f64 = 0.0001;
/// RSS is judged on its floor: the least RSS of each window of this many samples (seconds).
const RSS_WINDOW: usize = 5;

const USAGE: &str = "usage: soak [--duration 60s|10m|3h] [--seconds N] [--svg FILE] \
[--csv FILE] [--plugin-dir DIR] [--max-growth MIB_PER_MIN] [--seed N]

Runs a hostloop host under mixed load and fails on growth, unprovoked errors and pumps over
budget (see the doc comment of tests/src/bin/soak.rs). --svg plots the per-second samples,
--csv writes them. --plugin-dir holds
libhostloop_particles.so, libfixture_counter_v1.so and libfixture_counter_v2.so (default: the
directory of this program).";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("soak: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments.

struct Args {
    duration: Duration,
    svg: Option<PathBuf>,
    csv: Option<PathBuf>,
    plugin_dir: PathBuf,
    max_growth: f64,
    seed: u64,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut args = Args {
            duration: Duration::from_secs(60),
            svg: None,
            csv: None,
            plugin_dir: exe_dir,
            max_growth: 1.0,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--duration" => args.duration = parse_duration(&value()?)?,
                "--seconds" => args.duration = parse_duration(&format!("{}s", value()?))?,
                "--svg" => args.svg = Some(value()?.into()),
                "--csv" => args.csv = Some(value()?.into()),
                "--plugin-dir" => args.plugin_dir = value()?.into(),
                "--max-growth" => {
                    args.max_growth = value()?
                        .parse()
                        .map_err(|_| "--max-growth takes MiB per minute".to_owned())?
                }
                "--seed" => {
                    args.seed = value()?
                        .parse()
                        .map_err(|_| "--seed takes a number".to_owned())?
                }
                "-h" | "--help" => return Err("help".to_owned()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(args)
    }
}

/// `90`, `90s`, `10m`, `3h`, `1.5h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 60s, 10m, 3h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (s, m or h)")),
    };
    if !(secs >= 10.0 && secs.is_finite()) {
        return Err(format!("duration {s:?} must be at least 10 s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------------------------
// Randomness and bounded costs.

/// xorshift64*: reproducible load from `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn micros(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(lo + self.below(hi - lo + 1))
    }
}

/// The cost of one main-thread item: 90 % under 20 µs, 9 % 100–300 µs, 1 % 1–2 ms.
fn item_cost(rng: &mut Rng) -> Duration {
    let r = rng.below(100);
    if r < 90 {
        rng.micros(0, 20)
    } else if r < 99 {
        rng.micros(100, 300)
    } else {
        rng.micros(1000, ITEM_COST_MAX.as_micros() as u64)
    }
}

/// Busy for `d` of wall time (the cost of an item or a slice of a job).
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

thread_local! {
    /// The longest main-thread item of the soak in the current pump, and the time of all of
    /// them (what is left of the pump ran in the plugins' items and hostloop itself).
    static LONGEST: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static TIMED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// When each of the soak's items in the current pump started.
    static STARTS: std::cell::RefCell<Vec<Instant>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs a main-thread item of the soak, measuring its wall time for the pump check.
fn timed<R>(f: impl FnOnce() -> R) -> R {
    timed_as(true, f)
}

/// As [`timed`]; `item` is false for the sink, which one plugin item may call several times.
fn timed_as<R>(item: bool, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    if item && DEPTH.with(Cell::get) == 0 {
        STARTS.with(|s| s.borrow_mut().push(start));
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = f();
    let took = start.elapsed();
    DEPTH.with(|d| d.set(d.get() - 1));
    LONGEST.with(|l| l.set(l.get().max(took)));
    if DEPTH.with(Cell::get) == 0 {
        TIMED.with(|t| t.set(t.get() + took));
    }
    r
}

// ---------------------------------------------------------------------------------------------
// What the load expects, counted from every thread.

/// Counters shared by the load's callbacks. Every check that fails goes through
/// [`Tally::unexpected`].
#[derive(Default)]
struct Tally {
    unexpected: AtomicU64,
    first_messages: Mutex<Vec<String>>,
    /// Jobs spawned with an `on_main` continuation, and continuations run.
    continuations_due: AtomicU64,
    continuations_run: AtomicU64,
    cancelled_seen: AtomicU64,
    failed_seen: AtomicU64,
    /// Jobs asked to fail whose continuation saw a cancellation: cancelled after they failed
    /// (the runtime counts them failed) or before.
    fail_cancelled: AtomicU64,
    panicked_seen: AtomicU64,
    /// Main-thread items posted (main thread and background), and run.
    posts_due: AtomicU64,
    posts_run: AtomicU64,
    provoked_main_panics: AtomicU64,
    groups_due: AtomicU64,
    groups_done: AtomicU64,
    storms: AtomicU64,
    storm_deliveries: AtomicU64,
    /// The storm whose last job delivered last, and the latest storm spawned.
    storm_delivered: AtomicU64,
    sim_frames: AtomicU64,
    sim_restarts: AtomicU64,
    events_posted: AtomicU64,
    pings_main: AtomicU64,
    pings_channel: AtomicU64,
    stream_sent: AtomicU64,
    stream_run: AtomicU64,
    sink_messages: AtomicU64,
    sink_bytes: AtomicU64,
    particle_frames: AtomicU64,
    particle_errors: AtomicU64,
    particle_bad_configs: AtomicU64,
    counter_steps: AtomicU64,
    reloads: AtomicU64,
}

impl Tally {
    fn unexpected(&self, what: impl Into<String>) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_messages
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if first.len() < 20 {
            first.push(what.into());
        }
    }
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    /// `Err` of a call that the soak never expects to fail.
    fn check<T>(&self, what: &str, r: hostloop::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.unexpected(format!("{what}: {e}"));
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs.

/// What a job of the soak is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Succeed,
    Fail,
    Panic,
}

/// A job the soak may still cancel.
struct Live {
    job: Job<u64>,
    cancelled: Arc<AtomicBool>,
}

/// Checks the result a continuation received against what its job was asked to do.
fn judge(tally: &Tally, r: &hostloop::Result<u64>, fate: Fate, cancelled: bool) {
    Tally::add(&tally.continuations_run, 1);
    match (r, fate) {
        (Ok(_), Fate::Succeed) => {}
        (Err(Error::Cancelled), _) if cancelled => {
            Tally::add(&tally.cancelled_seen, 1);
            if fate == Fate::Fail {
                Tally::add(&tally.fail_cancelled, 1);
            }
        }
        (Err(Error::Failed(_)), Fate::Fail) => Tally::add(&tally.failed_seen, 1),
        (Err(Error::Panicked(_)), Fate::Panic) => Tally::add(&tally.panicked_seen, 1),
        (r, fate) => tally.unexpected(format!(
            "a job asked to {fate:?} (cancelled: {cancelled}) delivered {:?}",
            r.as_ref().map_err(ToString::to_string)
        )),
    }
}

/// The body of a soak job: works `work` in slices, checking for cancellation and reporting
/// progress, optionally emits to the sink, then meets its fate.
fn job_body(
    work: Duration,
    emit: bool,
    fate: Fate,
    tally: Arc<Tally>,
) -> impl FnOnce(&hostloop::JobContext<'_>) -> hostloop::Result<u64> + Send + 'static {
    move |ctx| {
        let start = Instant::now();
        let mut slices = 0u64;
        while start.elapsed() < work {
            ctx.check()?;
            spin(Duration::from_micros(50).min(work.saturating_sub(start.elapsed())));
            slices += 1;
            if slices.is_multiple_of(4) {
                ctx.progress(start.elapsed().as_secs_f32() / work.as_secs_f32());
            }
        }
        if emit {
            let r = ctx.handle().emit(
                "soak/job",
                OwnedPayload::Bytes(ctx.id().to_le_bytes().to_vec()),
            );
            tally.check("Handle::emit from a job", r);
        }
        match fate {
            Fate::Succeed => Ok(slices),
            Fate::Fail => Err(Error::failed("a failure the soak provoked")),
            Fate::Panic => panic!("a panic the soak provoked"),
        }
    }
}

fn draw_fate(rng: &mut Rng) -> Fate {
    match rng.below(100) {
        0 => Fate::Panic,
        1..=2 => Fate::Fail,
        _ => Fate::Succeed,
    }
}

/// Spawns one job on a lane drawn at random, with a continuation.
fn spawn_job(h: &Handle, rng: &mut Rng, tally: &Arc<Tally>, live: &mut VecDeque<Live>) {
    let fate = draw_fate(rng);
    let io = rng.below(6) == 4;
    let work = if io {
        rng.micros(200, 3000)
    } else {
        rng.micros(10, 1500)
    };
    let body = job_body(work, rng.chance(0.2), fate, tally.clone());
    let job = match rng.below(6) {
        0 => h.spawn(body),
        1 => h.spawn_with(Priority::High, body),
        2 => h.spawn_with(Priority::Low, body),
        3 => h.spawn_with(Priority::Background, body),
        4 => h.spawn_io(body),
        _ => h.job().name("soak/named").spawn(body),
    };
    let Some(job) = tally.check("spawn", job) else {
        return;
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    let (flag, t, cost) = (cancelled.clone(), tally.clone(), item_cost(rng));
    Tally::add(&tally.continuations_due, 1);
    let job = job.on_main(move |r, _main| {
        timed(|| {
            spin(cost);
            judge(&t, &r, fate, flag.load(Ordering::Acquire));
        })
    });
    live.push_back(Live { job, cancelled });
}

/// A group of jobs, cancelled all at once at `cancel_at` (a frame number).
struct Group {
    group: JobGroup,
    cancelled: Arc<AtomicBool>,
    cancel_at: u64,
}

fn spawn_group(h: &Handle, rng: &mut Rng, tally: &Arc<Tally>, frame: u64) -> Group {
    let group = h.group();
    let cancelled = Arc::new(AtomicBool::new(false));
    for _ in 0..8 {
        let fate = draw_fate(rng);
        let body = job_body(rng.micros(50, 2000), false, fate, tally.clone());
        let Some(job) = tally.check("JobGroup::spawn", group.spawn(body)) else {
            continue;
        };
        let (flag, t, cost) = (cancelled.clone(), tally.clone(), item_cost(rng));
        Tally::add(&tally.continuations_due, 1);
        // Dropped at once: the continuation keeps the job.
        let _ = job.on_main(move |r, _main| {
            timed(|| {
                spin(cost);
                judge(&t, &r, fate, flag.load(Ordering::Acquire));
            })
        });
    }
    Tally::add(&tally.groups_due, 1);
    let t = tally.clone();
    group.on_done(move |_main| timed(|| Tally::add(&t.groups_done, 1)));
    Group {
        group,
        cancelled,
        cancel_at: frame + 1 + rng.below(20),
    }
}

/// `n` jobs spawned with one key: only the last one's continuation may run, with its index.
fn storm(h: &Handle, rng: &mut Rng, tally: &Arc<Tally>) {
    let id = tally.storms.fetch_add(1, Ordering::Relaxed) + 1;
    let n = 50 + rng.below(251);
    for i in 0..n {
        let work = rng.micros(0, 30);
        let job = h.spawn_latest("soak/storm", move |ctx| {
            spin(work);
            ctx.check()?;
            Ok(i)
        });
        let Some(job) = tally.check("spawn_latest", job) else {
            continue;
        };
        let t = tally.clone();
        let _ = job.on_main(move |r, _main| {
            timed(|| {
                Tally::add(&t.storm_deliveries, 1);
                match r {
                    Ok(v) if v == n - 1 => t.storm_delivered.store(id, Ordering::Relaxed),
                    other => t.unexpected(format!(
                        "spawn_latest storm {id} of {n} delivered {:?}",
                        other.map_err(|e| e.to_string())
                    )),
                }
            })
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Main-thread items.

fn post_item(h: &Handle, cost: Duration, tally: &Arc<Tally>) {
    let t = tally.clone();
    Tally::add(&tally.posts_due, 1);
    let r = h.post(move |_main| {
        timed(|| {
            spin(cost);
            Tally::add(&t.posts_run, 1);
        })
    });
    if tally.check("post", r).is_none() {
        tally.posts_due.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A chunked item of `slices` calls, each at most 100 µs (and never past the pump's budget).
fn post_chunked(h: &Handle, slices: u32, tally: &Arc<Tally>) {
    let t = tally.clone();
    let mut left = slices;
    Tally::add(&tally.posts_due, 1);
    let r = h.post_chunked(move |main: &mut Main<'_>| {
        timed(|| {
            spin(main.time_left().min(Duration::from_micros(100)));
            left -= 1;
            if left == 0 {
                Tally::add(&t.posts_run, 1);
                Step::Done
            } else {
                Step::Continue
            }
        })
    });
    if tally.check("post_chunked", r).is_none() {
        tally.posts_due.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The soak's own simulation.

/// Agents moving along one axis, wrapping at 100.
struct Swarm {
    pos: Vec<f32>,
    vel: Vec<f32>,
    speed: f32,
}

impl Swarm {
    fn new(n: usize) -> Self {
        let mut s = Swarm {
            pos: vec![0.0; n],
            vel: vec![0.0; n],
            speed: 1.0,
        };
        s.reset();
        s
    }
}

impl Simulation for Swarm {
    type Frame = Vec<f32>;

    fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
        let (vel, speed) = (&self.vel, self.speed);
        ctx.parallel_for_mut(&mut self.pos, 4096, |offset, chunk| {
            for (k, p) in chunk.iter_mut().enumerate() {
                *p = (*p + vel[offset + k] * speed).rem_euclid(100.0);
            }
        });
        Ok(())
    }

    fn frame(&self) -> Vec<f32> {
        self.pos.clone()
    }

    fn write_frame(&self, frame: &mut Vec<f32>) {
        frame.clear();
        frame.extend_from_slice(&self.pos);
    }

    fn reset(&mut self) {
        for (i, (p, v)) in self.pos.iter_mut().zip(&mut self.vel).enumerate() {
            *p = (i % 100) as f32;
            *v = ((i % 7) as f32 - 3.0) * 0.1;
        }
    }
}

/// The running simulation and how it was started.
struct Sim {
    ctrl: SimControl,
    every: bool,
    started: Instant,
}

fn start_sim(h: &Handle, rng: &mut Rng, tally: &Arc<Tally>) -> Option<Sim> {
    let n = 2_000 + rng.below(58_001) as usize;
    let every = rng.chance(0.5);
    let options = SimOptions {
        name: "soak-sim".to_owned(),
        delivery: if every {
            Delivery::Every { capacity: 4 }
        } else {
            Delivery::Latest
        },
        rate: if rng.chance(0.5) { Some(300.0) } else { None },
        playing: true,
        ..SimOptions::default()
    };
    let t = tally.clone();
    let mut last: Option<u64> = None;
    let ctrl = h.simulate(Swarm::new(n), options, move |frame, info, _main| {
        timed(|| {
            Tally::add(&t.sim_frames, 1);
            if frame.len() != n {
                t.unexpected(format!(
                    "a frame of {} agents from a swarm of {n}",
                    frame.len()
                ));
            }
            if every {
                if let Some(prev) = last {
                    if info.step != prev + 1 {
                        t.unexpected(format!(
                            "every-delivery frame {} after frame {prev}",
                            info.step
                        ));
                    }
                }
                last = Some(info.step);
            }
        })
    });
    let ctrl = tally.check("simulate", ctrl)?;
    let t = tally.clone();
    ctrl.on_error(move |msg, _main| timed(|| t.unexpected(format!("simulation error: {msg}"))));
    Tally::add(&tally.sim_restarts, 1);
    Some(Sim {
        ctrl,
        every,
        started: Instant::now(),
    })
}

/// Pokes the running simulation: what a timeline and a parameter panel do.
fn poke_sim(sim: &Sim, rng: &mut Rng) {
    let c = &sim.ctrl;
    match rng.below(8) {
        0 => c.pause(),
        1 | 2 => c.play(),
        3 => c.set_rate(if rng.chance(0.5) { Some(200.0) } else { None }),
        4 | 5 => {
            let speed = 0.5 + rng.below(20) as f32 * 0.1;
            c.edit::<Swarm, _>(move |s| s.speed = speed);
        }
        // Seeking and resetting restart the step count: not for a simulation whose every
        // frame must follow the one before.
        6 if !sim.every => c.seek(rng.below(200)),
        7 if !sim.every => c.reset(),
        _ => c.step_by(1 + rng.below(5)),
    }
}

// ---------------------------------------------------------------------------------------------
// The sink: what the plugins and the load send to the host.

/// The counter plugin's last step, for the check that its state survives every reload.
#[derive(Default)]
struct CounterTrack {
    last: Option<(u64, u64)>,
}

fn sink(tally: Arc<Tally>) -> hostloop::Sink {
    let mut counter = CounterTrack::default();
    Box::new(move |m: &Message<'_>| {
        timed_as(false, || {
            Tally::add(&tally.sink_messages, 1);
            let bytes: &[u8] = match m.payload {
                Payload::Bytes(b) => b,
                Payload::Array(a) => a.bytes(),
            };
            Tally::add(&tally.sink_bytes, bytes.len() as u64);
            match m.topic {
                "particles/positions" => {
                    Tally::add(&tally.particle_frames, 1);
                    if bytes.is_empty() || !bytes.len().is_multiple_of(12) {
                        tally.unexpected(format!("particles/positions of {} bytes", bytes.len()));
                    }
                }
                "particles/error" => {
                    Tally::add(&tally.particle_errors, 1);
                    let text = String::from_utf8_lossy(bytes);
                    if !text.contains("agents") {
                        tally.unexpected(format!("particles/error: {text}"));
                    }
                }
                "counter/step" if bytes.len() == 20 => {
                    Tally::add(&tally.counter_steps, 1);
                    let build = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
                    let step = u64::from_le_bytes(bytes[4..12].try_into().unwrap_or_default());
                    let value = u64::from_le_bytes(bytes[12..].try_into().unwrap_or_default());
                    if let Some((s, v)) = counter.last {
                        if step != s + 1 || value != v + u64::from(build) {
                            tally.unexpected(format!(
                                "counter v{build} went from step {s} value {v} to step {step} \
                                 value {value}"
                            ));
                        }
                    }
                    counter.last = Some((step, value));
                }
                "particles/step" | "soak/job" | "soak/feed" => {}
                other => tally.unexpected(format!("a sink message on {other:?}")),
            }
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Background threads of the host: a feeder and an event listener.

/// Posts, emits and streams from another thread until `stop`.
fn feeder(
    h: Handle,
    stream: StreamSender<(u64, Duration)>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("soak-feeder".to_owned())
        .spawn(move || {
            let mut rng = Rng::new(seed);
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                post_item(&h, item_cost(&mut rng), &tally);
                if rng.chance(0.5) {
                    let payload = OwnedPayload::array(&[seq as f32; 24], 3);
                    tally.check("Handle::emit from a thread", h.emit("soak/feed", payload));
                }
                Tally::add(&tally.stream_sent, 1);
                let cost = item_cost(&mut rng);
                if stream
                    .send_timeout((seq, cost), Duration::from_secs(30))
                    .is_err()
                {
                    tally.stream_sent.fetch_sub(1, Ordering::Relaxed);
                    tally.unexpected("a stream item not taken within 30 s");
                }
                seq += 1;
                // Pacing, not synchronisation: the feeder is a steady trickle.
                std::thread::sleep(Duration::from_micros(500 + rng.below(1500)));
            }
        })
        .expect("the feeder thread starts")
}

/// Receives every host event on a channel, checking the pings' order.
fn listener(
    rx: crossbeam_channel::Receiver<Event>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("soak-events".to_owned())
        .spawn(move || {
            let mut last = 0u64;
            while !stop.load(Ordering::Acquire) {
                let Ok(event) = rx.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                if let Event::Custom { topic, bytes, .. } = &event {
                    if topic == "soak/ping" {
                        Tally::add(&tally.pings_channel, 1);
                        let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
                        if seq <= last {
                            tally.unexpected(format!("channel ping {seq} after {last}"));
                        }
                        last = seq;
                    }
                }
            }
        })
        .expect("the listener thread starts")
}

// ---------------------------------------------------------------------------------------------
// Sampling.

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the load started.
    t: f64,
    rss_mib: f64,
    heap_mib: f64,
    fds: usize,
    threads: usize,
    main_queue: usize,
    cpu_queue: usize,
    io_queue: usize,
    /// p99 of this second's pumps, ms.
    pump_p99_ms: f64,
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1024.0 * 1024.0)
}

fn heap_mib() -> f64 {
    // SAFETY: mallinfo2 only reads glibc's allocator statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as f64 / (1024.0 * 1024.0)
}

/// Keeps glibc's mmap threshold at its initial 128 KiB. By default the first large block freed
/// raises it (up to 32 MiB), and from then on frame buffers of every size the reconfigured
/// simulations ask for are carved from the arenas and their fragments kept: RSS then climbs
/// for minutes to a plateau, which a 60 s run cannot tell from a leak. With the threshold
/// fixed, large buffers are mapped and unmapped as they come and go, and RSS follows the
/// memory in use. (A leak still shows: leaked blocks stay mapped or in the arenas.)
fn fix_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; called before the threads start.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

fn count_dir(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// Open fds, not counting the one reading `/proc/self/fd`.
fn fds() -> usize {
    count_dir("/proc/self/fd").saturating_sub(1)
}

fn threads() -> usize {
    count_dir("/proc/self/task")
}

/// The `q` quantile of `v` (sorted in place).
fn quantile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Pump durations of the whole run, in buckets of 20 per decade from 1 µs (memory that does not
/// grow with the run).
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: Duration,
}

impl Histogram {
    const PER_DECADE: f64 = 20.0;

    fn new() -> Self {
        Histogram {
            buckets: vec![0; 200],
            count: 0,
            max: Duration::ZERO,
        }
    }
    fn add(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = (us.max(1.0).log10() * Self::PER_DECADE) as usize;
        let last = self.buckets.len() - 1;
        self.buckets[i.min(last)] += 1;
        self.count += 1;
        self.max = self.max.max(d);
    }
    /// The upper edge of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> Duration {
        let want = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                let us = 10f64.powf((i + 1) as f64 / Self::PER_DECADE);
                return Duration::from_secs_f64(us / 1e6).min(self.max);
            }
        }
        self.max
    }
}

/// The least-squares slope of `points`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

// ---------------------------------------------------------------------------------------------
// The host loop.

/// What the pump check counted.
#[derive(Default)]
struct PumpCheck {
    pumps: u64,
    /// Pumps that ran at least one item.
    busy: u64,
    over_budget: u64,
    unexplained: u64,
    /// Pumps that started two or more of the soak's items after their deadline, and the most.
    late_pumps: u64,
    most_late: usize,
    worst_excess: Duration,
    worst_detail: String,
}

/// The host's state between frames.
struct Host<'a> {
    h: &'a Handle,
    rng: Rng,
    tally: Arc<Tally>,
    plugins: PathBuf,
    live: VecDeque<Live>,
    groups: Vec<Group>,
    sim: Option<Sim>,
    particles: Option<LoadedPlugin>,
    counter: Option<LoadedPlugin>,
    counter_build: u32,
    ping: u64,
    /// A bad configure was sent and its `particles/error` has not arrived yet.
    bad_config_pending: bool,
    frame: u64,
    reload_time: Vec<Duration>,
}

impl Host<'_> {
    fn plugin(&self, name: &str) -> PathBuf {
        self.plugins.join(format!("lib{name}.so"))
    }

    fn configure_particles(&mut self, text: &str) {
        let r = self.h.post_event(Event::Custom {
            topic: "particles/configure".to_owned(),
            bytes: text.as_bytes().to_vec(),
            coalesce: false,
        });
        self.tally.check("post_event particles/configure", r);
    }

    fn random_configure(&mut self) {
        let agents = 5_000 + self.rng.below(35_001);
        let delivery = if self.rng.chance(0.5) {
            "latest"
        } else {
            "every"
        };
        let rate = if self.rng.chance(0.5) { 0 } else { 240 };
        self.configure_particles(&format!(
            "agents={agents} delivery={delivery} rate={rate} playing=1"
        ));
    }

    /// One frame's worth of load.
    fn frame(&mut self) {
        self.frame += 1;
        let f = self.frame;
        let (h, tally) = (self.h, self.tally.clone());
        for _ in 0..self.rng.below(7) {
            spawn_job(h, &mut self.rng, &tally, &mut self.live);
        }
        if self.rng.chance(0.15) && !self.live.is_empty() {
            let i = self.rng.below(self.live.len() as u64) as usize;
            let l = &self.live[i];
            l.cancelled.store(true, Ordering::Release);
            l.job.cancel();
        }
        while self.live.len() > 48 {
            self.live.pop_front();
        }
        if f.is_multiple_of(40) {
            let g = spawn_group(h, &mut self.rng, &tally, f);
            self.groups.push(g);
        }
        self.groups.retain(|g| {
            if f >= g.cancel_at {
                g.cancelled.store(true, Ordering::Release);
                g.group.cancel_all();
                false
            } else {
                true
            }
        });
        if f.is_multiple_of(25) {
            storm(h, &mut self.rng, &tally);
        }
        for _ in 0..self.rng.below(5) {
            let cost = item_cost(&mut self.rng);
            post_item(h, cost, &tally);
        }
        if self.rng.chance(0.05) {
            let slices = 1 + self.rng.below(40) as u32;
            post_chunked(h, slices, &tally);
        }
        if f.is_multiple_of(240) {
            // A burst: hundreds of results landing at once.
            for _ in 0..200 + self.rng.below(601) {
                let cost = item_cost(&mut self.rng);
                post_item(h, cost, &tally);
            }
        }
        if f.is_multiple_of(600) {
            Tally::add(&tally.provoked_main_panics, 1);
            let r = h.post(|_main| timed(|| panic!("a main-thread panic the soak provoked")));
            if tally.check("post", r).is_none() {
                tally.provoked_main_panics.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.events();
        self.simulation();
        self.plugins_frame();
    }

    fn events(&mut self) {
        let (h, tally) = (self.h, &self.tally);
        for _ in 0..1 + self.rng.below(3) {
            self.ping += 1;
            let r = h.post_event(Event::Custom {
                topic: "soak/ping".to_owned(),
                bytes: self.ping.to_le_bytes().to_vec(),
                coalesce: false,
            });
            if tally.check("post_event soak/ping", r).is_some() {
                Tally::add(&tally.events_posted, 1);
            }
        }
        for _ in 0..self.rng.below(6) {
            let r = h.post_event(Event::Custom {
                topic: "soak/drag".to_owned(),
                bytes: self.rng.next().to_le_bytes().to_vec(),
                coalesce: true,
            });
            tally.check("post_event soak/drag", r);
        }
        if self.rng.chance(0.2) {
            let frame = self.frame as f64;
            tally.check(
                "post_event FrameChanged",
                h.post_event(Event::FrameChanged { frame }),
            );
        }
    }

    fn simulation(&mut self) {
        let restart = self
            .sim
            .as_ref()
            .is_none_or(|s| s.started.elapsed() > Duration::from_secs(4));
        if restart {
            if let Some(old) = self.sim.take() {
                if let Some(e) = old.ctrl.last_error() {
                    self.tally.unexpected(format!("simulation error: {e}"));
                }
                old.ctrl.stop();
            }
            self.sim = start_sim(self.h, &mut self.rng, &self.tally);
        } else if let Some(sim) = &self.sim {
            if self.rng.chance(0.02) {
                poke_sim(sim, &mut self.rng);
            }
        }
    }

    fn plugins_frame(&mut self) {
        let f = self.frame;
        if self.counter.is_some() {
            for _ in 0..self.rng.below(3) {
                let r = self.h.post_event(Event::Custom {
                    topic: "tick".to_owned(),
                    bytes: Vec::new(),
                    coalesce: false,
                });
                self.tally.check("post_event tick", r);
            }
        }
        if f.is_multiple_of(480) {
            self.random_configure();
        }
        if f % 1200 == 600 && !self.bad_config_pending {
            // Provoked: the plugin must answer on `particles/error` and change nothing.
            self.bad_config_pending = true;
            Tally::add(&self.tally.particle_bad_configs, 1);
            self.configure_particles("agents=0");
        }
        if self.bad_config_pending
            && Tally::get(&self.tally.particle_errors)
                == Tally::get(&self.tally.particle_bad_configs)
        {
            self.bad_config_pending = false;
        }
        if f % 360 == 180 {
            // v1 and v2 in turn: the counter's steps must go on across each reload.
            let next = 3 - self.counter_build;
            let path = self.plugin(&format!("fixture_counter_v{next}"));
            self.reload(true, &path);
            self.counter_build = next;
        }
        if f % 1800 == 900 && !self.bad_config_pending {
            let path = self.plugin("hostloop_particles");
            self.reload(false, &path);
        }
    }

    fn reload(&mut self, counter: bool, path: &Path) {
        let plugin = if counter {
            self.counter.as_mut()
        } else {
            self.particles.as_mut()
        };
        let Some(plugin) = plugin else { return };
        let start = Instant::now();
        match plugin.reload(path, Duration::from_secs(10)) {
            Ok(()) => Tally::add(&self.tally.reloads, 1),
            Err(e) => self
                .tally
                .unexpected(format!("reload of {}: {e}", path.display())),
        }
        self.reload_time.push(start.elapsed());
    }
}

/// Pumps once with `budget`, and checks the pump against its budget and its longest item.
fn pump_once(h: &Handle, budget: Duration, check: &mut PumpCheck, tally: &Tally) -> Duration {
    LONGEST.with(|l| l.set(Duration::ZERO));
    TIMED.with(|t| t.set(Duration::ZERO));
    DEPTH.with(|d| d.set(0));
    STARTS.with(|s| s.borrow_mut().clear());
    let report = match h.pump(budget) {
        Ok(r) => r,
        Err(e) => {
            tally.unexpected(format!("pump: {e}"));
            return Duration::ZERO;
        }
    };
    // The pump's deadline, or a little after it: the pump began at least `elapsed` before now.
    let deadline = Instant::now() - report.elapsed + budget;
    let late = STARTS.with(|s| s.borrow().iter().filter(|&&t| t > deadline).count());
    if late >= 2 {
        check.late_pumps += 1;
        check.most_late = check.most_late.max(late);
    }
    // The plugins' items are not timed one by one: together they cost at most what the soak's
    // items leave of the pump, and any one of them may have been the longest.
    let untimed = report.elapsed.saturating_sub(TIMED.with(Cell::get));
    let longest = LONGEST.with(Cell::get).max(untimed);
    check.pumps += 1;
    check.busy += u64::from(report.ran > 0);
    if report.elapsed > budget {
        check.over_budget += 1;
    }
    let excess = report.elapsed.saturating_sub(budget + longest);
    if excess > PUMP_TOLERANCE {
        check.unexplained += 1;
    }
    if excess > check.worst_excess {
        check.worst_excess = excess;
        check.worst_detail = format!(
            "{:.2} ms for a budget of {:.2} ms, longest item {:.2} ms, {} items",
            ms(report.elapsed),
            ms(budget),
            ms(longest),
            report.ran
        );
    }
    report.elapsed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Pumps (sleeping on the doorbell between pumps) until `done` or `timeout`; returns `done`.
fn pump_until(
    h: &Handle,
    check: &mut PumpCheck,
    tally: &Tally,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        let _ = wait_readable(h.doorbell_fd(), Duration::from_millis(10));
        pump_once(h, Duration::from_millis(4), check, tally);
    }
}

/// Sleeps in `ppoll` until `fd` is readable or `timeout` passes.
fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd and a valid timespec, both outliving the call; no signal mask.
    let n = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    n > 0 && p.revents & libc::POLLIN != 0
}

fn run(args: &Args) -> Result<bool, String> {
    fix_mmap_threshold();
    let tally = Arc::new(Tally::default());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "soak: {:.0} s of mixed load, seed {}, {cores} cores, plugins from {}",
        args.duration.as_secs_f64(),
        args.seed,
        args.plugin_dir.display()
    );
    let rt = Runtime::builder()
        .workers(2)
        .io_threads(2)
        .thread_name("soak")
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let h = rt.handle().clone();
    h.set_sink(Some(sink(tally.clone())));

    let t = tally.clone();
    let mut last_ping = 0u64;
    let ping_sub = h.subscribe(
        EventFilter::Topic("soak/ping".to_owned()),
        move |e, _main| {
            timed(|| {
                if let Event::Custom { bytes, .. } = e {
                    Tally::add(&t.pings_main, 1);
                    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
                    if seq != last_ping + 1 {
                        t.unexpected(format!("main-thread ping {seq} after {last_ping}"));
                    }
                    last_ping = seq;
                }
            })
        },
    );
    let drag_sub = h.subscribe(EventFilter::Topic("soak/drag".to_owned()), |_e, _main| {
        timed(|| {})
    });
    let (chan_sub, events_rx) = h.subscribe_channel(EventFilter::All, 4096);
    let t = tally.clone();
    let mut expected = 0u64;
    let stream = h.stream(64, move |(seq, cost): (u64, Duration), _main| {
        timed(|| {
            spin(cost);
            Tally::add(&t.stream_run, 1);
            if seq != expected {
                t.unexpected(format!("stream item {seq}, expected {expected}"));
            }
            expected = seq + 1;
        })
    });

    let mut host = Host {
        h: &h,
        rng: Rng::new(args.seed),
        tally: tally.clone(),
        plugins: args.plugin_dir.clone(),
        live: VecDeque::new(),
        groups: Vec::new(),
        sim: None,
        particles: None,
        counter: None,
        counter_build: 1,
        ping: 0,
        bad_config_pending: false,
        frame: 0,
        reload_time: Vec::new(),
    };
    let load = |path: PathBuf| {
        h.load_plugin(&path)
            .map_err(|e| format!("loading {}: {e}", path.display()))
    };
    host.particles = Some(load(host.plugin("hostloop_particles"))?);
    host.counter = Some(load(host.plugin("fixture_counter_v1"))?);
    host.configure_particles("agents=20000 delivery=latest rate=0 playing=1");

    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feeder(
        h.clone(),
        stream,
        tally.clone(),
        stop.clone(),
        args.seed.rotate_left(17),
    );
    let listener = listener(events_rx, tally.clone(), stop.clone());

    let mut check = PumpCheck::default();
    let mut hist = Histogram::new();
    let mut second: Vec<Duration> = Vec::with_capacity(4096);
    let mut samples: Vec<Sample> = Vec::new();
    let warm_up = (args.duration / 5).min(Duration::from_secs(5));
    let mut baseline: Option<(usize, usize)> = None;
    let mut peak_threads = 0;
    let mut peak_fds = 0;

    let start = Instant::now();
    let end = start + args.duration;
    let mut next_frame = start;
    let mut next_sample = start + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_frame {
            host.frame();
            next_frame += FRAME;
            if next_frame < now {
                // The machine stalled us: catch up with the present, not with every lost frame.
                next_frame = now + FRAME;
            }
        }
        let _ = wait_readable(
            h.doorbell_fd(),
            next_frame.saturating_duration_since(Instant::now()),
        );
        let budget = Duration::from_micros(BUDGETS_US[host.rng.below(5) as usize]);
        let took = pump_once(&h, budget, &mut check, &tally);
        hist.add(took);
        second.push(took);

        let now = Instant::now();
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            let stats = h.stats();
            let q = stats.queued;
            let s = Sample {
                t: (now - start).as_secs_f64(),
                rss_mib: rss_mib(),
                heap_mib: heap_mib(),
                fds: fds(),
                threads: threads(),
                main_queue: q.main,
                cpu_queue: q.high + q.normal + q.low + q.background,
                io_queue: q.io,
                pump_p99_ms: ms(quantile(&mut second, 0.99)),
            };
            second.clear();
            if baseline.is_none() && now - start >= warm_up {
                baseline = Some((s.fds, s.threads));
            }
            if baseline.is_some() {
                peak_fds = peak_fds.max(s.fds);
                peak_threads = peak_threads.max(s.threads);
            }
            samples.push(s);
        }
    }
    let loaded_for = start.elapsed();

    // The load stops; what it started must finish, and the process come back to its steady
    // shape. The simulation and the plugins stay (they were there at the baseline too).
    let drain_start = Instant::now();
    for l in host.live.drain(..) {
        drop(l);
    }
    let t = tally.clone();
    let drained = pump_until(&h, &mut check, &tally, Duration::from_secs(60), || {
        let s = h.stats();
        Tally::get(&t.continuations_run) == Tally::get(&t.continuations_due)
            && Tally::get(&t.posts_run) == Tally::get(&t.posts_due)
            && Tally::get(&t.groups_done) == Tally::get(&t.groups_due)
            && (Tally::get(&t.storms) == 0
                || Tally::get(&t.storm_delivered) == Tally::get(&t.storms))
            && s.queued.high + s.queued.normal + s.queued.low + s.queued.background + s.queued.io
                == 0
    });
    stop.store(true, Ordering::Release);
    let _ = feeder.join();
    let _ = listener.join();
    let drained = drained
        && pump_until(&h, &mut check, &tally, Duration::from_secs(30), || {
            Tally::get(&t.stream_run) == Tally::get(&t.stream_sent)
                && Tally::get(&t.posts_run) == Tally::get(&t.posts_due)
                && h.stats().queued.main == 0
        });
    let drain_time = drain_start.elapsed();
    let mut failures: Vec<String> = Vec::new();
    if !drained {
        failures.push(format!(
            "the load did not drain within 90 s: continuations {}/{}, posts {}/{}, \
             groups {}/{}, storms {}/{}, stream {}/{}, main queue {}",
            Tally::get(&t.continuations_run),
            Tally::get(&t.continuations_due),
            Tally::get(&t.posts_run),
            Tally::get(&t.posts_due),
            Tally::get(&t.groups_done),
            Tally::get(&t.groups_due),
            Tally::get(&t.storm_delivered),
            Tally::get(&t.storms),
            Tally::get(&t.stream_run),
            Tally::get(&t.stream_sent),
            h.stats().queued.main,
        ));
    }
    // The feeder and listener threads were part of the baseline; they have been joined.
    let (base_fds, base_threads) = baseline.unwrap_or((fds(), threads()));
    let base_threads = base_threads.saturating_sub(2);
    let steady = pump_until(&h, &mut check, &tally, Duration::from_secs(20), || {
        fds() <= base_fds && threads() <= base_threads
    });
    let (end_fds, end_threads) = (fds(), threads());
    if !steady {
        failures.push(format!(
            "fds or threads did not come back: fds {end_fds} (after warm-up {base_fds}), \
             threads {end_threads} (after warm-up {base_threads}, without the soak's own two)"
        ));
    }

    let stats = h.stats();
    let plugin_stats = h.plugin_stats();
    h.unsubscribe(ping_sub);
    h.unsubscribe(drag_sub);
    h.unsubscribe(chan_sub);
    if let Some(sim) = host.sim.take() {
        sim.ctrl.stop();
    }
    host.groups.clear();
    for p in [host.particles.take(), host.counter.take()]
        .into_iter()
        .flatten()
    {
        let r = p.unload(Duration::from_secs(5));
        if r.stragglers > 0 {
            failures.push(format!("a plugin unload left {} stragglers", r.stragglers));
        }
    }
    let report = rt.shutdown(Duration::from_secs(10));
    if !report.stragglers.is_empty() {
        failures.push(format!("shutdown left stragglers: {:?}", report.stragglers));
    }
    drop(rt);
    let until = Instant::now() + Duration::from_secs(20);
    while threads() > 1 && Instant::now() < until {
        std::thread::yield_now();
    }
    let threads_after = threads();
    if threads_after > 1 {
        failures.push(format!(
            "{threads_after} threads after shutdown, not the main thread alone"
        ));
    }

    // The runtime's counters against what the soak provoked.
    if stats.jobs_panicked != Tally::get(&t.panicked_seen) {
        failures.push(format!(
            "the runtime counted {} panicked jobs, the soak provoked {}",
            stats.jobs_panicked,
            Tally::get(&t.panicked_seen)
        ));
    }
    // A job cancelled after it failed counts as failed, and its continuation sees the
    // cancellation.
    let (failed, fail_cancelled) = (Tally::get(&t.failed_seen), Tally::get(&t.fail_cancelled));
    if stats.jobs_failed < failed || stats.jobs_failed > failed + fail_cancelled {
        failures.push(format!(
            "the runtime counted {} failed jobs, the soak provoked {failed} (and cancelled {} \
             more asked to fail)",
            stats.jobs_failed, fail_cancelled
        ));
    }
    if stats.main_items_panicked != Tally::get(&t.provoked_main_panics) {
        failures.push(format!(
            "the runtime counted {} panicked main-thread items, the soak provoked {}",
            stats.main_items_panicked,
            Tally::get(&t.provoked_main_panics)
        ));
    }
    if stats.main_refused > 0 {
        failures.push(format!(
            "{} calls refused for the backlog",
            stats.main_refused
        ));
    }
    if Tally::get(&t.particle_errors) != Tally::get(&t.particle_bad_configs) {
        failures.push(format!(
            "particles/error said {} times, {} bad configures sent",
            Tally::get(&t.particle_errors),
            Tally::get(&t.particle_bad_configs)
        ));
    }
    if Tally::get(&t.pings_main) != Tally::get(&t.events_posted) {
        failures.push(format!(
            "{} pings posted, the main-thread subscriber saw {}",
            Tally::get(&t.events_posted),
            Tally::get(&t.pings_main)
        ));
    }
    for (what, n) in [
        ("simulation frames", Tally::get(&t.sim_frames)),
        ("particles frames", Tally::get(&t.particle_frames)),
        ("counter steps", Tally::get(&t.counter_steps)),
        ("storm deliveries", Tally::get(&t.storm_deliveries)),
        ("stream items", Tally::get(&t.stream_run)),
    ] {
        if n == 0 {
            failures.push(format!("no {what} at all"));
        }
    }
    let unexpected = Tally::get(&t.unexpected);
    if unexpected > 0 {
        let first = t.first_messages.lock().unwrap_or_else(|p| p.into_inner());
        failures.push(format!(
            "{unexpected} unprovoked errors, the first: {}",
            first.join("; ")
        ));
    }
    if check.late_pumps > 0 {
        failures.push(format!(
            "{} pumps started items after their budget was spent (up to {} items in one pump)",
            check.late_pumps, check.most_late
        ));
    }
    let allowed = OVERRUNS_ALLOWED.max((check.busy as f64 * OVERRUN_FRACTION) as u64);
    if check.unexplained > allowed {
        failures.push(format!(
            "{} pumps ran over budget + their longest item by more than {} ms (allowed {allowed}); \
             worst: {}",
            check.unexplained,
            ms(PUMP_TOLERANCE),
            check.worst_detail
        ));
    }

    // Growth over the second half: RSS by its floor (the least RSS of each window, which a leak
    // raises and a passing peak does not), the heap in use by every sample.
    let half = loaded_for.as_secs_f64() / 2.0;
    let second_half: Vec<&Sample> = samples.iter().filter(|s| s.t >= half).collect();
    // Whole windows only: the floor of a window of one or two samples is no floor (a simulation
    // restarted with another size moves RSS by a few MiB for a moment), and a slope through it
    // judged a 10 s soak on a passing peak.
    let floors: Vec<(f64, f64)> = second_half
        .chunks_exact(RSS_WINDOW)
        .map(|w| {
            let t = w.iter().map(|s| s.t).sum::<f64>() / w.len() as f64;
            (
                t / 60.0,
                w.iter().map(|s| s.rss_mib).fold(f64::MAX, f64::min),
            )
        })
        .collect();
    let rss_growth = slope(&floors);
    let heap: Vec<(f64, f64)> = second_half
        .iter()
        .map(|s| (s.t / 60.0, s.heap_mib))
        .collect();
    let heap_growth = slope(&heap);
    let half_min = half / 60.0;
    for (what, growth, floor) in [
        ("RSS", rss_growth, GROWTH_FLOOR_MIB),
        ("the heap in use", heap_growth, HEAP_FLOOR_MIB),
    ] {
        if growth > args.max_growth && growth * half_min > floor {
            failures.push(format!(
                "{what} grew {growth:.2} MiB/min over the second half (limit {:.2}; {:.1} MiB \
                 in all, floor {floor} MiB)",
                args.max_growth,
                growth * half_min
            ));
        }
    }
    let peak_rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let peak_main = samples.iter().map(|s| s.main_queue).max().unwrap_or(0);
    let worst_second_p99 = samples.iter().map(|s| s.pump_p99_ms).fold(0.0, f64::max);
    let mut reload_time = host.reload_time.clone();
    let reload_p99 = quantile(&mut reload_time, 0.99);

    let rows: Vec<(&str, String)> = vec![
        ("load", format!("{:.1} s, then {:.1} s to drain", loaded_for.as_secs_f64(), drain_time.as_secs_f64())),
        ("RSS growth, 2nd half", if floors.len() < 2 { "not judged (the half holds fewer than two whole 5 s windows)".to_owned() } else { format!("{rss_growth:+.3} MiB/min (limit {:.2}, floor of each 5 s window)", args.max_growth) }),
        ("heap growth, 2nd half", format!("{heap_growth:+.3} MiB/min")),
        ("peak RSS", format!("{peak_rss:.1} MiB")),
        ("fds", format!("{base_fds} after warm-up, peak {peak_fds}, {end_fds} at the end")),
        ("threads", format!("{base_threads} after warm-up, peak {}, {end_threads} at the end, {threads_after} after shutdown (without the soak's feeder and listener)", peak_threads.saturating_sub(2))),
        ("pumps", format!("{} ({} ran items, {} over budget, {} unexplained, {allowed} allowed)", check.pumps, check.busy, check.over_budget, check.unexplained)),
        ("pump p50 / p99 / max", format!("{:.3} / {:.3} / {:.3} ms", ms(hist.quantile(0.5)), ms(hist.quantile(0.99)), ms(hist.max))),
        ("worst second's pump p99", format!("{worst_second_p99:.3} ms")),
        ("late starts", format!("{} pumps started 2 or more items past their budget (most: {})", check.late_pumps, check.most_late)),
        ("worst pump excess", format!("{:.3} ms ({})", ms(check.worst_excess), if check.worst_detail.is_empty() { "none" } else { &check.worst_detail })),
        ("peak main queue", format!("{peak_main}")),
        ("jobs", format!("{} spawned, {} finished, {} cancelled, {} failed, {} panicked", stats.jobs_spawned, stats.jobs_finished, stats.jobs_cancelled, stats.jobs_failed, stats.jobs_panicked)),
        ("continuations", format!("{} of {}", Tally::get(&t.continuations_run), Tally::get(&t.continuations_due))),
        ("spawn_latest storms", format!("{} storms, {} deliveries", Tally::get(&t.storms), Tally::get(&t.storm_deliveries))),
        ("main-thread items", format!("{} run by pumps; {} posted by the soak, {} panicked on purpose", stats.main_items_run, Tally::get(&t.posts_due), Tally::get(&t.provoked_main_panics))),
        ("simulation", format!("{} starts, {} frames", Tally::get(&t.sim_restarts), Tally::get(&t.sim_frames))),
        ("events", format!("{} pings, main {} / channel {}, {} dropped by the channel", Tally::get(&t.events_posted), Tally::get(&t.pings_main), Tally::get(&t.pings_channel), stats.events_dropped)),
        ("stream", format!("{} of {} items", Tally::get(&t.stream_run), Tally::get(&t.stream_sent))),
        ("sink", format!("{} messages, {:.1} MiB", Tally::get(&t.sink_messages), Tally::get(&t.sink_bytes) as f64 / 1048576.0)),
        ("plugins", format!("{} particle frames, {} counter steps, {} provoked errors", Tally::get(&t.particle_frames), Tally::get(&t.counter_steps), Tally::get(&t.particle_errors))),
        ("reloads", format!("{} ({} failed), p99 {:.1} ms", plugin_stats.reloads, plugin_stats.failed_reloads, ms(reload_p99))),
        ("unprovoked errors", format!("{unexpected}")),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        println!("  {k:<width$}  {v}");
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&samples, args.duration.as_secs_f64()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("soak: samples plotted in {}", path.display());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, csv(&samples))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if failures.is_empty() {
        println!("soak: PASSED");
        Ok(true)
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------------
// The samples as a table and as a plot.

fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_s,rss_mib,heap_mib,fds,threads,main_queue,cpu_queue,io_queue,pump_p99_ms\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:.1},{:.2},{:.2},{},{},{},{},{},{:.3}",
            s.t,
            s.rss_mib,
            s.heap_mib,
            s.fds,
            s.threads,
            s.main_queue,
            s.cpu_queue,
            s.io_queue,
            s.pump_p99_ms
        );
    }
    out
}

/// Four panels over time: memory, fds and threads, queue depths, pump p99.
fn svg(samples: &[Sample], duration: f64) -> String {
    const W: f64 = 760.0;
    const PANEL: f64 = 150.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 150.0;
    const GAP: f64 = 40.0;
    type Line = (&'static str, &'static str, fn(&Sample) -> f64);
    let panels: [(&str, Vec<Line>); 4] = [
        (
            "memory (MiB)",
            vec![
                ("RSS", "#1f77b4", |s| s.rss_mib),
                ("heap in use", "#2ca02c", |s| s.heap_mib),
            ],
        ),
        (
            "fds, threads",
            vec![
                ("fds", "#d62728", |s| s.fds as f64),
                ("threads", "#9467bd", |s| s.threads as f64),
            ],
        ),
        (
            "queue depth (items)",
            vec![
                ("main", "#ff7f0e", |s| s.main_queue as f64),
                ("cpu", "#8c564b", |s| s.cpu_queue as f64),
                ("io", "#17becf", |s| s.io_queue as f64),
            ],
        ),
        (
            "pump p99 per second (ms)",
            vec![("p99", "#e377c2", |s| s.pump_p99_ms)],
        ),
    ];
    let h = 30.0 + panels.len() as f64 * (PANEL + GAP) + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="13">hostloop soak: {} samples over {duration:.0} s</text>"#,
        samples.len()
    );
    let x_of = |t: f64| LEFT + t / duration.max(1.0) * (W - LEFT - RIGHT);
    for (i, (title, lines)) in panels.iter().enumerate() {
        let top = 30.0 + i as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        let max = samples
            .iter()
            .flat_map(|s| lines.iter().map(move |l| (l.2)(s)))
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let y_of = |v: f64| bottom - v / max * PANEL;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
            W - LEFT - RIGHT
        );
        let _ = writeln!(out, r#"<text x="{LEFT}" y="{}">{title}</text>"#, top - 4.0);
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                LEFT - 4.0,
                y_of(v) + 4.0,
                tick(v)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{duration:.0} s</text>"#,
            W - RIGHT,
            bottom + 14.0
        );
        for (j, (name, color, f)) in lines.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .map(|s| format!("{:.1},{:.1}", x_of(s.t), y_of(f(s))))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
            let ly = top + 14.0 + j as f64 * 16.0;
            let _ = writeln!(
                out,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
                W - RIGHT + 10.0,
                W - RIGHT + 30.0,
                W - RIGHT + 36.0,
                ly + 4.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn tick(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
