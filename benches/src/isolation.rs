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
        ("particles/step", Payload::Bytes(b)) if b.len() == 8 => {
            seen.pending_step
                .set(Some(u64::from_le_bytes(b.try_into().expect("8 bytes"))));
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

/// The particles plugin and the worker program, built beside this program if missing.
fn programs() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no target directory")?.to_path_buf();
    let plugin = dir.join(format!(
        "{}hostloop_particles{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let worker = dir.join("hostloop-worker");
    if !plugin.exists() || !worker.exists() {
        build(&dir)?;
    }
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
