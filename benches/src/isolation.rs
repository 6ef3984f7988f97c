//! Benchmark 11: an isolated plugin against the same plugin in-process.
//!
//! The `particles` plugin plays a simulation with `latest` delivery; the host loop runs at 60 Hz
//! (shorter in `--quick`): each frame it pumps with a 2 ms budget, then sleeps in `ppoll` on the
//! doorbell until the next frame, pumping when it rings — the demo's loop. Blocks alternate
//! between the plugin loaded in-process and in a `hostloop-worker` process (whose frames cross
//! in shared memory). Per block: the simulation's steps per second (from the steps of the frames
//! the sink received) and the host's frame intervals (pooled, for the p99).
//!
//! After the isolated block of each round the worker is killed (`SIGKILL`), and the time to the
//! crash report on the host's main thread, and to the first frame of the restarted simulation,
//! is measured.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostloop::plugin::{Isolation, LoadOptions};
use hostloop::{Event, Message, Payload, Runtime};

use crate::report::{Distribution, Row, Samples, Target, Unit};

const BUDGET: Duration = Duration::from_millis(2);
/// How long a simulation may take to send its first configured frame, or to come back.
const SETUP: Duration = Duration::from_secs(120);

/// What the sink saw (main thread only).
#[derive(Default)]
struct Seen {
    pending_step: Cell<Option<u64>>,
    /// (first step, when), (last step, when) of frames of the configured size.
    first: Cell<Option<(u64, Instant)>>,
    last: Cell<Option<(u64, Instant)>>,
    frames: Cell<u64>,
    crashed: Cell<Option<Instant>>,
}

pub struct Bench {
    particles: usize,
    period: Duration,
    frames_per_block: usize,
    plugin: PathBuf,
    worker: PathBuf,
    /// `[in-process, isolated]`.
    steps_per_s: [Samples; 2],
    interval: [Distribution; 2],
    crash_report: Samples,
    crash_first_frame: Samples,
}

impl Bench {
    pub fn new(
        particles: usize,
        period: Duration,
        frames_per_block: usize,
    ) -> Result<Bench, String> {
        let (plugin, worker) = programs()?;
        Ok(Bench {
            particles,
            period,
            frames_per_block,
            plugin,
            worker,
            steps_per_s: Default::default(),
            interval: Default::default(),
            crash_report: Samples::default(),
            crash_first_frame: Samples::default(),
        })
    }

    pub fn round(&mut self, reversed: bool) -> Result<(), String> {
        let order: [usize; 2] = if reversed { [1, 0] } else { [0, 1] };
        for which in order {
            self.block(which == 1)?;
        }
        Ok(())
    }

