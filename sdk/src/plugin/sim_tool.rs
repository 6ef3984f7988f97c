//! What a plugin that runs a simulation needs besides the simulation: settings a host can send
//! as text, and a slot that swaps the running simulation for a rebuilt one without letting the
//! old one's frames through.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Plugin, PluginContext};
use crate::error::Result;
use crate::event::Event;
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::main_thread::Main;
use crate::sim::{Delivery, FrameInfo, SimControl, SimOptions, Simulation};
use crate::sink::Payload;
use crate::snapshot::{SnapshotReader, SnapshotWriter};

/// Frames that may wait for the host in *every* delivery before the simulation waits.
const EVERY_CAPACITY: usize = 4;

/// The `key=value` pairs of a host's settings text (`"agents=1000 delivery=every"`), split on
/// white space.
///
/// # Errors
///
/// Each item is an error for a word that is not `key=value`.
pub fn settings_pairs(
    text: &str,
) -> impl Iterator<Item = std::result::Result<(&str, &str), String>> {
    text.split_whitespace().map(|pair| {
        pair.split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))
    })
}

/// A count setting (`agents=1000`): a whole number in `1..=max`.
///
/// # Errors
///
/// Anything else, described for the host.
pub fn count_setting(key: &str, value: &str, max: usize) -> std::result::Result<usize, String> {
    match value.parse() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{key} must be 1..={max}, not {value}")),
    }
}

/// How a simulation runs, as a host sets it with text: `delivery=latest|every`, `rate=R`
/// (steps per second, 0 = unlimited), `playing=0|1`, `lockstep=0|1`. A plugin keeps one beside
/// its own settings and hands it the keys it does not know ([`SimSettings::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// `true`: every frame in order (the simulation waits for the host); `false`: the latest.
    pub every: bool,
    /// Steps per second; 0 = unlimited.
    pub rate: f64,
    /// Whether it plays.
    pub playing: bool,
    /// Whether it follows the host's frame-changed events.
    pub lockstep: bool,
}

impl Default for SimSettings {
    /// Latest delivery, unlimited, playing, not lock-stepped.
    fn default() -> Self {
        SimSettings {
            every: false,
            rate: 0.0,
            playing: true,
            lockstep: false,
        }
    }
}

impl SimSettings {
    /// Applies `key=value` if `key` is one of these settings; `None` for any other key.
    ///
    /// # Errors
    ///
    /// `Some(Err(..))` for a bad value, described.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<std::result::Result<(), String>> {
        let flag = match value {
            "0" | "false" => Some(false),
            "1" | "true" => Some(true),
            _ => None,
        };
        let ok = match key {
            "delivery" => match value {
                "latest" | "every" => {
                    self.every = value == "every";
                    true
                }
                _ => false,
            },
            "rate" => match value.parse::<f64>() {
                Ok(r) if r >= 0.0 && r.is_finite() => {
                    self.rate = r;
                    true
                }
                _ => false,
            },
            "playing" => flag.map(|f| self.playing = f).is_some(),
            "lockstep" => flag.map(|f| self.lockstep = f).is_some(),
            _ => return None,
        };
        Some(if ok {
            Ok(())
        } else {
            Err(format!("bad value for {key}: `{value}`"))
        })
    }

    /// The options for [`Handle::simulate`] (a thread named `name`).
    pub fn options(&self, name: &str) -> SimOptions {
        SimOptions {
            name: name.to_owned(),
            delivery: if self.every {
                Delivery::Every {
                    capacity: EVERY_CAPACITY,
                }
            } else {
                Delivery::Latest
            },
            rate: (self.rate > 0.0).then_some(self.rate),
            playing: self.playing,
            lockstep: self.lockstep,
            resume: None,
        }
    }
}

impl fmt::Display for SimSettings {
    /// The text [`SimSettings::apply`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delivery={} rate={} playing={} lockstep={}",
            if self.every { "every" } else { "latest" },
            self.rate,
            u8::from(self.playing),
            u8::from(self.lockstep)
        )
    }
}

