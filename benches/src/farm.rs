//! Benchmark 14: the simulation farm. Four parts, each against a peer measured in the same run:
//!
//! - **The runner**: `hostloop-worker run --configure agents=N --steps S` (the particles plugin,
//!   lock-step, every frame delivered) against the same `Particles` stepped in this process by
//!   `Runtime::simulate` and `seek(S)`, with the same number of workers. The runner's time for
//!   S steps is the wall time of a run of 2S steps minus that of a run of S: process start,
//!   plugin load and the configure drop out. Once more with `--cache` (12 B per particle per
//!   step to a frame cache, fsynced at the end), against the disk's ceiling in steps/s.
//! - **The cache against the disk**: a cache of 12 MB frames (a million particles' positions)
//!   written with `CacheWriter` and `finish` (fsync), against a `dd`-like sequential write of the
//!   same bytes (`write_all` of 12 MB buffers, `sync_data`) to a file beside it; read back with
//!   `Cache::open` and `frame` (which checks every frame's CRC, so touches every byte) against a
//!   `dd`-like `read` of the other file into a 12 MB buffer. Warm (both files in the page cache,
//!   as written) and cold (each file's pages dropped first with `posix_fadvise(DONTNEED)`, which
//!   needs no root and touches no other file). A third read touches one `f32` per 4 KiB page
//!   through `frame_unverified`: what mapping costs without the checksum.
//! - **Scrub**: a random frame through `frame_unverified` (sum of its first 4096 floats, and of
//!   the whole frame), each sample the first touch of that frame in its map (a fresh
//!   `Cache::open` per pass over a shuffled order of all frames), against `pread` of the same
//!   bytes from the `dd` file into a buffer and the same sum. p50 and p99 of all samples.
//! - **The farm** (not in `--quick`): `scripts/farm-up`, then a particles run split into 4
//!   chained Slurm segments (`Chain::submit`): submit to the first segment RUNNING (polled every
//!   10 ms through `Farm::state`) and submit to the last segment COMPLETED, against one local
//!   `hostloop-worker run` of the same steps. `scripts/farm-down` afterwards only if this bench
//!   started the cluster.
//!
//! All files go to a directory under the target directory (the filesystem builds use), removed
//! at the end.

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hostloop::cache::{Cache, CacheWriter};
use hostloop::farm::{Chain, ChainSpec, Farm, JobState, Slurm};
use hostloop::{ArrayView, Payload, Runtime, SimOptions};
use hostloop_particles::{Kernel, Particles};

use crate::report::{Distribution, Row, Samples, Target, Unit};

/// A frame of the cache rows: a million particles' positions, 3 × `f32` each.
const FRAME_FLOATS: usize = 3_000_000;
const FRAME_BYTES: usize = FRAME_FLOATS * 4;
/// Floats a "head" scrub sums: 16 KiB, what a viewer's first draw call touches.
const HEAD_FLOATS: usize = 4096;
/// Segments of the farm run.
const SEGMENTS: u32 = 4;
/// How long any one run may take before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(600);

/// Sizes of one run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Particle counts of the runner rows, and steps per measurement of each.
    runner: &'static [(usize, u64)],
    runner_rounds: usize,
    /// Frames of the cache rows (12 MB each).
    frames: usize,
    cache_rounds: usize,
    /// Scrub samples per kind.
    scrub: usize,
    /// The farm run: particles, steps in all, rounds; `None` skips it.
    farm: Option<(usize, u64, usize)>,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            runner: &[(100_000, 1000), (1_000_000, 100)],
            runner_rounds: 3,
            frames: 1_000_000_000usize.div_ceil(FRAME_BYTES),
            cache_rounds: 5,
            scrub: 1000,
            farm: Some((100_000, 400, 2)),
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            runner: &[(20_000, 1000)],
            runner_rounds: 1,
            frames: (32usize << 20).div_ceil(FRAME_BYTES),
            cache_rounds: 1,
            scrub: 30,
            farm: None,
        }
    }
}

