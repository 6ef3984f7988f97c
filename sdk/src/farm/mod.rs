//! Running simulations away from the host: the headless runner (`hostloop-worker run`), the
//! unit of work a farm schedules, and farm backends that schedule it.
//!
//! The runner steps a simulation plugin to a step, saving its state (a snapshot a later run, or
//! a host, restores) and appending its frames to a [`cache`](crate::cache) on the way. A long
//! simulation becomes a [`Chain`] of runs, each restoring the state the previous one saved, so a
//! scheduler can stop one (pre-emption, a time limit) and start it again — elsewhere — without
//! losing more than the steps since its last snapshot. See `hostloop-worker run --help`.
//!
//! A host runs a chain as a job of its runtime ([`Handle::run_on_farm`](crate::Handle::run_on_farm)):
//! its progress and its outcome reach the main thread like any job's, and cancelling the job
//! cancels the farm's jobs. [`Handle::play_cache`](crate::Handle::play_cache) then plays the
//! chain's frame cache through the sink with the simulation's own topics. A C or C++ host does
//! the same with `hl_farm_run` (`include/hostloop/farm.h`, `hostloop::FarmRun` in
//! `hostloop.hpp`).
//!
//! A backend is a [`Farm`]: submit a job (a command line, after another job), ask its state,
//! cancel it, requeue it. [`Slurm`] drives a Slurm cluster through its own commands (`sbatch`,
//! `scontrol`, `scancel`); a second backend implements the same five methods.
//!
//! For a studio's own scheduler, [`openjd_template`] writes the same chain as an Open Job
//! Description job template (`hostloop-worker openjd`), which AWS Deadline Cloud takes as it
//! is and `openjd run` runs locally; its docs say how OpenCue, Tractor and Houdini PDG would
//! wrap the same command lines.
//!
//! ```no_run
//! use hostloop::farm::{Chain, ChainSpec, Slurm};
//!
//! let farm = Slurm::new(); // uses SLURM_CONF and the PATH's sbatch, like the Slurm commands
//! let spec = ChainSpec::new("target/release/hostloop-worker", "libhostloop_particles.so", "/shared/run1")
//!     .configure("agents=1000000")
//!     .steps(5000)
//!     .segments(4)
//!     .save_every(100);
//! let chain = Chain::submit(&farm, &spec)?;
//! let status = chain.status(&farm)?; // segments done, the step reached, failures
//! # let _ = status;
//! # Ok::<(), hostloop::farm::FarmError>(())
//! ```

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

mod host;
pub(crate) mod openjd;
#[cfg(unix)]
pub(crate) mod runner;
mod slurm;

pub use host::FarmOutcome;
pub use openjd::openjd_template;
pub use slurm::Slurm;

/// What went wrong with a farm: the command that failed and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmError(pub String);

impl fmt::Display for FarmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FarmError {}

/// A job's id on its farm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FarmJobId(pub String);

impl fmt::Display for FarmJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One job for a farm: a command line, run in `dir`, its output in `log`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Shown in the farm's queue.
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// The working directory (on a filesystem every node sees).
    pub dir: PathBuf,
    /// Where its stdout and stderr go (appended to across requeues).
    pub log: PathBuf,
    /// Start only once this job has completed successfully; if it fails, this one never runs.
    pub after: Option<FarmJobId>,
    /// CPUs to give it.
    pub cpus: u32,
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting: for its dependency, for a node, or to be started again after a requeue.
    Pending,
    /// Running on a node.
    Running,
    /// Finished with exit status 0.
    Completed,
    /// Finished otherwise, or will never run (its dependency failed): why.
    Failed(String),
    /// Cancelled.
    Cancelled,
    /// The farm does not know the job (any more).
    Unknown,
}

impl JobState {
    /// Whether the job will not change state again.
    pub fn is_final(&self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }
}

/// A farm backend. See the [module docs](self).
pub trait Farm {
    /// Submits a job; returns its id.
    ///
    /// # Errors
    ///
    /// The farm refused it or could not be reached: the command and what it said.
    fn submit(&self, job: &JobSpec) -> Result<FarmJobId, FarmError>;
    /// Where the job is now, and how many times it was started again after a requeue.
    ///
    /// # Errors
    ///
    /// The farm could not be asked.
    fn state(&self, id: &FarmJobId) -> Result<(JobState, u32), FarmError>;
    /// Cancels the job (running or waiting).
    ///
    /// # Errors
    ///
    /// The farm could not be asked or refused.
    fn cancel(&self, id: &FarmJobId) -> Result<(), FarmError>;
    /// Stops a running job and puts it back in the queue, to start again as soon as it can —
    /// what a pre-emption does. A job run by `hostloop-worker run --resume` saves at its next
    /// step boundary when stopped and goes on from there. Returns once the job waits to start
    /// again (the stopped run has ended).
    ///
    /// # Errors
    ///
    /// The farm could not be asked or refused (the job is not running or waiting).
    fn requeue(&self, id: &FarmJobId) -> Result<(), FarmError>;
}