/// A plugin's running simulation, under a topic prefix: rebuilt on a new configuration (the
/// old one stops, and its frames still waiting for a pump are dropped, never shown after the
/// new one's), its failed steps reported on `<topic>/error`, its state kept across a hot reload
/// with its settings text. A rebuild can run on a worker
/// ([`start_in_background`](SimSlot::start_in_background)), so that making a million agents
/// never stalls the host's frame.
pub struct SimSlot {
    topic: String,
    shared: Arc<Slot>,
}

/// The running simulation, and the number of the latest start asked for: a build finishing
/// after a newer start was asked for stops itself instead of taking the slot.
#[derive(Default)]
struct Slot {
    running: Mutex<Option<Running>>,
    generation: AtomicU64,
    /// The configuration the next start runs, as its frames name it ([`SimSlot::configured`]).
    configuration: AtomicU64,
}

struct Running {
    control: SimControl,
    /// Cleared when replaced: its frames and errors still queued are dropped.
    live: Arc<AtomicBool>,
    /// The configuration its frames name: the one it started with, or a later one applied to
    /// it as it runs.
    configuration: Arc<AtomicU64>,
}

impl Slot {
    /// Installs `running` if `generation` is still the latest start; otherwise stops it.
    fn install(&self, generation: u64, running: Running) {
        let slot = lock(&self.running);
        self.install_locked(slot, generation, running);
    }

    /// [`install`](Slot::install) with the slot already locked (and unlocked here).
    fn install_locked(
        &self,
        mut slot: std::sync::MutexGuard<'_, Option<Running>>,
        generation: u64,
        running: Running,
    ) {
        let old = if self.generation.load(Ordering::Acquire) != generation {
            drop(slot);
            running.stop();
            return;
        } else {
            slot.replace(running)
        };
        drop(slot);
        if let Some(old) = old {
            old.stop();
        }
    }
}

impl Running {
    fn stop(&self) {
        self.live.store(false, Ordering::Release);
        self.control.stop();
    }
}

impl fmt::Debug for SimSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSlot")
            .field("topic", &self.topic)
            .field("running", &self.control())
            .finish()
    }
}

/// How long saving and resuming may wait for the simulation to reach a step boundary.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);

impl SimSlot {
    /// An empty slot whose messages go to `<topic>/step`, `<topic>/error`.
    pub fn new(topic: impl Into<String>) -> Self {
        SimSlot {
            topic: topic.into(),
            shared: Arc::default(),
        }
    }