/// One particle count of the runner rows: steps/s of each contender per round.
struct RunnerSize {
    agents: usize,
    steps: u64,
    runner: Samples,
    cached: Samples,
    in_process: Samples,
    /// In-process, one `step_by(1)` at a time, each waited for: the runner's lock-step
    /// without the process (a diagnostic).
    one_at_a_time: Samples,
}

/// The farm run's times per round, seconds.
#[derive(Default)]
struct FarmTimes {
    first_running: Samples,
    chain: Samples,
    local: Samples,
}

pub struct Bench {
    sizes: Sizes,
    workers: usize,
    plugin: PathBuf,
    worker: PathBuf,
    scratch: Scratch,
    runner: Vec<RunnerSize>,
    /// `[cache, dd]`, bytes/s.
    write: [Samples; 2],
    read_warm: [Samples; 2],
    read_cold: [Samples; 2],
    /// `frame_unverified`, one float per page, warm; bytes/s.
    touch: Samples,
    /// `[mmap, pread]`, seconds.
    scrub_head: [Distribution; 2],
    scrub_whole: [Distribution; 2],
    farm: FarmTimes,
    notes: Vec<String>,
}

impl Bench {
    pub fn new(sizes: Sizes) -> Result<Bench, String> {
        let (plugin, worker) = programs()?;
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let target = worker
            .parent()
            .and_then(Path::parent)
            .ok_or("no target directory")?;
        let scratch = Scratch::new(target.join(format!("bench-farm-{}", std::process::id())))?;
        let runner = sizes
            .runner
            .iter()
            .map(|&(agents, steps)| RunnerSize {
                agents,
                steps,
                runner: Samples::default(),
                cached: Samples::default(),
                in_process: Samples::default(),
                one_at_a_time: Samples::default(),
            })
            .collect();
        Ok(Bench {
            sizes,
            workers,
            plugin,
            worker,
            scratch,
            runner,
            write: Default::default(),
            read_warm: Default::default(),
            read_cold: Default::default(),
            touch: Samples::default(),
            scrub_head: Default::default(),
            scrub_whole: Default::default(),
            farm: FarmTimes::default(),
            notes: Vec::new(),
        })
    }

    /// Every part, its rounds interleaved within it.
    pub fn run(&mut self) -> Result<(), String> {
        for round in 0..self.sizes.cache_rounds {
            self.cache_round(round % 2 == 1)?;
        }
        self.scrub()?;
        for round in 0..self.sizes.runner_rounds {
            self.runner_round(round % 2 == 1)?;
        }
        match self.sizes.farm {
            Some((agents, steps, rounds)) => self.farm(agents, steps, rounds)?,
            None => {
                let note = "farm rows skipped in --quick: they need a Slurm cluster \
                            (scripts/farm-up)";
                println!("farm: {note}");
                self.notes.push(note.to_owned());
            }
        }
        Ok(())
    }

    // ---- the runner -------------------------------------------------------------------------

