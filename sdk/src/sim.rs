//! Simulations: state stepped in parallel on the pool by a driver, frames delivered to the
//! main thread.
//!
//! A [`Simulation`] owns its state (agents as plain structs or columns in `Vec`s — an agent costs
//! its own bytes) and advances it in [`Simulation::step`], fanning out with
//! [`StepContext::parallel_for`]. [`Handle::simulate`] starts a driver thread that owns the
//! simulation, obeys [`SimControl`] (play, pause, step, seek, reset, rate, lock-step with the
//! host's frame) and publishes a frame after each step:
//!
//! * [`Delivery::Latest`] (interactive playback): frames go through a triple buffer
//!   ([`crate::internal::latest::latest`]); the main thread sees the newest finished frame at each pump and
//!   frames it was too slow for are skipped. The simulation never waits for the host.
//! * [`Delivery::Every`] (cache export): every frame is delivered, in order, through a bounded
//!   queue; when the host stops pumping the simulation waits — nothing lost, memory bounded.
//!
//! Frame buffers are reused in both modes: no allocation per frame in steady state.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::event::{Event, EventFilter, EventKind};
use crate::handle::Handle;
use crate::internal::latest::{latest, LatestReader};
use crate::internal::panic::catch;
use crate::internal::sync::lock;
use crate::main_thread::{post_task, Main, MainTask};
use crate::snapshot::{SnapshotReader, SnapshotWriter};
use crate::stream::TrySendError;

/// A simulation the driver steps. See the [module docs](self).
pub trait Simulation: Send + 'static {
    /// What the main thread receives after each step (positions, colours…). Buffers are reused:
    /// [`Simulation::write_frame`] overwrites one in place.
    type Frame: Clone + Send + 'static;

    /// Advances the state by one step. It runs on one of the pool's workers (the driver thread
    /// only waits), and `ctx.parallel_for` fans out over the others: a playing simulation
    /// keeps to the pool's cores, and the host's main thread keeps its own.
    ///
    /// # Errors
    ///
    /// Any error pauses the driver and is kept in [`SimControl::last_error`] (and reaches
    /// [`SimControl::on_error`]).
    fn step(&mut self, ctx: &StepContext<'_>) -> Result<()>;

    /// A new frame of the current state. Called a few times, to make the reused buffers.
    fn frame(&self) -> Self::Frame;

    /// Writes the current state into `frame`, a buffer made by [`Simulation::frame`] and
    /// reused. The default makes a new frame; override it to overwrite in place (no allocation
    /// per frame).
    fn write_frame(&self, frame: &mut Self::Frame) {
        *frame = self.frame();
    }

    /// Returns to the initial state (step 0).
    fn reset(&mut self);

    /// The kind written into this simulation's snapshots; a snapshot of another kind is
    /// refused on restore.
    const SNAPSHOT_KIND: &'static str = "hostloop-sim";

    /// The schema version of [`Simulation::save`]'s output. Restore accepts this version and
    /// older ones ([`SnapshotReader::version`] tells which, for migrating).
    const SNAPSHOT_VERSION: u32 = 1;

    /// Writes the state (at a step boundary) for [`SimControl::save`]. The default refuses:
    /// implement it (with [`Simulation::restore`]) to make the simulation resumable — after a
    /// hot reload, in a later session, or on another machine.
    ///
    /// # Errors
    ///
    /// The default returns [`Error::InvalidArgument`].
    fn save(&self, out: &mut SnapshotWriter) -> Result<()> {
        let _ = out;
        Err(Error::InvalidArgument(
            "this simulation does not implement save",
        ))
    }

    /// Replaces the state with one written by [`Simulation::save`]. When this is called the
    /// snapshot's checksum, lengths, kind and version are already verified, so a read fails
    /// only on a schema mismatch; read every field before replacing any state, so that an error
    /// leaves the simulation as it was.
    ///
    /// # Errors
    ///
    /// A malformed or foreign snapshot ([`crate::snapshot::SnapshotError`] converts with `?`);
    /// the default returns [`Error::InvalidArgument`].
    fn restore(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let _ = input;
        Err(Error::InvalidArgument(
            "this simulation does not implement restore",
        ))
    }
}

/// What a step sees: the runtime's pool and the step's index.
pub struct StepContext<'a> {
    handle: &'a Handle,
    step: u64,
}

impl fmt::Debug for StepContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("step", &self.step)
            .finish()
    }
}