    /// Starts `sim` in place of the running simulation, on this thread. Each frame reaches the
    /// host as `<topic>/step` — 16 bytes: the step and the number of the configuration it
    /// belongs to ([`configured`](SimSlot::configured)), each u64 little-endian — followed by
    /// what `emit` sends.
    ///
    /// # Errors
    ///
    /// As [`Handle::simulate`]; the running simulation is then left as it was.
    pub fn start<S, F>(&mut self, rt: &Handle, sim: S, options: SimOptions, emit: F) -> Result<()>
    where
        S: Simulation,
        F: FnMut(&S::Frame, &mut Main<'_>) + Send + 'static,
    {
        let generation = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let configuration = self.shared.configuration.load(Ordering::Acquire);
        let running = run(rt, &self.topic, sim, options, configuration, emit)?;
        self.shared.install(generation, running);
        Ok(())
    }

    /// Counts one more configuration accepted, and returns its number; the frames of the next
    /// start name it, and with `running_too` so do the running simulation's from now on (a
    /// change applied to it as it runs). Numbers start at 0 (the configuration a plugin loads
    /// with) and are kept across a hot reload.
    pub fn configured(&self, running_too: bool) -> u64 {
        let n = self.shared.configuration.fetch_add(1, Ordering::AcqRel) + 1;
        if running_too {
            if let Some(r) = lock(&self.shared.running).as_ref() {
                r.configuration.store(n, Ordering::Release);
            }
        }
        n
    }

    /// The number of the latest configuration accepted (see [`configured`](SimSlot::configured)).
    pub fn configuration(&self) -> u64 {
        self.shared.configuration.load(Ordering::Acquire)
    }

    /// As [`start`](SimSlot::start), but `build` makes the simulation, and the simulation
    /// starts, on a worker: the main thread only queues the job. The running simulation keeps
    /// going until the new one replaces it; a later start wins over an earlier one still
    /// building. A failure (an error or a panic in `build`) is reported on `<topic>/error`
    /// and leaves the running simulation as it was.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`](crate::Error::ShutDown) if the job cannot be queued.
    pub fn start_in_background<S, B, F>(&self, rt: &Handle, build: B, emit: F) -> Result<()>
    where
        S: Simulation,
        B: FnOnce() -> Result<(S, SimOptions)> + Send + 'static,
        F: FnMut(&S::Frame, &mut Main<'_>) + Send + 'static,
    {
        let generation = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let configuration = self.shared.configuration.load(Ordering::Acquire);
        let (shared, topic, worker_rt) = (self.shared.clone(), self.topic.clone(), rt.clone());
        let error_topic = format!("{}/error", self.topic);
        let _job = rt
            .spawn(move |_| {
                let (sim, options) = build()?;
                // The slot stays locked from the start to the install: the new simulation
                // publishes its first frame at once, and a host that answers that frame with an
                // event (reset, advance) must find this simulation in the slot, not the one it
                // replaces.
                let slot = lock(&shared.running);
                let running = run(&worker_rt, &topic, sim, options, configuration, emit)?;
                shared.install_locked(slot, generation, running);
                Ok(())
            })?
            .on_main(move |r: Result<()>, main| {
                if let Err(e) = r {
                    let message = format!("the rebuild failed: {e}");
                    let _ = main.emit(&error_topic, Payload::Bytes(message.as_bytes()));
                }
            });
        Ok(())
    }

    /// The running simulation's controls.
    pub fn control(&self) -> Option<SimControl> {
        lock(&self.shared.running)
            .as_ref()
            .map(|r| r.control.clone())
    }

    /// Sends `message` to the host on `<topic>/error`.
    pub fn report(&self, main: &mut Main<'_>, message: &str) {
        let _ = main.emit(
            &format!("{}/error", self.topic),
            Payload::Bytes(message.as_bytes()),
        );
    }

    /// Plays or pauses on the host's playback events, and records it in `settings`; returns
    /// whether `event` was one of them.
    pub fn follow_playback(&self, event: &Event, settings: &mut SimSettings) -> bool {
        let playing = match event {
            Event::PlaybackStarted => true,
            Event::PlaybackStopped => false,
            _ => return false,
        };
        settings.playing = playing;
        if let Some(c) = self.control() {
            if playing {
                c.play();
            } else {
                c.pause();
            }
        }
        true
    }

    /// For [`Plugin::save_state`](super::Plugin::save_state): writes `settings` (the plugin's
    /// whole configuration as text) and a snapshot of the running simulation, which pauses.
    ///
    /// # Errors
    ///
    /// As [`SimControl::save_into`]; [`Error::ShutDown`](crate::Error::ShutDown) with no
    /// simulation running.
    pub fn save(&self, settings: &str, out: &mut SnapshotWriter) -> Result<()> {
        let c = self.control().ok_or(crate::Error::ShutDown)?;
        out.str(settings);
        c.save_into(out, STATE_TIMEOUT)?;
        out.u64(self.configuration());
        Ok(())
    }

    /// For [`Plugin::checkpoint_state`](super::Plugin::checkpoint_state): as
    /// [`save`](SimSlot::save), but the simulation plays on — the snapshot is taken at the next
    /// step boundary.
    ///
    /// # Errors
    ///
    /// As [`SimControl::save_now`]; [`Error::ShutDown`](crate::Error::ShutDown) with no
    /// simulation running.
    pub fn checkpoint(&self, settings: &str, out: &mut SnapshotWriter) -> Result<()> {
        let c = self.control().ok_or(crate::Error::ShutDown)?;
        let snapshot = c.save_now(STATE_TIMEOUT)?;
        out.str(settings).bytes(&snapshot).u64(self.configuration());
        Ok(())
    }

    /// For [`Plugin::restore_state`](super::Plugin::restore_state): reads what
    /// [`SimSlot::save`] wrote — the settings text, which `configure` turns into the
    /// simulation and its options (called once), and the snapshot it then resumes from — and
    /// starts it on this thread, so that a reload that cannot resume fails.
    ///
    /// # Errors
    ///
    /// A damaged record, `configure`'s error, or as [`SimSlot::start`].
    pub fn restore<S, F, C>(
        &mut self,
        rt: &Handle,
        input: &mut SnapshotReader<'_>,
        configure: C,
        emit: F,
    ) -> Result<()>
    where
        S: Simulation,
        F: FnMut(&S::Frame, &mut Main<'_>) + Send + 'static,
        C: FnOnce(&str) -> Result<(S, SimOptions)>,
    {
        let text = input.str().map_err(crate::Error::failed)?;
        let (sim, mut options) = configure(text)?;
        options.resume = Some(input.bytes().map_err(crate::Error::failed)?.to_vec());
        // The configuration number, from a build that wrote it (older ones did not).
        if input.remaining() >= 8 {
            let n = input.u64().map_err(crate::Error::failed)?;
            self.shared.configuration.store(n, Ordering::Release);
        }
        self.start(rt, sim, options, emit)
    }

    /// Stops the running simulation (and any still building); its undelivered frames are
    /// dropped.
    pub fn stop(&mut self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        let old = lock(&self.shared.running).take();
        if let Some(old) = old {
            old.stop();
        }
    }
}

/// For the headless runner: a [`SimPlugin`]'s saved state (`state`, the plugin container of
/// kind `kind` that `save_state`/`checkpoint_state` wrote through [`SimSlot::save`] or
/// [`SimSlot::checkpoint`]) with `extra` settings applied after its own, so that it restores
/// with those overridden (the runner restores paused and in lock-step whatever the saver was
/// doing). Returns the rewritten state and the configuration number it carries.
///
/// # Errors
///
/// [`Error::Failed`](crate::Error::Failed) if `state` is not such a state: damaged, of another
/// plugin, or not a simulation plugin's.
#[cfg(unix)]
pub(crate) fn state_with_settings(
    state: &[u8],
    kind: &str,
    extra: &str,
) -> Result<(Vec<u8>, Option<u64>)> {
    use crate::Error;
    let mut r = SnapshotReader::open(state, kind, 0..=u32::MAX).map_err(Error::failed)?;
    let version = r.version();
    let settings = r.str().map_err(Error::failed)?;
    let sim = r.bytes().map_err(Error::failed)?;
    let configuration = if r.remaining() >= 8 {
        Some(r.u64().map_err(Error::failed)?)
    } else {
        None
    };
    r.finish().map_err(Error::failed)?;
    let mut w = SnapshotWriter::new(kind, version);
    w.str(&format!("{settings} {extra}")).bytes(sim);
    if let Some(c) = configuration {
        w.u64(c);
    }
    Ok((w.finish(), configuration))
}

/// A tool whose plugin runs one configurable simulation: implement this on the tool's
/// configuration and export [`SimPlugin`]`<Config>` — the plugin (events, rebuilds on a worker,
/// playback, errors, hot reload with state) comes with it.
///
/// The host configures it with a custom event `<NAME>/configure` whose bytes are `key=value`
/// pairs ([`SimTool::apply_key`], then [`SimSettings`]), resets it with `<NAME>/reset`, plays
/// and pauses it with the playback events, and receives `<NAME>/step` then what
/// [`SimTool::emit`] sends for each frame, and `<NAME>/error` text. A configure rebuilds the
/// simulation (from step 0, on a worker) only for a tool key whose `apply_key` says so; `rate`,
/// `playing` and the tool's live keys change the running simulation, and `delivery` and
/// `lockstep` move its state to a new driver at the step it reached (by a snapshot, so a
/// simulation without [`Simulation::save`] starts again from its initial state there).
///
/// ```no_run
/// use hostloop::plugin::{SimPlugin, SimTool};
/// # use hostloop::{Main, SimOptions, Simulation, StepContext};
/// # pub struct Swarm; impl Simulation for Swarm { type Frame = Vec<f32>;
/// #   fn step(&mut self, _: &StepContext<'_>) -> hostloop::Result<()> { Ok(()) }
/// #   fn frame(&self) -> Vec<f32> { Vec::new() } fn reset(&mut self) {} }
///
/// #[derive(Clone, Default)]
/// pub struct Config { agents: usize }
///
/// impl SimTool for Config {
///     const NAME: &'static str = "swarm";
///     const VERSION: &'static str = "1.0.0";
///     type Sim = Swarm;
///     fn apply_key(&mut self, key: &str, value: &str) -> Option<Result<bool, String>> {
///         match key {
///             "agents" => Some(value.parse().map(|n| { self.agents = n; true }).map_err(|e| format!("{e}"))),
///             _ => None,
///         }
///     }
///     fn to_text(&self) -> String { format!("agents={}", self.agents) }
///     fn build(&self) -> Swarm { Swarm }
///     fn emit(frame: &Vec<f32>, main: &mut Main<'_>) {
///         let _ = main.emit("swarm/positions", hostloop::Payload::Array(hostloop::ArrayView::packed(frame, 3)));
///     }
/// }
///
/// hostloop::export_plugin!(SimPlugin<Config>);
/// ```
pub trait SimTool: Clone + Default + Send + 'static {
    /// The plugin's name, and the prefix of its topics.
    const NAME: &'static str;
    /// The plugin's version.
    const VERSION: &'static str;
    /// The simulation it runs.
    type Sim: Simulation;

    /// Applies one of the tool's own settings: `None` if `key` is not one (then the
    /// [`SimSettings`] keys, which the plugin keeps beside the tool, are tried),
    /// `Some(Ok(rebuild))` when applied — `rebuild` says whether the simulation must be rebuilt,
    /// or [`SimTool::aim`] can change the running one.
    ///
    /// # Errors
    ///
    /// `Some(Err(..))`: a bad value, described for the host.
    fn apply_key(&mut self, key: &str, value: &str) -> Option<std::result::Result<bool, String>>;

    /// The tool's own settings as `key=value` text that [`SimTool::apply_key`] reads back
    /// (saved across a hot reload, with the [`SimSettings`]).
    fn to_text(&self) -> String;

    /// A new simulation for this configuration (called on a worker for a rebuild).
    fn build(&self) -> Self::Sim;

    /// Changes a running simulation to this configuration's live settings (those whose
    /// [`apply_key`](SimTool::apply_key) said no rebuild). The default does nothing.
    fn aim(&self, sim: &mut Self::Sim) {
        let _ = sim;
    }

    /// Sends one frame to the host (after `<NAME>/step`), on the main thread.
    fn emit(frame: &<Self::Sim as Simulation>::Frame, main: &mut Main<'_>);
}

/// A tool's configuration and the simulation settings beside it.
#[derive(Clone, Default)]
struct Setup<T> {
    tool: T,
    sim: SimSettings,
}

/// What a new configuration asks of the running simulation, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// Applied to it as it runs: the tool's live keys ([`SimTool::aim`]), `rate`, `playing`.
    Live,
    /// A new driver for the same state (`delivery`, `lockstep`): it pauses, is snapshotted at
    /// a step boundary, and a simulation resumed from that snapshot takes its place — the step
    /// goes on from where it was.
    Respawn,
    /// A new simulation from [`SimTool::build`] (a tool key that changes the state), at step 0.
    Rebuild,
}

impl<T: SimTool> Setup<T> {
    /// This setup with the `key=value` pairs of `text` applied, and what that asks of the
    /// running simulation.
    fn apply(&self, text: &str) -> std::result::Result<(Self, Change), String> {
        let mut c = self.clone();
        let mut change = Change::Live;
        for pair in settings_pairs(text) {
            let (key, value) = pair?;
            match c.tool.apply_key(key, value) {
                Some(r) => {
                    if r? {
                        change = Change::Rebuild;
                    }
                }
                None => {
                    c.sim
                        .apply(key, value)
                        .unwrap_or_else(|| Err(format!("unknown key `{key}`")))?;
                }
            }
        }
        if c.sim.every != self.sim.every || c.sim.lockstep != self.sim.lockstep {
            change = change.max(Change::Respawn);
        }
        Ok((c, change))
    }

    /// The text [`Setup::apply`] reads back.
    fn to_text(&self) -> String {
        format!("{} {}", self.tool.to_text(), self.sim)
    }

    /// The simulation and its options.
    fn build(&self) -> (T::Sim, SimOptions) {
        (self.tool.build(), self.sim.options(T::NAME))
    }
}

/// The plugin of a [`SimTool`]: export it with `hostloop::export_plugin!(SimPlugin<Config>)`.
pub struct SimPlugin<T: SimTool> {
    rt: Handle,
    setup: Setup<T>,
    slot: SimSlot,
}

impl<T: SimTool> fmt::Debug for SimPlugin<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPlugin")
            .field("name", &T::NAME)
            .field("config", &self.setup.to_text())
            .field("slot", &self.slot)
            .finish()
    }
}