/// A simulation run as a chain of runner jobs: what [`Chain::submit`] submits.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    worker: PathBuf,
    plugin: PathBuf,
    dir: PathBuf,
    configure: Option<String>,
    restore: Option<(PathBuf, u64)>,
    steps: u64,
    segments: u32,
    save_every: Option<u64>,
    cache: bool,
    cpus: u32,
}

impl ChainSpec {
    /// A chain running `plugin` with the `hostloop-worker` program `worker`, its files (states,
    /// the cache, logs) in `dir` — a directory every node of the farm sees. By default: 1,000
    /// steps in one segment from the plugin's default configuration, frames cached.
    pub fn new(
        worker: impl Into<PathBuf>,
        plugin: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
    ) -> ChainSpec {
        ChainSpec {
            worker: worker.into(),
            plugin: plugin.into(),
            dir: dir.into(),
            configure: None,
            restore: None,
            steps: 1000,
            segments: 1,
            save_every: None,
            cache: true,
            cpus: 1,
        }
    }

    /// The configuration of a fresh start (`hostloop-worker run --configure`).
    pub fn configure(mut self, text: impl Into<String>) -> Self {
        self.configure = Some(text.into());
        self
    }

    /// Start from a saved state instead (`--restore`), which is at step `at_step` (the step of
    /// the frame the host saw when it saved): the segments' targets are steps from there.
    pub fn restore(mut self, state: impl Into<PathBuf>, at_step: u64) -> Self {
        self.restore = Some((state.into(), at_step));
        self
    }

    /// Steps in all, from the start state.
    pub fn steps(mut self, steps: u64) -> Self {
        self.steps = steps;
        self
    }

    /// Into how many chained jobs the steps are split (at least 1).
    pub fn segments(mut self, segments: u32) -> Self {
        self.segments = segments.max(1);
        self
    }

    /// Each job also saves every `k` steps: a requeued job loses at most `k` steps.
    pub fn save_every(mut self, k: u64) -> Self {
        self.save_every = Some(k.max(1));
        self
    }

    /// Whether to write frames to `dir/frames.hlcache` (default: yes).
    pub fn cache(mut self, on: bool) -> Self {
        self.cache = on;
        self
    }

    /// CPUs per job (default 1).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// The step segment `i` runs to. Every target is a step number (`--until`), not a count: a
    /// requeued segment that resumes from its own last snapshot still stops where it should.
    fn segment_until(&self, i: u64) -> u64 {
        let start = self.restore.as_ref().map_or(0, |r| r.1);
        start + self.steps * (i + 1) / u64::from(self.segments)
    }

    /// Segment `i`'s command line, the program first, its paths named rather than written out:
    /// the one list [`Chain::submit`] and [`openjd_template`] both build their commands from.
    fn segment_command(&self, i: u64) -> Vec<Word> {
        let t = |s: &str| Word::Text(s.into());
        let mut words = vec![Word::Worker, t("run"), t("--progress"), t("lines")];
        if i == 0 {
            if self.restore.is_some() {
                words.extend([t("--restore"), Word::Restore]);
            }
            if self.configure.is_some() {
                words.extend([t("--configure"), Word::Configure]);
            }
        } else {
            words.extend([t("--restore"), Word::State(i - 1)]);
        }
        words.extend([t("--until"), Word::Text(self.segment_until(i).to_string())]);
        words.extend([t("--save"), Word::State(i), t("--resume")]);
        if let Some(k) = self.save_every {
            words.extend([t("--save-every"), Word::Text(k.to_string())]);
        }
        if self.cache {
            words.extend([t("--cache"), Word::Cache]);
        }
        words.push(Word::Plugin);
        words
    }

    /// A word of [`ChainSpec::segment_command`] written out with this spec's paths.
    fn word(&self, word: Word) -> OsString {
        match word {
            Word::Text(s) => s.into(),
            Word::Worker => self.worker.clone().into(),
            Word::Plugin => self.plugin.clone().into(),
            Word::Configure => self.configure.clone().unwrap_or_default().into(),
            Word::Restore => self
                .restore
                .as_ref()
                .map(|r| r.0.clone())
                .unwrap_or_default()
                .into(),
            Word::State(i) => self.dir.join(state_file(i)).into(),
            Word::Cache => self.dir.join(CACHE_FILE).into(),
        }
    }
}

/// One word of a segment's command line ([`ChainSpec::segment_command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// Written as it is.
    Text(String),
    /// The `hostloop-worker` program.
    Worker,
    /// The plugin.
    Plugin,
    /// The configuration of a fresh start.
    Configure,
    /// The state the chain starts from.
    Restore,
    /// The state segment `i` saves, in the chain's directory.
    State(u64),
    /// The frame cache, in the chain's directory.
    Cache,
}

/// The name of the state segment `i` saves, in the chain's directory.
fn state_file(i: u64) -> String {
    format!("segment-{i}.state")
}

/// The name of the frame cache every segment appends to, in the chain's directory.
const CACHE_FILE: &str = "frames.hlcache";