impl StepContext<'_> {
    /// The index of the step being computed (0 for the first step after a reset).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The runtime.
    pub fn handle(&self) -> &Handle {
        self.handle
    }

    /// [`Handle::parallel_for`] on the runtime's pool.
    pub fn parallel_for<F>(&self, range: Range<usize>, grain: usize, f: F)
    where
        F: Fn(Range<usize>) + Sync,
    {
        self.handle.parallel_for(range, grain, f);
    }

    /// [`Handle::parallel_for_mut`] on the runtime's pool.
    pub fn parallel_for_mut<T, F>(&self, data: &mut [T], grain: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        self.handle.parallel_for_mut(data, grain, f);
    }
}

/// Decides which agents step on a given step: skip or thin agents that do not matter now
/// (not visible, far from the camera, asleep). Implemented by closures
/// `Fn(index, &agent, step) -> bool`, and by [`EveryStep`] and [`Thin`].
pub trait Schedule<A>: Sync {
    /// Whether agent `index` steps on step `step`.
    fn steps(&self, index: usize, agent: &A, step: u64) -> bool;
}

impl<A, F: Fn(usize, &A, u64) -> bool + Sync> Schedule<A> for F {
    fn steps(&self, index: usize, agent: &A, step: u64) -> bool {
        self(index, agent, step)
    }
}

/// Every agent steps on every step.
#[derive(Debug, Clone, Copy, Default)]
pub struct EveryStep;

impl<A> Schedule<A> for EveryStep {
    fn steps(&self, _: usize, _: &A, _: u64) -> bool {
        true
    }
}

/// Agents for which `visible` is true step on every step; the others only on every `k`-th
/// (staggered by index, so the work spreads evenly over the `k` steps).
#[derive(Debug, Clone, Copy)]
pub struct Thin<V> {
    /// The test for "matters now".
    pub visible: V,
    /// How often the others step (1 = always).
    pub k: u64,
}

impl<A, V: Fn(&A) -> bool + Sync> Schedule<A> for Thin<V> {
    fn steps(&self, index: usize, agent: &A, step: u64) -> bool {
        (self.visible)(agent) || self.k <= 1 || (index as u64 + step).is_multiple_of(self.k)
    }
}

impl StepContext<'_> {
    /// Steps each agent that `schedule` selects with `update(index, agent)`, in parallel chunks
    /// of `grain` agents (0 = automatic). This is "every agent has its own logic": an agent is a
    /// plain value (typically an enum state machine), stepped in place — it costs its own bytes.
    /// Returns how many agents stepped.
    pub fn step_agents<A, S, F>(
        &self,
        agents: &mut [A],
        grain: usize,
        schedule: &S,
        update: F,
    ) -> usize
    where
        A: Send,
        S: Schedule<A> + ?Sized,
        F: Fn(usize, &mut A) + Sync,
    {
        let stepped = std::sync::atomic::AtomicUsize::new(0);
        let step = self.step;
        self.parallel_for_mut(agents, grain, |offset, chunk| {
            let mut n = 0;
            for (k, agent) in chunk.iter_mut().enumerate() {
                let i = offset + k;
                if schedule.steps(i, agent, step) {
                    update(i, agent);
                    n += 1;
                }
            }
            stepped.fetch_add(n, Ordering::Relaxed);
        });
        stepped.into_inner()
    }
}

/// How frames reach the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The newest frame at each pump; older ones are skipped; the simulation never waits.
    Latest,
    /// Every frame in order; at most `capacity` wait for the main thread, then the simulation
    /// waits for the host.
    Every {
        /// Frames that may wait for a pump.
        capacity: usize,
    },
}

/// Options for [`Handle::simulate`].
#[derive(Clone)]
pub struct SimOptions {
    /// Names the driver thread (`<name>`), for debuggers and profilers.
    pub name: String,
    /// How frames reach the main thread (default [`Delivery::Latest`]).
    pub delivery: Delivery,
    /// Steps per second while playing; `None` runs as fast as it can (default).
    pub rate: Option<f64>,
    /// Start playing at once (default `false`: paused at step 0, its frame published).
    pub playing: bool,
    /// Follow the host's frame: each [`Event::FrameChanged`] seeks to that frame (default
    /// `false`).
    pub lockstep: bool,
    /// Start from this snapshot (from [`SimControl::save`], in this or another process)
    /// instead of the initial state: the first frame shown is the snapshot's step (default
    /// `None`). A plugin's `restore_state` resumes this way.
    pub resume: Option<Vec<u8>>,
}

impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("name", &self.name)
            .field("delivery", &self.delivery)
            .field("rate", &self.rate)
            .field("playing", &self.playing)
            .field("lockstep", &self.lockstep)
            .field(
                "resume",
                &self.resume.as_ref().map(|s| format!("{} bytes", s.len())),
            )
            .finish()
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            name: "hostloop-sim".to_owned(),
            delivery: Delivery::Latest,
            rate: None,
            playing: false,
            lockstep: false,
            resume: None,
        }
    }
}

/// Which step a delivered frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Steps taken since the last reset (0 = the initial state).
    pub step: u64,
}

/// What [`SimControl::save`] calls on the main thread with the snapshot.
type SaveDone = Box<dyn FnOnce(Result<Vec<u8>>, &mut Main<'_>) + Send>;

/// Where a snapshot goes: to a main-thread callback, or straight back to a waiting caller.
enum SaveTo {
    Main(SaveDone),
    Caller(Sender<Result<Vec<u8>>>),
}

enum Command {
    Play,
    Pause,
    Step(u64),
    Seek(u64),
    Reset,
    Rate(Option<f64>),
    Save(SaveTo),
    /// The snapshot, and who waits to hear that it was applied.
    Restore(Vec<u8>, Option<Sender<Result<()>>>),
    /// Changes the simulation's own parameters; a type mismatch is an error.
    Edit(EditFn),
    Stop,
}

/// What [`SimControl::edit`] sends: applied to the simulation as `dyn Any`.
type EditFn = Box<dyn FnOnce(&mut dyn std::any::Any) -> Result<()> + Send>;

/// What [`SimControl::on_error`] registers.
type OnError = Arc<Mutex<Box<dyn FnMut(&str, &mut Main<'_>) + Send>>>;

#[derive(Default)]
struct SimState {
    step: AtomicU64,
    playing: AtomicBool,
    stopped: AtomicBool,
    error: Mutex<Option<String>>,
    on_error: Mutex<Option<OnError>>,
}

/// Controls a running simulation. Cloneable; commands are applied between steps, in order.
/// When the last `SimControl` is dropped, the simulation stops.
#[derive(Clone)]
pub struct SimControl {
    tx: Sender<Command>,
    state: Arc<SimState>,
}

impl fmt::Debug for SimControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimControl")
            .field("step", &self.step())
            .field("playing", &self.is_playing())
            .finish()
    }
}