    fn block(&mut self, isolated: bool) -> Result<(), String> {
        let rt = Runtime::builder()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let seen = Rc::new(Seen::default());
        let bytes_per_frame = self.particles * 12;
        {
            // The sink must be Send; what it records stays on this (the main) thread, so it
            // goes through a thread-local handed the `Rc` below.
            SEEN.with(|s| *s.borrow_mut() = Some(seen.clone()));
            rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
                SEEN.with(|s| {
                    if let Some(seen) = &*s.borrow() {
                        record(seen, m, bytes_per_frame);
                    }
                })
            })));
        }
        let options = if isolated {
            LoadOptions::new()
                .isolation(Isolation::OwnProcess)
                .worker_program(&self.worker)
                .echo_stderr(false)
        } else {
            LoadOptions::new()
        };
        let plugin = rt
            .load_plugin_with(&self.plugin, &options)
            .map_err(|e| format!("loading the particles plugin: {e}"))?;
        rt.post_event(Event::Custom {
            topic: "particles/configure".into(),
            bytes: format!("agents={} delivery=latest playing=1", self.particles).into_bytes(),
            coalesce: false,
        })
        .map_err(|e| e.to_string())?;
        pump_until(&rt, SETUP, || seen.first.get().is_some())?;

        // The measured block: a 60 Hz host loop.
        let from = seen.last.get().expect("a first frame");
        let mut last_start = Instant::now();
        let mut next = last_start + self.period;
        for _ in 0..self.frames_per_block {
            rt.pump(BUDGET).map_err(|e| e.to_string())?;
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                if crate::sys::wait_readable(rt.doorbell_fd(), Some(next - now))
                    .map_err(|e| format!("ppoll: {e}"))?
                {
                    rt.pump(BUDGET).map_err(|e| e.to_string())?;
                }
            }
            let start = Instant::now();
            self.interval[usize::from(isolated)].push((start - last_start).as_secs_f64());
            last_start = start;
            next += self.period;
            if next <= start {
                next = start + self.period;
            }
        }
        let to = seen.last.get().expect("frames");
        let rate = to.0.saturating_sub(from.0) as f64 / (to.1 - from.1).as_secs_f64().max(1e-9);
        self.steps_per_s[usize::from(isolated)].push(rate);

        if isolated {
            // Kill the worker; time the report and the restored simulation's first frame.
            let pid = plugin.info().pid.ok_or("the worker has no pid")?;
            let killed = Instant::now();
            // SAFETY: `kill` with a pid this process started and a valid signal number.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
                return Err("kill -9 of the worker failed".into());
            }
            seen.first.set(None);
            pump_until(&rt, SETUP, || seen.crashed.get().is_some())?;
            pump_until(&rt, SETUP, || seen.first.get().is_some())?;
            let reported = seen.crashed.get().expect("a crash report");
            let first = seen.first.get().expect("a frame").1;
            self.crash_report.push((reported - killed).as_secs_f64());
            self.crash_first_frame.push((first - killed).as_secs_f64());
        }
        drop(plugin);
        rt.shutdown(Duration::from_secs(5));
        SEEN.with(|s| *s.borrow_mut() = None);
        Ok(())
    }

    pub fn rows(&mut self) -> Vec<Row> {
        let [in_p99, iso_p99] = self.interval.each_mut().map(|d| d.quantile(0.99));
        vec![
            Row::versus(
                format!(
                    "isolated plugin: simulation steps/s, {} particles (isolated / in-process)",
                    self.particles
                ),
                Unit::Rate,
                &self.steps_per_s[1],
                &self.steps_per_s[0],
                Target::RatioAtLeast(0.9),
            ),
            Row::pair(
                "isolated plugin: host frame time p99 (isolated / in-process)",
                Unit::Time,
                iso_p99,
                in_p99,
                Target::RatioAtMost(1.05),
            ),
            Row::alone(
                "isolated plugin: kill -9 -> crash report on the main thread",
                Unit::Time,
                &self.crash_report,
                Target::None,
            ),
            Row::alone(
                "isolated plugin: kill -9 -> first frame of the restored simulation",
                Unit::Time,
                &self.crash_first_frame,
                Target::None,
            ),
        ]
    }
}

thread_local! {
    static SEEN: std::cell::RefCell<Option<Rc<Seen>>> = const { std::cell::RefCell::new(None) };
}

fn record(seen: &Seen, m: &Message<'_>, bytes_per_frame: usize) {
    match (m.topic, m.payload) {
        ("particles/step", Payload::Bytes(b)) if b.len() >= 8 => {
            seen.pending_step.set(Some(u64::from_le_bytes(
                b[..8].try_into().expect("8 bytes"),
            )));
        }
        ("particles/positions", Payload::Array(a)) if a.bytes().len() == bytes_per_frame => {
            if let Some(step) = seen.pending_step.take() {
                let now = Instant::now();
                if seen.first.get().is_none() {
                    seen.first.set(Some((step, now)));
                }
                seen.last.set(Some((step, now)));
                seen.frames.set(seen.frames.get() + 1);
            }
        }
        ("hostloop/plugin/crashed", _) => seen.crashed.set(Some(Instant::now())),
        _ => {}
    }
}

fn pump_until(rt: &Runtime, limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let report = rt
        .run_until(&mut done, BUDGET, limit)
        .map_err(|e| e.to_string())?;
    if report.finished {
        Ok(())
    } else {
        Err(format!(
            "the particles plugin did not get there within {limit:?}"
        ))
    }
}

/// The particles plugin and the worker program, built beside this program if missing (the
/// farm rows use them too).
pub(crate) fn programs() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no target directory")?.to_path_buf();
    let plugin = dir.join(format!(
        "{}hostloop_particles{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let worker = dir.join("hostloop-worker");
    // Always: a no-op when they are fresh, and a stale worker would speak an older protocol.
    build(&dir)?;
    Ok((plugin, worker))
}

fn build(profile_dir: &Path) -> Result<(), String> {
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", "hostloop-particles", "-p", "hostloop-worker"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the particles plugin and the worker failed ({status})"
        ))
    }
}

/// Benchmark 12: the round trip of a tiny task (submit -> its answer on the host's main thread)
/// through hostloop's process pool, against Python's `multiprocessing.Pool.apply` and
/// `concurrent.futures.ProcessPoolExecutor` (the tools DCC scripts reach for), and a process
/// spawned per task (`/bin/true`, a lower bound: it does no work and moves no data).
pub struct PoolBench {
    trips: usize,
    crashy: PathBuf,
    worker: PathBuf,
    hostloop: Samples,
    mp_pool: Samples,
    executor: Samples,
    spawn: Samples,
}

