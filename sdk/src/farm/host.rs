//! The host's side of a farm: a farm run as a hostloop job, and a frame cache played back like
//! a live simulation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Chain, ChainSpec, ChainStatus, Farm};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::job::Job;
use crate::sim::{SimControl, SimOptions, Simulation, StepContext};
use crate::sink::Payload;

/// How often a farm job asks the farm where its chain is.
const POLL: Duration = Duration::from_millis(250);

/// What a finished farm run gives the host: see [`Handle::run_on_farm`].
#[derive(Debug, Clone)]
pub struct FarmOutcome {
    /// The chain that ran.
    pub chain: Chain,
    /// Its final state (restore it in a host, or start the next chain from it).
    pub state: PathBuf,
    /// The frame cache the segments wrote, if any: play it with [`Handle::play_cache`].
    pub cache: Option<PathBuf>,
    /// The chain's last status.
    pub status: ChainStatus,
}

impl Handle {
    /// Runs `spec` on `farm` as a job of this runtime (on the IO lane: it waits on the farm's
    /// commands, never on a CPU worker). The job submits the chain, then asks the farm where it
    /// is every 250 ms and reports it as the job's progress — the fraction of the steps done,
    /// with a message such as `segment 2/4, step 1800 of 4000` — which reaches the host on
    /// its main thread through [`Job::on_progress`], woken by the doorbell like any job: the
    /// host never polls. It finishes with a [`FarmOutcome`] once every segment completed, or
    /// fails with the first segment's failure. Cancelling the job cancels the farm's jobs.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] if the job cannot be queued. The job's own errors: the farm's
    /// refusal to submit, a segment's failure, [`Error::Cancelled`].
    pub fn run_on_farm<F>(&self, farm: F, spec: ChainSpec) -> Result<Job<FarmOutcome>>
    where
        F: Farm + Send + 'static,
    {
        self.job().io().name("farm run").spawn(move |ctx| {
            let chain = Chain::submit(&farm, &spec).map_err(Error::failed)?;
            let start = spec.restore.as_ref().map_or(0, |r| r.1);
            let total = chain.until.saturating_sub(start).max(1);
            let mut next = Instant::now();
            loop {
                if ctx.is_cancelled() {
                    let _ = chain.cancel(&farm);
                    return Err(Error::Cancelled);
                }
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                next = Instant::now() + POLL;
                let status = chain.status(&farm).map_err(Error::failed)?;
                if let Some((i, why)) = &status.failed {
                    return Err(Error::failed(format!("segment {}: {why}", i + 1)));
                }
                let step = status.step.unwrap_or(start);
                let fraction = step.saturating_sub(start) as f32 / total as f32;
                let running = (status.done + 1).min(status.segments);
                ctx.progress_with(
                    if status.is_finished() {
                        1.0
                    } else {
                        fraction.min(0.999)
                    },
                    &format!(
                        "segment {running}/{}, step {step} of {}",
                        status.segments, chain.until
                    ),
                );
                if status.is_finished() {
                    return Ok(FarmOutcome {
                        state: chain.final_state().to_path_buf(),
                        cache: chain.cache.clone(),
                        chain,
                        status,
                    });
                }
            }
        })
    }

    /// Plays a frame cache as a simulation named `name`: its frames reach the sink with the
    /// topics they were written with, each step's after a `<name>/step` message (the step, and
    /// configuration 0), exactly as the simulation's own frames did live — a host shows a farm's
    /// result with the code that shows a live simulation. Playback is the simulation driver's:
    /// the returned [`SimControl`] plays, pauses, seeks (scrubbing backwards included), sets the
    /// rate, follows the host's frame in lock-step ([`SimOptions::lockstep`]); step `k` shows
    /// the cache's last frames at a step not after `k`. Payloads are sent from the cache's
    /// memory map, not copied. Playing past the cache's last step stops with an error saying
    /// where it ends (see [`SimControl::last_error`]).
    ///
    /// The cache is read as it was when opened: open it again for frames written since.
    ///
    /// # Errors
    ///
    /// As [`Handle::simulate`].
    pub fn play_cache(
        &self,
        cache: Arc<Cache>,
        name: &str,
        options: SimOptions,
    ) -> Result<SimControl> {
        let steps = CacheSteps::new(&cache);
        let step_topic = format!("{name}/step");
        self.simulate(
            steps,
            options,
            move |shown: &Option<(usize, usize)>, info, main| {
                let _ = main.emit(
                    &step_topic,
                    Payload::Bytes(&[info.step.to_le_bytes(), 0u64.to_le_bytes()].concat()),
                );
                let Some((first, end)) = *shown else {
                    return;
                };
                for i in first..end {
                    let Ok(frame) = cache.frame_unverified(i) else {
                        continue;
                    };
                    for p in 0..frame.len() {
                        if let Some(m) = frame.message(p) {
                            let _ = main.emit(m.topic, m.payload);
                        }
                    }
                }
            },
        )
    }
}

/// A cache as a simulation: its state is a step number; its frame, the run of cache frames of
/// the last cached step not after it.
struct CacheSteps {
    step: u64,
    /// Each run of consecutive cache frames of one step: (step, first, end), sorted by step.
    runs: Vec<(u64, usize, usize)>,
}

impl CacheSteps {
    fn new(cache: &Cache) -> CacheSteps {
        let mut runs: Vec<(u64, usize, usize)> = Vec::new();
        for i in 0..cache.len() {
            let step = cache.step(i).unwrap_or(0);
            match runs.last_mut() {
                Some(r) if r.0 == step => r.2 = i + 1,
                _ => runs.push((step, i, i + 1)),
            }
        }
        // A cache written in step order is already sorted; one that is not plays in step order
        // (a step written twice plays its last run).
        runs.sort_by_key(|r| (r.0, r.1));
        CacheSteps { step: 0, runs }
    }

    fn last_step(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.0)
    }
}

impl Simulation for CacheSteps {
    type Frame = Option<(usize, usize)>;

    fn step(&mut self, _ctx: &StepContext<'_>) -> Result<()> {
        if self.step >= self.last_step() {
            return Err(Error::failed(format!(
                "the cache ends at step {}",
                self.last_step()
            )));
        }
        self.step += 1;
        Ok(())
    }

    fn frame(&self) -> Self::Frame {
        let i = self
            .runs
            .partition_point(|r| r.0 <= self.step)
            .checked_sub(1)?;
        let (_, first, end) = self.runs[i];
        Some((first, end))
    }

    fn reset(&mut self) {
        self.step = 0;
    }
}