impl<T: SimTool> SimPlugin<T> {
    /// The tool's configuration now.
    pub fn config(&self) -> &T {
        &self.setup.tool
    }

    /// The simulation settings now.
    pub fn settings(&self) -> &SimSettings {
        &self.setup.sim
    }

    /// Applies a `<NAME>/configure`. A key that changes the state (the tool's, when
    /// [`SimTool::apply_key`] says so) rebuilds on a worker, replacing the running simulation
    /// when it is ready; `delivery` and `lockstep` move the running state, at its step, to a new
    /// driver; everything else (`rate`, `playing`, the tool's live keys) changes the running
    /// simulation at its next step.
    fn configure(&mut self, bytes: &[u8], main: &mut Main<'_>) {
        let result = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| self.setup.apply(text))
            .and_then(|(setup, change)| {
                let control = self.slot.control();
                // Counted before a start, so the new simulation's frames name it; a change
                // applied as it runs renames the running one's frames from now on.
                self.slot
                    .configured(change == Change::Live && control.is_some());
                match (change, control) {
                    (Change::Live, Some(c)) => {
                        let live = setup.tool.clone();
                        c.edit(move |sim: &mut T::Sim| live.aim(sim));
                        let options = setup.sim.options(T::NAME);
                        if setup.sim.rate != self.setup.sim.rate {
                            c.set_rate(options.rate);
                        }
                        if setup.sim.playing != self.setup.sim.playing {
                            if setup.sim.playing {
                                c.play();
                            } else {
                                c.pause();
                            }
                        }
                    }
                    (Change::Respawn, Some(c)) => {
                        // The live keys first (the snapshot carries them), then paused, so the
                        // snapshot is its last step and nothing newer is shown before the new
                        // driver's frames.
                        let live = setup.tool.clone();
                        c.edit(move |sim: &mut T::Sim| live.aim(sim));
                        c.pause();
                        let wanted = setup.clone();
                        self.slot
                            .start_in_background(&self.rt, move || respawned(&wanted, &c), T::emit)
                            .map_err(|e| e.to_string())?;
                    }
                    _ => {
                        let wanted = setup.clone();
                        self.slot
                            .start_in_background(&self.rt, move || Ok(wanted.build()), T::emit)
                            .map_err(|e| e.to_string())?;
                    }
                }
                self.setup = setup;
                Ok(())
            });
        if let Err(message) = result {
            let message = format!("{}/configure refused: {message}", T::NAME);
            self.slot.report(main, &message);
        }
    }
}