impl SimControl {
    fn send(&self, c: Command) {
        // A stopped driver has dropped its receiver: commands to it are moot.
        let _ = self.tx.send(c);
    }
    /// Runs continuously (at the rate, if one is set).
    pub fn play(&self) {
        self.send(Command::Play);
    }
    /// Stops stepping (and cancels pending single steps).
    pub fn pause(&self) {
        self.send(Command::Pause);
    }
    /// Takes `n` more steps, then holds (while paused).
    pub fn step_by(&self, n: u64) {
        self.send(Command::Step(n));
    }
    /// Goes to step `target` by stepping (resetting first if it lies behind) and publishes only
    /// that step's frame.
    pub fn seek(&self, target: u64) {
        self.send(Command::Seek(target));
    }
    /// Back to step 0 (the frame is published).
    pub fn reset(&self) {
        self.send(Command::Reset);
    }
    /// Steps per second while playing; `None` = unlimited.
    pub fn set_rate(&self, rate: Option<f64>) {
        self.send(Command::Rate(rate));
    }
    /// Snapshots the simulation at the next step boundary — after a seek or `step_by` sent
    /// before it has completed; `done` receives the bytes (or why not) on the main thread at a
    /// pump. The snapshot holds the step count and the state
    /// written by [`Simulation::save`], in the [`crate::snapshot`] format.
    pub fn save<F>(&self, done: F)
    where
        F: FnOnce(Result<Vec<u8>>, &mut Main<'_>) + Send + 'static,
    {
        self.send(Command::Save(SaveTo::Main(Box::new(done))));
    }

    /// Snapshots the simulation at the next step boundary (in command order, like
    /// [`SimControl::save`]) and returns the bytes, waiting up to `timeout`. No pump is needed,
    /// so a plugin's `save_state` can call it on the main thread. Send
    /// [`pause`](SimControl::pause) first to keep the simulation at the saved step.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the driver did not get there in time (an `Every` simulation waiting
    /// for the main thread to take a frame cannot), [`Error::ShutDown`] if it stopped, or the
    /// simulation's own save error.
    pub fn save_now(&self, timeout: Duration) -> Result<Vec<u8>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Save(SaveTo::Caller(tx)));
        wait_reply(&rx, timeout)
    }

    /// Restores a snapshot at the next step boundary and waits (up to `timeout`) until it is
    /// applied and its frame published. The main-thread counterpart of
    /// [`save_now`](SimControl::save_now), for a plugin's `restore_state`.
    ///
    /// # Errors
    ///
    /// As [`save_now`](SimControl::save_now); a damaged or foreign snapshot is refused with
    /// its reason (and changes nothing).
    pub fn restore_now(&self, snapshot: Vec<u8>, timeout: Duration) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Restore(snapshot, Some(tx)));
        wait_reply(&rx, timeout)
    }

    /// Replaces the state with a snapshot from [`SimControl::save`] (of this or another run, on
    /// this or another machine) at the next step boundary, then publishes its frame. A damaged,
    /// truncated or foreign snapshot is refused before the simulation sees it and changes
    /// nothing; the reason is in [`SimControl::last_error`].
    pub fn restore(&self, snapshot: Vec<u8>) {
        self.send(Command::Restore(snapshot, None));
    }

    /// Changes the running simulation at the next step boundary, in command order: `f`
    /// receives the simulation itself (`S` must be the type given to
    /// [`Handle::simulate`]), e.g. to move a camera or a goal from a UI event. A wrong `S`, or a
    /// panic in `f`, changes nothing and is kept in [`SimControl::last_error`].
    pub fn edit<S, F>(&self, f: F)
    where
        S: Simulation,
        F: FnOnce(&mut S) + Send + 'static,
    {
        self.send(Command::Edit(Box::new(move |sim| {
            match sim.downcast_mut::<S>() {
                Some(sim) => {
                    f(sim);
                    Ok(())
                }
                None => Err(Error::InvalidArgument(
                    "SimControl::edit: not the type of this simulation",
                )),
            }
        })));
    }

    /// For a plugin's [`save_state`](crate::plugin::Plugin::save_state): pauses the
    /// simulation, so the saved step is the last one this build takes, and writes its
    /// snapshot into `out` (see [`save_now`](SimControl::save_now)).
    ///
    /// # Errors
    ///
    /// As [`save_now`](SimControl::save_now).
    pub fn save_into(&self, out: &mut SnapshotWriter, timeout: Duration) -> Result<()> {
        self.pause();
        let snapshot = self.save_now(timeout)?;
        out.bytes(&snapshot);
        Ok(())
    }

    /// For a plugin's [`restore_state`](crate::plugin::Plugin::restore_state): reads a
    /// snapshot written by [`save_into`](SimControl::save_into) and restores it (see
    /// [`restore_now`](SimControl::restore_now)). The simulation stays paused; call
    /// [`play`](SimControl::play) to go on.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] if `input` holds no snapshot there; as
    /// [`restore_now`](SimControl::restore_now).
    pub fn restore_from(&self, input: &mut SnapshotReader<'_>, timeout: Duration) -> Result<()> {
        let snapshot = input.bytes().map_err(Error::failed)?.to_vec();
        self.restore_now(snapshot, timeout)
    }

    /// Ends the simulation; its driver thread exits after the current step.
    pub fn stop(&self) {
        self.send(Command::Stop);
    }
    /// Steps taken since the last reset.
    pub fn step(&self) -> u64 {
        self.state.step.load(Ordering::Acquire)
    }
    /// Whether it is playing.
    pub fn is_playing(&self) -> bool {
        self.state.playing.load(Ordering::Acquire)
    }
    /// Whether the driver has exited (stopped, or the runtime shut down).
    pub fn is_stopped(&self) -> bool {
        self.state.stopped.load(Ordering::Acquire)
    }
    /// The error (or panic) of the last failed step, if any; a failed step pauses the driver.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state.error).clone()
    }
    /// Calls `f(message, main)` on the main thread, at a pump, each time a step fails or
    /// panics (the driver has paused), e.g. to tell the artist or forward it to the host sink.
    /// Replaces an earlier callback. A panic in `f` is caught.
    pub fn on_error<F>(&self, f: F)
    where
        F: FnMut(&str, &mut Main<'_>) + Send + 'static,
    {
        *lock(&self.state.on_error) = Some(Arc::new(Mutex::new(Box::new(f))));
    }
}