/// Times `trips` sequential round trips in Python and prints the median of each tool, seconds.
const PYTHON: &str = r#"
import sys, time, statistics, multiprocessing, concurrent.futures
def task(b):
    s = 0
    for x in b:
        s = (s * 31 + x) & 0xFFFFFFFFFFFFFFFF
    return s
if __name__ == "__main__":
    n = int(sys.argv[1])
    data = bytes(range(8))
    with multiprocessing.Pool(1) as pool:
        pool.apply(task, (data,))
        t = []
        for _ in range(n):
            t0 = time.perf_counter(); pool.apply(task, (data,)); t.append(time.perf_counter() - t0)
        print("mp_pool", statistics.median(t))
    with concurrent.futures.ProcessPoolExecutor(1) as ex:
        ex.submit(task, data).result()
        t = []
        for _ in range(n):
            t0 = time.perf_counter(); ex.submit(task, data).result(); t.append(time.perf_counter() - t0)
        print("executor", statistics.median(t))
"#;

impl PoolBench {
    pub fn new(trips: usize) -> Result<PoolBench, String> {
        let (crashy, worker) = crashy_and_worker()?;
        Ok(PoolBench {
            trips,
            crashy,
            worker,
            hostloop: Samples::default(),
            mp_pool: Samples::default(),
            executor: Samples::default(),
            spawn: Samples::default(),
        })
    }

    pub fn round(&mut self, _reversed: bool) -> Result<(), String> {
        // hostloop: a pool of one worker, tiny tasks one after the other.
        let rt = Runtime::builder()
            .workers(1)
            .build()
            .map_err(|e| e.to_string())?;
        let options = LoadOptions::new()
            .worker_program(&self.worker)
            .echo_stderr(false);
        let pool = rt
            .task_pool(&self.crashy, 1, &options)
            .map_err(|e| e.to_string())?;
        let mut trips = Vec::with_capacity(self.trips);
        for i in 0..=self.trips {
            let t0 = Instant::now();
            let task = pool.submit("sum", (0..8).collect());
            pump_until(&rt, SETUP, || task.try_result().is_some())?;
            if i > 0 {
                trips.push(t0.elapsed().as_secs_f64());
            }
        }
        self.hostloop.push(median(trips));
        pool.stop(Duration::from_secs(2));
        drop(rt);

        // Python's two pools, in a python3 of this machine (the rows say n/a without one).
        if let Ok(out) = std::process::Command::new("python3")
            .args(["-c", PYTHON, &self.trips.to_string()])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut w = line.split_whitespace();
                let (Some(k), Some(v)) = (w.next(), w.next().and_then(|v| v.parse().ok())) else {
                    continue;
                };
                match k {
                    "mp_pool" => self.mp_pool.push(v),
                    "executor" => self.executor.push(v),
                    _ => {}
                }
            }
        }

        // A process per task.
        let mut trips = Vec::new();
        for _ in 0..self.trips.min(200) {
            let t0 = Instant::now();
            let ok = std::process::Command::new("true")
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                trips.push(t0.elapsed().as_secs_f64());
            }
        }
        self.spawn.push(median(trips));
        Ok(())
    }

    pub fn rows(&self) -> Vec<Row> {
        vec![
            Row::versus(
                "tiny task round trip: hostloop process pool vs Python multiprocessing.Pool",
                Unit::Time,
                &self.hostloop,
                &self.mp_pool,
                Target::RatioAtMost(1.0),
            ),
            Row::versus(
                "tiny task round trip: hostloop process pool vs Python ProcessPoolExecutor",
                Unit::Time,
                &self.hostloop,
                &self.executor,
                Target::RatioAtMost(1.0),
            ),
            Row::versus(
                "tiny task round trip: hostloop process pool vs a process spawned per task",
                Unit::Time,
                &self.hostloop,
                &self.spawn,
                Target::None,
            ),
        ]
    }
}

/// Benchmark 13: large payloads from a plugin in a worker process to the host's sink, through
/// shared memory, against a plain `memcpy` of the same bytes in the same run. Each burst: the
/// host posts [`BURST`] `crashy/blast` events at once, the isolated `crashy` plugin emits its
/// `size`-byte buffer for each (which the worker copies into a reused shared-memory region: the
/// one copy of the path), and the host's sink gets each as a slice of the mapped region and
/// checks its first and last byte. The time per payload is the burst's time over [`BURST`]
/// (the throughput of a stream with that many payloads in flight). The peer copies `size`
/// bytes from one buffer into [`BURST`] others in turn, all allocated and touched beforehand:
/// the same copies, without the process boundary.
/// Payloads in flight per burst.
const BURST: usize = 8;
/// Bursts before the measured ones.
const WARM_UP: usize = 6;

pub struct ShmBench {
    size: usize,
    trips: usize,
    crashy: PathBuf,
    worker: PathBuf,
    shm: Samples,
    memcpy: Samples,
}