/// On a worker: `wanted`'s simulation resumed from a snapshot of the paused `old` one, so it
/// goes on at the same step; from its initial state if `old` cannot be saved (a simulation
/// without [`Simulation::save`]).
fn respawned<T: SimTool>(wanted: &Setup<T>, old: &SimControl) -> Result<(T::Sim, SimOptions)> {
    let (sim, mut options) = wanted.build();
    options.resume = old.save_now(STATE_TIMEOUT).ok();
    Ok((sim, options))
}

impl<T: SimTool> Plugin for SimPlugin<T> {
    const NAME: &'static str = T::NAME;
    const VERSION: &'static str = T::VERSION;

    fn load(ctx: &PluginContext) -> Result<Self> {
        let setup = Setup::<T>::default();
        let mut slot = SimSlot::new(T::NAME);
        let (sim, options) = setup.build();
        slot.start(ctx.handle(), sim, options, T::emit)?;
        Ok(SimPlugin {
            rt: ctx.handle().clone(),
            setup,
            slot,
        })
    }

    fn event(&mut self, event: &Event, main: &mut Main<'_>) {
        if self.slot.follow_playback(event, &mut self.setup.sim) {
            return;
        }
        if let Event::Custom { topic, bytes, .. } = event {
            match topic
                .strip_prefix(T::NAME)
                .and_then(|t| t.strip_prefix('/'))
            {
                Some("configure") => self.configure(bytes, main),
                Some("reset") => {
                    if let Some(c) = self.slot.control() {
                        c.reset();
                    }
                }
                Some("advance") => {
                    // `N` more steps, each frame published, then held while paused: what a
                    // headless runner asks for (it sends `playing=0` first).
                    match std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                    {
                        Some(n) => {
                            if let Some(c) = self.slot.control() {
                                c.step_by(n);
                            }
                        }
                        None => self.slot.report(
                            main,
                            &format!(
                                "{}/advance refused: not a step count: {:?}",
                                T::NAME,
                                String::from_utf8_lossy(bytes)
                            ),
                        ),
                    }
                }
                _ => {}
            }
        }
    }

    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        self.slot.save(&self.setup.to_text(), out)
    }

    fn checkpoint_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        self.slot.checkpoint(&self.setup.to_text(), out)
    }

    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let mut restored = None;
        self.slot.restore(
            &self.rt,
            input,
            |text| {
                let (setup, _change) = Setup::<T>::default()
                    .apply(text)
                    .map_err(crate::Error::failed)?;
                let built = setup.build();
                restored = Some(setup);
                Ok(built)
            },
            T::emit,
        )?;
        self.setup = restored.unwrap_or_default();
        Ok(())
    }

    fn unload(&mut self) {
        self.slot.stop();
    }
}