fn wait_reply<T>(rx: &Receiver<Result<T>>, timeout: Duration) -> Result<T> {
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::Timeout),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::ShutDown),
    }
}

type OnFrame<F> = Box<dyn FnMut(&F, FrameInfo, &mut Main<'_>) + Send>;
/// The main thread's end of a `Latest` simulation: its reader and frame callback.
type LatestEnd<F> = Arc<Mutex<(LatestReader<(u64, F)>, OnFrame<F>)>>;

/// Where the driver publishes frames.
enum Publisher<F: Clone + Send + 'static> {
    Latest {
        writer: crate::internal::latest::LatestWriter<(u64, F)>,
        reader: LatestEnd<F>,
        queued: Arc<AtomicBool>,
    },
    Every {
        tx: crate::stream::StreamSender<(u64, F)>,
        spare: Receiver<F>,
        prototype: F,
    },
}

/// The simulation driver threads of one runtime, so that a plugin's runtime can wait for them
/// at unload: it must not return while a driver still runs the plugin's code.
pub(crate) struct SimThreads {
    /// Each driver thread holds a clone; all gone = every driver has returned from its loop.
    exit_tx: Mutex<Option<Sender<()>>>,
    exit_rx: Receiver<()>,
    /// Kept only where the backend joins them (a plugin's runtime).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl SimThreads {
    pub(crate) fn new() -> Self {
        let (exit_tx, exit_rx) = crossbeam_channel::bounded(0);
        SimThreads {
            exit_tx: Mutex::new(Some(exit_tx)),
            exit_rx,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// A driver's token, dropped when the driver ends; `None` once shut down.
    fn exit_token(&self) -> Option<Sender<()>> {
        lock(&self.exit_tx).clone()
    }

    fn keep(&self, thread: std::thread::JoinHandle<()>) {
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }

    /// Tells the drivers to exit (their runtime's shutdown flag is already raised), waits for
    /// them until `deadline`, joins those that returned and returns how many still ran then.
    pub(crate) fn shutdown(&self, deadline: Instant) -> usize {
        drop(lock(&self.exit_tx).take());
        // Disconnected once every driver's token is dropped, i.e. every driver has returned
        // from its loop (what is left of its thread is the exit path: joined below).
        let all_returned = matches!(
            self.exit_rx.recv_deadline(deadline),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        let threads = std::mem::take(&mut *lock(&self.threads));
        let mut running = 0;
        for t in threads {
            if all_returned || t.is_finished() {
                let _ = t.join();
            } else {
                running += 1;
            }
        }
        running
    }
}

impl Handle {
    /// Starts a driver thread that owns `sim` and steps it on this runtime's pool; `on_frame`
    /// receives its frames on the main thread, at pumps (see [`Delivery`]).
    ///
    /// The initial state (step 0) is published at once.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after shutdown; [`Error::InvalidArgument`] for an `Every` capacity of
    /// 0 or a rate that is not positive; the snapshot's error for a damaged, truncated or
    /// foreign [`SimOptions::resume`]; the OS error if the thread cannot start.
    pub fn simulate<S, F>(&self, sim: S, options: SimOptions, on_frame: F) -> Result<SimControl>
    where
        S: Simulation,
        F: FnMut(&S::Frame, FrameInfo, &mut Main<'_>) + Send + 'static,
    {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(Error::InvalidArgument(
                "rate must be a positive number of steps per second",
            ));
        }
        let mut sim = sim;
        sim.reset();
        let start = match &options.resume {
            Some(snapshot) => restore_into(&mut sim, snapshot)?,
            None => 0,
        };
        let initial = sim.frame();
        let publisher = match options.delivery {
            Delivery::Latest => {
                let (writer, reader) = latest((0u64, initial));
                Publisher::Latest {
                    writer,
                    reader: Arc::new(Mutex::new((
                        reader,
                        Box::new(on_frame) as OnFrame<S::Frame>,
                    ))),
                    queued: Arc::new(AtomicBool::new(false)),
                }
            }
            Delivery::Every { capacity } => {
                if capacity == 0 {
                    return Err(Error::InvalidArgument(
                        "Every needs a capacity of at least 1",
                    ));
                }
                let (spare_tx, spare) = crossbeam_channel::bounded(capacity + 2);
                let mut on_frame = on_frame;
                let tx = self.stream(capacity, move |(step, frame): (u64, S::Frame), main| {
                    on_frame(&frame, FrameInfo { step }, main);
                    // Recycle the buffer; if the driver is gone it is simply dropped.
                    let _ = spare_tx.try_send(frame);
                });
                Publisher::Every {
                    tx,
                    spare,
                    prototype: initial,
                }
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let state = Arc::new(SimState::default());
        state.step.store(start, Ordering::Release);
        let events = options
            .lockstep
            .then(|| self.subscribe_channel(EventFilter::Kind(EventKind::FrameChanged), 64));
        let driver = Driver {
            handle: self.clone(),
            sim,
            rx,
            state: state.clone(),
            publisher,
            playing: options.playing,
            rate: options.rate,
            events,
            deferred: Default::default(),
            after_motion: Default::default(),
            start,
        };
        let sims = &self.shared().sims;
        let exit_token = sims.exit_token().ok_or(Error::ShutDown)?;
        let thread = std::thread::Builder::new()
            .name(options.name.clone())
            .spawn(move || {
                driver.run();
                drop(exit_token);
            })
            .map_err(Error::from)?;
        if self.shared().backend.joins_sim_threads() {
            sims.keep(thread);
        }
        Ok(SimControl { tx, state })
    }
}

struct Driver<S: Simulation> {
    handle: Handle,
    sim: S,
    rx: Receiver<Command>,
    state: Arc<SimState>,
    publisher: Publisher<S::Frame>,
    playing: bool,
    rate: Option<f64>,
    events: Option<(crate::event::Subscription, Receiver<Event>)>,
    /// Commands that arrived while a frame waited for room (`Every`), applied next.
    deferred: std::collections::VecDeque<Command>,
    /// `save`/`restore` that arrived during a seek or `step_by`: applied once it completes,
    /// so they see the state the earlier commands asked for.
    after_motion: std::collections::VecDeque<Command>,
    /// The step it starts at (that of [`SimOptions::resume`]'s snapshot, or 0).
    start: u64,
}

impl<S: Simulation> Driver<S> {
    fn run(mut self) {
        let mut step: u64 = self.start;
        let mut pending: u64 = 0;
        let mut target: Option<u64> = None;
        let mut next_at = Instant::now();
        self.publish(step);
        'run: loop {
            self.state.playing.store(self.playing, Ordering::Release);
            if pending == 0 && target.is_none() && !self.after_motion.is_empty() {
                let ready = std::mem::take(&mut self.after_motion);
                self.deferred.extend(ready);
            }
            // Wait for a command: forever while idle, until the next step is due while playing
            // at a rate, not at all when a step is due now.
            let wait = if !self.deferred.is_empty() || pending > 0 || target.is_some() {
                Some(Duration::ZERO)
            } else if self.playing {
                Some(match self.rate {
                    None => Duration::ZERO,
                    Some(_) => next_at.saturating_duration_since(Instant::now()),
                })
            } else {
                None
            };
            let mut first = true;
            loop {
                let cmd = if let Some(c) = self.deferred.pop_front() {
                    Some(c)
                } else if first {
                    first = false;
                    match self.next_command(wait) {
                        Wake::Command(c) => Some(c),
                        Wake::Seek(f) => Some(Command::Seek(f)),
                        Wake::Nothing => None,
                        Wake::Exit => break 'run,
                    }
                } else {
                    match self.rx.try_recv() {
                        Ok(c) => Some(c),
                        Err(crossbeam_channel::TryRecvError::Empty) => None,
                        Err(crossbeam_channel::TryRecvError::Disconnected) => break 'run,
                    }
                };
                let Some(cmd) = cmd else { break };
                // A save/restore/edit waits for the motion before it; everything after it (but
                // `Stop`) waits behind it, so commands keep their order.
                let moving = pending > 0 || target.is_some();
                let cmd = match cmd {
                    c @ (Command::Save(_) | Command::Restore(..) | Command::Edit(_)) if moving => {
                        self.after_motion.push_back(c);
                        continue;
                    }
                    Command::Stop => Command::Stop,
                    c if !self.after_motion.is_empty() => {
                        self.after_motion.push_back(c);
                        continue;
                    }
                    c => c,
                };
                match cmd {
                    Command::Play => {
                        self.playing = true;
                        next_at = Instant::now();
                    }
                    Command::Pause => {
                        self.playing = false;
                        pending = 0;
                    }
                    Command::Step(n) => pending = pending.saturating_add(n),
                    Command::Seek(f) => {
                        if f < step {
                            self.sim.reset();
                            step = 0;
                            self.state.step.store(0, Ordering::Release);
                        }
                        target = Some(f);
                    }
                    Command::Reset => {
                        self.sim.reset();
                        step = 0;
                        pending = 0;
                        target = None;
                        self.state.step.store(0, Ordering::Release);
                        self.publish(step);
                    }
                    Command::Rate(r) => self.rate = r.filter(|r| *r > 0.0 && r.is_finite()),
                    Command::Save(to) => save_to(&self.handle, &self.sim, step, to),
                    Command::Restore(bytes, reply) => match restore_into(&mut self.sim, &bytes) {
                        Ok(restored) => {
                            step = restored;
                            pending = 0;
                            target = None;
                            self.state.step.store(step, Ordering::Release);
                            self.publish(step);
                            if let Some(tx) = reply {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        Err(e) => {
                            *lock(&self.state.error) = Some(e.to_string());
                            if let Some(tx) = reply {
                                let _ = tx.send(Err(e));
                            }
                        }
                    },
                    Command::Edit(f) => {
                        let sim: &mut dyn std::any::Any = &mut self.sim;
                        let r = catch(|| f(sim)).unwrap_or_else(|p| Err(Error::from_panic(p)));
                        if let Err(e) = r {
                            *lock(&self.state.error) = Some(e.to_string());
                        }
                    }
                    Command::Stop => break 'run,
                }
            }
            if self.handle.is_shut_down() {
                break;
            }
            let seeking = target.is_some_and(|t| t > step);
            if target.is_some() && !seeking {
                // Arrived (or the target was the current step): show it.
                target = None;
                self.publish(step);
                continue;
            }
            let due = seeking
                || pending > 0
                || (self.playing && self.rate.is_none_or(|_| Instant::now() >= next_at));
            if !due {
                continue;
            }
            let ctx = StepContext {
                handle: &self.handle,
                step,
            };
            // The step runs on a worker (this thread only waits): a playing simulation keeps
            // to the pool's cores, and the host's main thread keeps its own.
            let (sim, mut r) = (&mut self.sim, Ok(()));
            let stepped = catch(|| self.handle.run_on_worker(|| r = sim.step(&ctx)));
            let r = stepped.map_err(Error::from_panic).and(r);
            if let Err(e) = r {
                let message = e.to_string();
                if let Some(f) = lock(&self.state.on_error).clone() {
                    let message = message.clone();
                    // Runs at a pump (where panics are caught); lost only if shutting down.
                    let _ = self.handle.post_promised(move |main| {
                        let mut f = lock(&f);
                        (*f)(&message, main)
                    });
                }
                *lock(&self.state.error) = Some(message);
                self.playing = false;
                pending = 0;
                target = None;
                continue;
            }
            // A restored snapshot names its step, and may name the last one there is.
            step = step.saturating_add(1);
            self.state.step.store(step, Ordering::Release);
            if let Some(rate) = self.rate {
                next_at = next_step_at(next_at, rate, Instant::now());
            }
            if seeking {
                continue; // only the target step's frame is shown
            }
            pending = pending.saturating_sub(1);
            if !self.publish(step) {
                break;
            }
        }
        self.state.playing.store(false, Ordering::Release);
        self.state.stopped.store(true, Ordering::Release);
        if let Some((sub, _)) = self.events.take() {
            self.handle.unsubscribe(sub);
        }
    }

    /// Waits up to `wait` (`None`: until something happens) for a command or a host frame.
    fn next_command(&self, wait: Option<Duration>) -> Wake {
        let never = crossbeam_channel::never();
        let events = self.events.as_ref().map_or(&never, |(_, rx)| rx);
        let shutdown = &self.handle.shared().life.shutdown_signal;
        let timeout = match wait {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(self.rx) -> c => c.map_or(Wake::Exit, Wake::Command),
            recv(events) -> e => match e {
                // Lock-step: the host's frame, never before step 0.
                Ok(Event::FrameChanged { frame }) => Wake::Seek(frame.max(0.0) as u64),
                _ => Wake::Nothing,
            },
            recv(shutdown) -> _ => Wake::Exit,
            recv(timeout) -> _ => Wake::Nothing,
        }
    }

    /// Publishes the current state as step `step`'s frame. Returns `false` if the driver must
    /// exit (the runtime shut down while it waited for room).
    fn publish(&mut self, step: u64) -> bool {
        match &mut self.publisher {
            Publisher::Latest {
                writer,
                reader,
                queued,
            } => {
                let sim = &self.sim;
                writer.write(|(s, frame)| {
                    *s = step;
                    sim.write_frame(frame);
                });
                if !queued.swap(true, Ordering::AcqRel) {
                    let (reader, queued) = (reader.clone(), queued.clone());
                    let _ = post_task(
                        self.handle.shared(),
                        MainTask::Once(Box::new(move |main| {
                            queued.store(false, Ordering::Release);
                            let mut guard = lock(&reader);
                            let (reader, on_frame) = &mut *guard;
                            if let Some((step, frame)) = reader.read() {
                                on_frame(frame, FrameInfo { step: *step }, main);
                            }
                        })),
                    );
                }
                true
            }
            Publisher::Every {
                tx,
                spare,
                prototype,
            } => {
                let mut frame = spare.try_recv().unwrap_or_else(|_| prototype.clone());
                self.sim.write_frame(&mut frame);
                let mut item = (step, frame);
                // Back-pressure: wait for the host, but keep obeying `stop` and shutdown.
                loop {
                    match tx.send_timeout(item, Duration::from_millis(20)) {
                        Ok(()) => return true,
                        Err(TrySendError::ShutDown(_)) => return false,
                        Err(TrySendError::Full(back)) => {
                            item = back;
                            if self.rx.is_empty() {
                                continue;
                            }
                            // A command arrived while we wait: only `Stop` interrupts delivery;
                            // others are applied, in order, once this frame is delivered — but
                            // a caller waiting for a snapshot (a plugin's `save_state` on the
                            // main thread, which cannot pump meanwhile) gets this step's state
                            // at once, unless an earlier command would change that state. The
                            // frame of this step stays owed: a restore publishes it again.
                            let unchanged = self.deferred.iter().all(|c| {
                                matches!(c, Command::Play | Command::Pause | Command::Rate(_))
                            });
                            match self.rx.try_recv() {
                                Ok(Command::Stop) => return false,
                                Ok(Command::Save(to @ SaveTo::Caller(_))) if unchanged => {
                                    save_to(&self.handle, &self.sim, step, to)
                                }
                                Ok(other) => self.deferred.push_back(other),
                                Err(_) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Snapshots `sim` at `step` and hands the result to `to`.
fn save_to<S: Simulation>(handle: &Handle, sim: &S, step: u64, to: SaveTo) {
    let r = save::<S>(sim, step);
    match to {
        SaveTo::Main(done) => {
            let _ = post_task(
                handle.shared(),
                MainTask::Once(Box::new(move |main| done(r, main))),
            );
        }
        SaveTo::Caller(tx) => {
            let _ = tx.send(r);
        }
    }
}

fn save<S: Simulation>(sim: &S, step: u64) -> Result<Vec<u8>> {
    let mut w = SnapshotWriter::new(S::SNAPSHOT_KIND, S::SNAPSHOT_VERSION);
    w.u64(step);
    catch(|| sim.save(&mut w)).unwrap_or_else(|p| Err(Error::from_panic(p)))?;
    Ok(w.finish())
}

/// When the step after one taken at `now` is due at `rate` steps per second (positive and
/// finite), catching up on a late `next_at` by at most one period. A period the clock cannot
/// hold — a rate of `1e-300` is positive and finite — is as far off as the clock counts: no
/// step is due until `play`, `step_by` or a seek asks for one.
fn next_step_at(next_at: Instant, rate: f64, now: Instant) -> Instant {
    let period = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::MAX);
    let from = now
        .checked_sub(period)
        .map_or(next_at, |late| next_at.max(late));
    from.checked_add(period)
        .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(from)
}

/// Restores `bytes` into `sim`; returns the step it was taken at. The snapshot is fully
/// validated and read before the simulation's state is replaced.
fn restore_into<S: Simulation>(sim: &mut S, bytes: &[u8]) -> Result<u64> {
    let mut r = SnapshotReader::open(bytes, S::SNAPSHOT_KIND, 0..=S::SNAPSHOT_VERSION)?;
    let step = r.u64()?;
    catch(|| sim.restore(&mut r)).unwrap_or_else(|p| Err(Error::from_panic(p)))?;
    r.finish()?;
    Ok(step)
}

enum Wake {
    Command(Command),
    Seek(u64),
    Nothing,
    Exit,
}