/// One job of a [`Chain`].
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its id on the farm.
    pub id: FarmJobId,
    /// The step it runs to.
    pub until: u64,
    /// Where it saves its state (the next segment restores it).
    pub state: PathBuf,
    /// Its log (the runner's progress lines, `step S/T ...`).
    pub log: PathBuf,
}

/// A submitted chain: its segments, in order. See [`ChainSpec`].
#[derive(Debug, Clone)]
pub struct Chain {
    /// The jobs, in order; each starts after the one before completed.
    pub segments: Vec<Segment>,
    /// The frame cache every segment appends to, if any.
    pub cache: Option<PathBuf>,
    /// The step the last segment ends at.
    pub until: u64,
}

/// Where a [`Chain`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    /// Segments completed.
    pub done: usize,
    /// Segments in all.
    pub segments: usize,
    /// The latest step a segment's log reports (`None` before the first report).
    pub step: Option<u64>,
    /// Requeues so far, over all segments.
    pub restarts: u32,
    /// The first segment that failed or was cancelled, and why.
    pub failed: Option<(usize, String)>,
}

impl ChainStatus {
    /// Whether the chain is over: every segment completed, or one failed.
    pub fn is_finished(&self) -> bool {
        self.done == self.segments || self.failed.is_some()
    }
}

impl Chain {
    /// Submits `spec` to `farm`: one runner job per segment, each starting after the previous
    /// one completed and restoring its state; each resumes from its own last snapshot when it is
    /// requeued. Nothing is submitted if `dir` cannot be made; a refused submission cancels the
    /// segments already submitted.
    ///
    /// # Errors
    ///
    /// The directory, or the farm's refusal.
    pub fn submit(farm: &dyn Farm, spec: &ChainSpec) -> Result<Chain, FarmError> {
        if spec.configure.is_some() && spec.restore.is_some() {
            return Err(FarmError(
                "a chain starts from a configuration or from a saved state, not both".into(),
            ));
        }
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| FarmError(format!("cannot make {}: {e}", spec.dir.display())))?;
        let cache = spec.cache.then(|| spec.dir.join(CACHE_FILE));
        let mut segments: Vec<Segment> = Vec::new();
        let n = u64::from(spec.segments);
        for i in 0..n {
            let until = spec.segment_until(i);
            let state = spec.dir.join(state_file(i));
            let log = spec.dir.join(format!("segment-{i}.log"));
            let command = spec
                .segment_command(i)
                .into_iter()
                .map(|word| spec.word(word))
                .collect();
            let job = JobSpec {
                name: format!("hostloop-{i}"),
                command,
                dir: spec.dir.clone(),
                log: log.clone(),
                after: segments.last().map(|s| s.id.clone()),
                cpus: spec.cpus,
            };
            match farm.submit(&job) {
                Ok(id) => segments.push(Segment {
                    id,
                    until,
                    state,
                    log,
                }),
                Err(e) => {
                    for s in segments.iter().rev() {
                        let _ = farm.cancel(&s.id);
                    }
                    return Err(e);
                }
            }
        }
        let until = segments.last().map_or(0, |s| s.until);
        Ok(Chain {
            segments,
            cache,
            until,
        })
    }

    /// The state the chain ends with, once it has finished.
    pub fn final_state(&self) -> &Path {
        &self.segments.last().expect("a chain has a segment").state
    }

    /// Where the chain is: asks the farm about every segment and reads the running one's log.
    ///
    /// # Errors
    ///
    /// The farm could not be asked.
    pub fn status(&self, farm: &dyn Farm) -> Result<ChainStatus, FarmError> {
        let mut status = ChainStatus {
            done: 0,
            segments: self.segments.len(),
            step: None,
            restarts: 0,
            failed: None,
        };
        for (i, s) in self.segments.iter().enumerate() {
            let (state, restarts) = farm.state(&s.id)?;
            status.restarts += restarts;
            if let Some(step) = last_reported_step(&s.log) {
                status.step = Some(step);
            }
            match state {
                JobState::Completed => status.done += 1,
                JobState::Failed(why) if status.failed.is_none() => {
                    status.failed = Some((i, format!("job {} failed: {why}", s.id)));
                }
                JobState::Cancelled if status.failed.is_none() => {
                    status.failed = Some((i, format!("job {} was cancelled", s.id)));
                }
                JobState::Unknown if status.failed.is_none() => {
                    status.failed = Some((i, format!("the farm no longer knows job {}", s.id)));
                }
                _ => {}
            }
        }
        Ok(status)
    }

    /// Cancels every segment not finished yet.
    ///
    /// # Errors
    ///
    /// The first refusal; the other segments are still cancelled.
    pub fn cancel(&self, farm: &dyn Farm) -> Result<(), FarmError> {
        let mut first = None;
        for s in self.segments.iter().rev() {
            if let Err(e) = farm.cancel(&s.id) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The step of the last `step S/T` progress line in a runner's log.
fn last_reported_step(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let rest = l.split("step ").nth(1)?;
        rest.split('/').next()?.trim().parse().ok()
    })
}