impl ShmBench {
    pub fn new(size: usize, trips: usize) -> Result<ShmBench, String> {
        let (crashy, worker) = crashy_and_worker()?;
        Ok(ShmBench {
            size,
            trips,
            crashy,
            worker,
            shm: Samples::default(),
            memcpy: Samples::default(),
        })
    }

    pub fn round(&mut self, reversed: bool) -> Result<(), String> {
        if reversed {
            self.round_memcpy();
            self.round_shm()
        } else {
            self.round_shm()?;
            self.round_memcpy();
            Ok(())
        }
    }

    fn round_shm(&mut self) -> Result<(), String> {
        let rt = Runtime::builder()
            .workers(1)
            .build()
            .map_err(|e| e.to_string())?;
        // Payloads of the right size and bytes the sink got, and any others.
        let (good, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        {
            let (good, bad) = (good.clone(), bad.clone());
            let (size, last) = (self.size, ((self.size.max(1) - 1) % 251) as u8);
            rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
                if m.topic != "crashy/blasted" {
                    return;
                }
                let ok = matches!(m.payload, Payload::Bytes(b)
                    if b.len() == size && b.first() == Some(&0) && b.last() == Some(&last));
                if ok { &good } else { &bad }.fetch_add(1, Ordering::Release);
            })));
        }
        let options = LoadOptions::new()
            .worker_program(&self.worker)
            .isolation(Isolation::OwnProcess)
            .echo_stderr(false);
        let plugin = rt
            .load_plugin_with(&self.crashy, &options)
            .map_err(|e| e.to_string())?;
        let size = self.size.to_string().into_bytes();
        let burst = |rt: &Runtime| -> Result<(), String> {
            let want = good.load(Ordering::Acquire) + BURST;
            for _ in 0..BURST {
                rt.post_event(Event::Custom {
                    topic: "crashy/blast".into(),
                    bytes: size.clone(),
                    coalesce: false,
                })
                .map_err(|e| e.to_string())?;
            }
            pump_until(rt, SETUP, || {
                good.load(Ordering::Acquire) >= want || bad.load(Ordering::Acquire) > 0
            })?;
            match bad.load(Ordering::Acquire) {
                0 => Ok(()),
                n => Err(format!("{n} payloads arrived with the wrong size or bytes")),
            }
        };
        // Warm up: the plugin fills its buffer, the worker makes its regions and both sides
        // fault their pages in (a burst may be split over two pumps, so the regions are all
        // made only after a few bursts): steady playback is what is measured.
        for _ in 0..WARM_UP {
            burst(&rt)?;
        }
        let bursts = self.trips.div_ceil(BURST);
        let t0 = Instant::now();
        for _ in 0..bursts {
            burst(&rt)?;
        }
        self.shm
            .push(t0.elapsed().as_secs_f64() / (bursts * BURST) as f64);
        plugin.unload(Duration::from_secs(5));
        rt.set_sink(None);
        drop(rt);
        Ok(())
    }

    fn round_memcpy(&mut self) {
        // The same copies as the shared-memory path makes: one source into [`BURST`]
        // destinations in turn (so neither side works from a cache the other cannot have).
        let src: Vec<u8> = (0..self.size).map(|k| (k % 251) as u8).collect();
        let mut dst: Vec<Vec<u8>> = (0..BURST).map(|_| vec![1u8; self.size]).collect();
        let bursts = self.trips.div_ceil(BURST);
        let t0 = Instant::now();
        for _ in 0..bursts {
            for d in &mut dst {
                d.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&mut *d);
            }
        }
        self.memcpy
            .push(t0.elapsed().as_secs_f64() / (bursts * BURST) as f64);
    }

    pub fn rows(&self) -> Vec<Row> {
        let mib = self.size >> 20;
        vec![Row::versus(
            format!(
                "{mib} MiB payload, worker plugin to host sink through shared memory vs a plain \
                 memcpy (time per payload; target ≥ 0.8x throughput)"
            ),
            Unit::Time,
            &self.shm,
            &self.memcpy,
            Target::RatioAtMost(1.25),
        )]
    }
}

/// The `crashy` fixture plugin and the worker program, built beside this program if missing.
fn crashy_and_worker() -> Result<(PathBuf, PathBuf), String> {
    let (_, worker) = programs()?;
    let crashy = worker.with_file_name(format!(
        "{}fixture_crashy{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let profile_dir = worker.parent().ok_or("no target directory")?;
    build_package(profile_dir, "hostloop-fixture-crashy")?;
    Ok((crashy, worker))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn build_package(profile_dir: &Path, package: &str) -> Result<(), String> {
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", package])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {package} failed ({status})"))
    }
}