/// Starts `sim` with frames and errors under `topic`, silenced once replaced.
fn run<S, F>(
    rt: &Handle,
    topic: &str,
    sim: S,
    options: SimOptions,
    configuration: u64,
    mut emit: F,
) -> Result<Running>
where
    S: Simulation,
    F: FnMut(&S::Frame, &mut Main<'_>) + Send + 'static,
{
    let live = Arc::new(AtomicBool::new(true));
    let (frames_live, errors_live) = (live.clone(), live.clone());
    let configuration = Arc::new(AtomicU64::new(configuration));
    let frames_configuration = configuration.clone();
    let step_topic = format!("{topic}/step");
    let error_topic = format!("{topic}/error");
    let control = rt.simulate(sim, options, move |frame, info: FrameInfo, main| {
        // A frame of a replaced simulation may still be waiting for this pump.
        if frames_live.load(Ordering::Acquire) {
            let mut step = [0u8; 16];
            step[..8].copy_from_slice(&info.step.to_le_bytes());
            let c = frames_configuration.load(Ordering::Acquire);
            step[8..].copy_from_slice(&c.to_le_bytes());
            let _ = main.emit(&step_topic, Payload::Bytes(&step));
            emit(frame, main);
        }
    })?;
    control.on_error(move |message, main| {
        if errors_live.load(Ordering::Acquire) {
            let _ = main.emit(&error_topic, Payload::Bytes(message.as_bytes()));
        }
    });
    Ok(Running {
        control,
        live,
        configuration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_back_what_they_print_and_refuse_bad_values() {
        let mut s = SimSettings::default();
        for pair in settings_pairs("delivery=every rate=30 playing=0 lockstep=1") {
            let (k, v) = pair.unwrap();
            s.apply(k, v).unwrap().unwrap();
        }
        let mut back = SimSettings::default();
        for pair in settings_pairs(&s.to_string()) {
            let (k, v) = pair.unwrap();
            back.apply(k, v).unwrap().unwrap();
        }
        assert_eq!(back, s);
        let o = s.options("sim");
        assert_eq!((o.rate, o.playing, o.lockstep), (Some(30.0), false, true));
        assert!(matches!(o.delivery, Delivery::Every { .. }));
        assert!(s.apply("colour", "blue").is_none());
        for (k, v) in [
            ("rate", "-1"),
            ("rate", "inf"),
            ("playing", "yes"),
            ("delivery", "all"),
        ] {
            assert!(s.apply(k, v).unwrap().is_err(), "{k}={v}");
        }
        assert!(settings_pairs("agents").next().unwrap().is_err());
    }
}