    fn runner_round(&mut self, reversed: bool) -> Result<(), String> {
        let cache = self.scratch.path.join("runner.hlcache");
        for i in 0..self.runner.len() {
            let (agents, steps) = (self.runner[i].agents, self.runner[i].steps);
            let mut order = [0, 1, 2, 3];
            if reversed {
                order.reverse();
            }
            for which in order {
                match which {
                    0 => {
                        let r = self.runner_rate(agents, steps, None)?;
                        self.runner[i].runner.push(r);
                    }
                    1 => {
                        let r = self.runner_rate(agents, steps, Some(&cache))?;
                        self.runner[i].cached.push(r);
                        let _ = std::fs::remove_file(&cache);
                    }
                    2 => {
                        let r = in_process_rate(self.workers, agents, steps, false)?;
                        self.runner[i].in_process.push(r);
                    }
                    _ => {
                        let r = in_process_rate(self.workers, agents, steps, true)?;
                        self.runner[i].one_at_a_time.push(r);
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps/s of the runner: `steps` over the difference between a run of 2 × `steps` and one
    /// of `steps` (so process start, plugin load and the configure cancel out).
    fn runner_rate(&self, agents: usize, steps: u64, cache: Option<&Path>) -> Result<f64, String> {
        let short = self.runner_secs(agents, steps, cache)?;
        let long = self.runner_secs(agents, 2 * steps, cache)?;
        Ok(steps as f64 / (long - short).max(1e-9))
    }

    fn runner_secs(&self, agents: usize, steps: u64, cache: Option<&Path>) -> Result<f64, String> {
        let mut cmd = Command::new(&self.worker);
        cmd.args(["run", "--progress", "none"])
            .args(["--workers", &self.workers.to_string()])
            .args(["--configure", &format!("agents={agents}")])
            .args(["--steps", &steps.to_string()]);
        if let Some(c) = cache {
            let _ = std::fs::remove_file(c);
            cmd.arg("--cache").arg(c);
        }
        cmd.arg(&self.plugin);
        timed(&mut cmd, "hostloop-worker run")
    }

    // ---- the cache against the disk ---------------------------------------------------------

    fn cache_round(&mut self, reversed: bool) -> Result<(), String> {
        let cache_path = self.scratch.path.join("frames.hlcache");
        let raw_path = self.scratch.path.join("frames.raw");
        let frames = self.sizes.frames;
        let bytes = (frames * FRAME_BYTES) as f64;
        let positions: Vec<f32> = (0..FRAME_FLOATS).map(|k| (k % 1000) as f32).collect();
        // The dd-like peer writes the same bytes as the cache's frames (a virtual disk may store
        // and serve uniform blocks faster than real data), and reads the cache file itself, so
        // both read the same bytes from the same place on the disk.
        let raw: Vec<u8> = positions.iter().flat_map(|f| f.to_le_bytes()).collect();
        let order: [usize; 2] = if reversed { [1, 0] } else { [0, 1] };

        for which in order {
            let secs = if which == 0 {
                write_cache(&cache_path, frames, &positions)?
            } else {
                write_raw(&raw_path, frames, &raw)?
            };
            self.write[which].push(bytes / secs);
        }
        let _ = std::fs::remove_file(&raw_path);
        // Warm: the cache file is in the page cache, as its writer left it; both contenders
        // read it.
        for which in order {
            let secs = if which == 0 {
                read_cache(&cache_path)?
            } else {
                read_raw(&cache_path)?
            };
            self.read_warm[which].push(bytes / secs);
        }
        self.touch.push(bytes / touch_cache(&cache_path)?);
        // Cold: the cache file's pages dropped from the page cache before each read.
        for which in order {
            drop_from_page_cache(&cache_path)?;
            let secs = if which == 0 {
                read_cache(&cache_path)?
            } else {
                read_raw(&cache_path)?
            };
            self.read_cold[which].push(bytes / secs);
        }
        Ok(())
    }

    // ---- scrub --------------------------------------------------------------------------------

    fn scrub(&mut self) -> Result<(), String> {
        let cache_path = self.scratch.path.join("frames.hlcache");
        let raw_path = self.scratch.path.join("frames.raw");
        let positions: Vec<f32> = (0..FRAME_FLOATS).map(|k| (k % 1000) as f32).collect();
        if !cache_path.exists() {
            write_cache(&cache_path, self.sizes.frames, &positions)?;
        }
        if !raw_path.exists() {
            let bytes: Vec<u8> = positions.iter().flat_map(|f| f.to_le_bytes()).collect();
            write_raw(&raw_path, self.sizes.frames, &bytes)?;
        }
        let raw = File::open(&raw_path).map_err(|e| format!("{}: {e}", raw_path.display()))?;
        let mut buf = vec![0u8; FRAME_BYTES];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for (whole, floats) in [(false, HEAD_FLOATS), (true, FRAME_FLOATS)] {
            let mut taken = 0;
            while taken < self.sizes.scrub {
                // A fresh map per pass: every sample is the first touch of its frame there.
                let cache = Cache::open(&cache_path).map_err(|e| e.to_string())?;
                let mut order: Vec<usize> = (0..cache.len()).collect();
                rng.shuffle(&mut order);
                for &i in order.iter().take(self.sizes.scrub - taken) {
                    let t = Instant::now();
                    let frame = cache.frame_unverified(i).map_err(|e| e.to_string())?;
                    let xyz = frame.array::<f32>(0).ok_or("a frame without positions")?;
                    black_box(sum(&xyz[..floats]));
                    let mmap = t.elapsed().as_secs_f64();

                    let t = Instant::now();
                    let b = &mut buf[..floats * 4];
                    raw.read_exact_at(b, (i * FRAME_BYTES) as u64)
                        .map_err(|e| format!("pread: {e}"))?;
                    black_box(sum_bytes_as_f32(b));
                    let pread = t.elapsed().as_secs_f64();

                    let d = if whole {
                        &mut self.scrub_whole
                    } else {
                        &mut self.scrub_head
                    };
                    d[0].push(mmap);
                    d[1].push(pread);
                    taken += 1;
                }
            }
        }
        Ok(())
    }

    // ---- the farm -----------------------------------------------------------------------------

    fn farm(&mut self, agents: usize, steps: u64, rounds: usize) -> Result<(), String> {
        let root = workspace_root();
        let out = Command::new(root.join("scripts").join("farm-up"))
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running scripts/farm-up: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let why = stderr.lines().last().unwrap_or("").trim().to_owned();
            let note = format!(
                "farm rows skipped: scripts/farm-up exited with {} ({why})",
                out.status
            );
            println!("farm: {note}");
            self.notes.push(note);
            return Ok(());
        }
        let started = !stderr.contains("already up");
        let conf = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export SLURM_CONF=").map(str::to_owned))
            .ok_or("scripts/farm-up printed no SLURM_CONF")?;
        // The Slurm commands this process runs read it from the environment. No other thread
        // of the bench reads the environment meanwhile.
        std::env::set_var("SLURM_CONF", &conf);
        let result = (0..rounds).try_for_each(|round| self.farm_round(agents, steps, round));
        if started {
            let down = Command::new(root.join("scripts").join("farm-down"))
                .current_dir(&root)
                .stdin(Stdio::null())
                .output();
            if !down.is_ok_and(|o| o.status.success()) {
                eprintln!("farm: scripts/farm-down failed; stop the cluster in target/farm");
            }
        }
        self.notes.push(format!(
            "farm: a {SEGMENTS}-segment chain of {steps} steps of {agents} particles (no cache) \
             on a one-node Slurm {}; the local peer is one `hostloop-worker run` of the same \
             steps, process start included as in each segment",
            if started {
                "started by this bench (scripts/farm-up, stopped again after)"
            } else {
                "that was already up"
            }
        ));
        result
    }

    fn farm_round(&mut self, agents: usize, steps: u64, round: usize) -> Result<(), String> {
        let dir = self.scratch.path.join(format!("chain-{round}"));
        let local_state = self.scratch.path.join(format!("local-{round}.state"));
        let local = |this: &Self| -> Result<f64, String> {
            let mut cmd = Command::new(&this.worker);
            cmd.args(["run", "--progress", "none"])
                .args(["--configure", &format!("agents={agents}")])
                .args(["--steps", &steps.to_string(), "--save"])
                .arg(&local_state)
                .arg(&this.plugin);
            timed(&mut cmd, "the local run")
        };
        if round % 2 == 1 {
            let secs = local(self)?;
            self.farm.local.push(secs);
        }
        let farm = Slurm::new();
        let spec = ChainSpec::new(&self.worker, &self.plugin, &dir)
            .configure(format!("agents={agents}"))
            .steps(steps)
            .segments(SEGMENTS)
            .cache(false);
        let t = Instant::now();
        let chain = Chain::submit(&farm, &spec).map_err(|e| e.to_string())?;
        let first = &chain.segments[0];
        let last = chain.segments.last().expect("a chain has a segment");
        let give_up = t + LIMIT;
        let mut first_running = None;
        let outcome = loop {
            if first_running.is_none() {
                match farm.state(&first.id).map_err(|e| e.to_string())?.0 {
                    JobState::Pending => {}
                    // Running, or already over: it ran.
                    _ => first_running = Some(t.elapsed().as_secs_f64()),
                }
            }
            let state = farm.state(&last.id).map_err(|e| e.to_string())?.0;
            if state.is_final() {
                break state;
            }
            if Instant::now() > give_up {
                let _ = chain.cancel(&farm);
                return Err(format!("the farm run did not finish within {LIMIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let total = t.elapsed().as_secs_f64();
        if outcome != JobState::Completed {
            let logs: Vec<String> = chain
                .segments
                .iter()
                .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
                .collect();
            return Err(format!(
                "the farm run ended {outcome:?}; the segments' logs:\n{}",
                logs.join("\n---\n")
            ));
        }
        self.farm.first_running.push(first_running.unwrap_or(total));
        self.farm.chain.push(total);
        if round.is_multiple_of(2) {
            let secs = local(self)?;
            self.farm.local.push(secs);
        }
        let same = std::fs::read(chain.final_state()).ok() == std::fs::read(&local_state).ok();
        if !same {
            self.notes.push(format!(
                "farm round {round}: the chain's final state differs from the local run's"
            ));
        }
        Ok(())
    }

    // ---- the table ----------------------------------------------------------------------------

    pub fn rows(&mut self) -> Vec<Row> {
        let mut rows = Vec::new();
        let dd_write = self.write[1].median();
        for s in &self.runner {
            rows.push(Row::versus(
                format!(
                    "farm runner: {} particles, steps/s, hostloop-worker run vs in-process \
                     simulate + seek ({} workers)",
                    s.agents, self.workers
                ),
                Unit::Rate,
                &s.runner,
                &s.in_process,
                Target::RatioAtLeast(0.95),
            ));
            rows.push(
                Row::versus(
                    format!(
                        "farm runner --cache: {} particles, steps/s, vs in-process (limit: the \
                         disk's dd write / 12 B per particle)",
                        s.agents
                    ),
                    Unit::Rate,
                    &s.cached,
                    &s.in_process,
                    Target::None,
                )
                .with_limit(dd_write / (12.0 * s.agents as f64)),
            );
            rows.push(Row::versus(
                format!(
                    "  diagnostic: {} particles in-process, step_by(1) + wait per step vs seek",
                    s.agents
                ),
                Unit::Rate,
                &s.one_at_a_time,
                &s.in_process,
                Target::None,
            ));
        }
        let mb = self.sizes.frames * FRAME_BYTES / 1_000_000;
        let frames = self.sizes.frames;
        for (what, contenders) in [
            (
                format!("cache write: {frames} frames of 12 MB ({mb} MB) + fsync vs dd-like write_all + sync_data, bytes/s"),
                &self.write,
            ),
            (
                "cache read, warm: open + frame() (CRC of every byte) vs dd-like read(), bytes/s".to_owned(),
                &self.read_warm,
            ),
            (
                "cache read, cold (fadvise DONTNEED): open + frame() vs dd-like read(), bytes/s".to_owned(),
                &self.read_cold,
            ),
        ] {
            rows.push(Row::versus(
                what,
                Unit::Rate,
                &contenders[0],
                &contenders[1],
                Target::RatioAtLeast(0.8),
            ));
        }
        rows.push(Row::versus(
            "cache read, warm: frame_unverified, one f32 per 4 KiB page vs dd-like read(), bytes/s",
            Unit::Rate,
            &self.touch,
            &self.read_warm[1],
            Target::None,
        ));
        for (what, d) in [
            ("first 4096 floats", &mut self.scrub_head),
            ("whole 12 MB frame", &mut self.scrub_whole),
        ] {
            for q in [0.5, 0.99] {
                let [m, p] = [d[0].quantile(q), d[1].quantile(q)];
                rows.push(Row::pair(
                    format!(
                        "cache scrub p{:.0}: random frame, {what} summed, mmap vs pread",
                        q * 100.0
                    ),
                    Unit::Time,
                    m,
                    p,
                    Target::None,
                ));
            }
        }
        rows.push(Row::alone(
            "farm: submit -> first segment RUNNING (Slurm, polled every 10 ms)",
            Unit::Time,
            &self.farm.first_running,
            Target::None,
        ));
        let what = self
            .sizes
            .farm
            .map_or_else(String::new, |(agents, steps, _)| {
                format!(", {steps} steps of {agents} particles")
            });
        rows.push(Row::versus(
            format!("farm: {SEGMENTS}-segment Slurm chain vs one local run{what} (wall time)"),
            Unit::Time,
            &self.farm.chain,
            &self.farm.local,
            Target::None,
        ));
        rows
    }

    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "farm cache rows: {} frames of {FRAME_BYTES} B in a directory under the target \
             directory; the dd-like peer writes the same bytes to a file of its own and reads \
             the cache file itself; warm reads come from the page cache right after the fsynced \
             write, cold ones after posix_fadvise(DONTNEED) on the file (a virtual disk may \
             still serve them from the host's cache); dd write {:.0} MB/s, dd read warm \
             {:.0} MB/s, cold {:.0} MB/s ({:.1} frames/s written by the cache); scrub samples \
             are each frame's first touch in a fresh map (page cache warm)",
            self.sizes.frames,
            self.write[1].median() / 1e6,
            self.read_warm[1].median() / 1e6,
            self.read_cold[1].median() / 1e6,
            self.write[0].median() / FRAME_BYTES as f64,
        )];
        notes.extend(self.notes.iter().cloned());
        notes
    }
}

/// Steps/s of `Particles` stepped in this process by `simulate` + `seek` (or, `one_at_a_time`,
/// by `step_by(1)` and a wait for that step, `steps` times).
fn in_process_rate(
    workers: usize,
    agents: usize,
    steps: u64,
    one_at_a_time: bool,
) -> Result<f64, String> {
    let rt = Runtime::builder()
        .workers(workers)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let sim = rt
        .simulate(
            Particles::new(agents, Kernel::Rust),
            SimOptions {
                name: "bench-farm".to_owned(),
                ..SimOptions::default()
            },
            |positions: &hostloop::Shared<Vec<f32>>, _, _| {
                black_box(positions.first());
            },
        )
        .map_err(|e| e.to_string())?;
    let give_up = Instant::now() + LIMIT;
    let seek = |to: u64| -> Result<(), String> {
        sim.seek(to);
        while sim.step() < to {
            if let Some(e) = sim.last_error() {
                return Err(format!("the in-process simulation failed: {e}"));
            }
            if Instant::now() > give_up {
                return Err("the in-process simulation did not finish".into());
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    };
    // The runner's rate is that of steps `steps..2 * steps` (the difference of two runs), so
    // this times the same steps: a step's cost changes as the particles settle on the ground
    // (the runner alone, 100,000 particles: 2.5k steps/s over 400..800, 1.45k/s over
    // 1,000..2,000). It also leaves out the threads' first wake-ups and the first steps' page
    // faults, as the difference does.
    let warm = steps;
    seek(warm)?;
    let t = Instant::now();
    if one_at_a_time {
        for k in 1..=steps {
            sim.step_by(1);
            while sim.step() < warm + k {
                if sim.last_error().is_some() || Instant::now() > give_up {
                    return Err("the in-process simulation did not step".into());
                }
                std::hint::spin_loop();
            }
        }
    } else {
        seek(warm + steps)?;
    }
    let secs = t.elapsed().as_secs_f64();
    sim.stop();
    rt.shutdown(Duration::from_secs(5));
    Ok(steps as f64 / secs)
}

/// Runs `cmd` (output discarded unless it fails); its wall time in seconds.
fn timed(cmd: &mut Command, what: &str) -> Result<f64, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(secs)
}

/// Writes `frames` frames of `positions` with a `CacheWriter`, fsynced; seconds.
fn write_cache(path: &Path, frames: usize, positions: &[f32]) -> Result<f64, String> {
    let _ = std::fs::remove_file(path);
    let t = Instant::now();
    let mut w = CacheWriter::create(path).map_err(|e| e.to_string())?;
    for step in 0..frames {
        w.write(
            step as u64,
            "particles/positions",
            &[Payload::Array(ArrayView::packed(positions, 3))],
        )
        .map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

/// `dd`: `frames` sequential writes of `buf`, then `sync_data`; seconds.
fn write_raw(path: &Path, frames: usize, buf: &[u8]) -> Result<f64, String> {
    let _ = std::fs::remove_file(path);
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let t = Instant::now();
    let mut f = File::create(path).map_err(io)?;
    for _ in 0..frames {
        f.write_all(buf).map_err(io)?;
    }
    f.sync_data().map_err(io)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Opens the cache and reads every frame with its checksums checked; seconds.
fn read_cache(path: &Path) -> Result<f64, String> {
    let t = Instant::now();
    let cache = Cache::open(path).map_err(|e| e.to_string())?;
    let mut first = 0.0f32;
    for i in 0..cache.len() {
        let frame = cache.frame(i).map_err(|e| e.to_string())?;
        first += frame.array::<f32>(0).ok_or("no positions")?[0];
    }
    black_box(first);
    Ok(t.elapsed().as_secs_f64())
}

/// Opens the cache and touches one float per 4 KiB page of every frame, unchecked; seconds.
fn touch_cache(path: &Path) -> Result<f64, String> {
    let t = Instant::now();
    let cache = Cache::open(path).map_err(|e| e.to_string())?;
    let mut acc = 0.0f32;
    for i in 0..cache.len() {
        let frame = cache.frame_unverified(i).map_err(|e| e.to_string())?;
        let xyz = frame.array::<f32>(0).ok_or("no positions")?;
        acc += xyz.iter().step_by(1024).sum::<f32>();
    }
    black_box(acc);
    Ok(t.elapsed().as_secs_f64())
}

/// `dd`: the whole file through `read` into one frame-sized buffer; seconds.
fn read_raw(path: &Path) -> Result<f64, String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut buf = vec![0u8; FRAME_BYTES];
    let t = Instant::now();
    let mut f = File::open(path).map_err(io)?;
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        total += n;
        black_box(buf[0]);
    }
    black_box(total);
    Ok(t.elapsed().as_secs_f64())
}

/// Drops `path`'s (clean) pages from the page cache: that file's only, no root needed.
fn drop_from_page_cache(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: a valid open fd; the advice only drops clean cached pages of this file.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "posix_fadvise: {}",
            std::io::Error::from_raw_os_error(r)
        ))
    }
}

/// A sum the compiler vectorizes (eight independent lanes).
fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// [`sum`] over bytes read as little-endian `f32`s (what the `pread` peer gets).
fn sum_bytes_as_f32(b: &[u8]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for c in b.chunks_exact(32) {
        for (l, x) in lanes.iter_mut().zip(c.chunks_exact(4)) {
            *l += f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        }
    }
    lanes.iter().sum()
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher–Yates.
    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// A directory of the bench's own, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(path: PathBuf) -> Result<Scratch, String> {
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The workspace root (the bench crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The particles plugin and the worker program beside this program, built as the isolation
/// rows build them.
fn programs() -> Result<(PathBuf, PathBuf), String> {
    crate::isolation::programs()
}
