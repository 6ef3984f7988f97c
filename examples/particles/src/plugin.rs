//! The particles simulation as a hostloop plugin: `libhostloop_particles.so`, plugin name
//! `particles`. Hosts in C, C++, Python or Rust load it with `hl_plugin_load` (or
//! `Handle::load_plugin`) and talk to it with host events; it answers through the host sink.
//!
//! At load it plays 100,000 particles with the Rust kernel, *latest* delivery, no rate limit.
//!
//! | host event | effect |
//! |---|---|
//! | custom `particles/configure`, bytes `key=value ...` (ASCII) | rebuilds the simulation from its deterministic start with: `agents=N` (1..=16,000,000), `kernel=rust\|cpp`, `delivery=latest\|every`, `rate=R` (steps per second, 0 = unlimited), `playing=0\|1`, `lockstep=0\|1`; keys not given keep their value; bad input changes nothing and is reported on `particles/error` |
//! | custom `particles/reset` | back to step 0 |
//! | playback started / stopped | play / pause |
//! | frame changed | with `lockstep=1`: the simulation seeks to that frame |
//!
//! | sink topic (main thread, per delivered frame, in this order) | payload |
//! |---|---|
//! | `particles/step` | 8 bytes: the frame's step, u64 little-endian |
//! | `particles/positions` | `f32` array, 3 components (x, y, z) per particle |
//! | `particles/error` | UTF-8 text: a failed step (the simulation pauses) or a refused configure |
//!
//! A hot reload keeps the configuration and the particles: the old build saves both, the new
//! build restores them and plays on from the same step.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hostloop::plugin::{Plugin, PluginContext};
use hostloop::{
    ArrayView, Delivery, Error, Event, Handle, Main, Payload, Result, SimControl, SimOptions,
    SnapshotReader, SnapshotWriter,
};

use crate::{Kernel, Particles};

/// Frames that may wait for the host in *every* delivery before the simulation waits.
const EVERY_CAPACITY: usize = 4;
/// How long save and restore may wait for the simulation to reach a step boundary.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most particles a configure may ask for (16M particles take 384 MiB of columns).
pub const MAX_AGENTS: usize = 16_000_000;

/// What `particles/configure` sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of particles.
    pub agents: usize,
    /// The per-chunk kernel.
    pub kernel: Kernel,
    /// `true`: every frame in order (the simulation waits for the host); `false`: the latest.
    pub every: bool,
    /// Steps per second; 0 = unlimited.
    pub rate: f64,
    /// Whether it plays at once.
    pub playing: bool,
    /// Whether it follows the host's frame-changed events.
    pub lockstep: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agents: 100_000,
            kernel: Kernel::Rust,
            every: false,
            rate: 0.0,
            playing: true,
            lockstep: false,
        }
    }
}

impl Config {
    /// This configuration with the `key=value` pairs of `text` applied.
    ///
    /// # Errors
    ///
    /// The first unknown key or bad value, described.
    pub fn apply(&self, text: &str) -> std::result::Result<Config, String> {
        let mut c = self.clone();
        for pair in text.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let bad = || format!("bad value for {key}: `{value}`");
            let flag = || match value {
                "0" | "false" => Ok(false),
                "1" | "true" => Ok(true),
                _ => Err(bad()),
            };
            match key {
                "agents" => {
                    c.agents = value.parse().map_err(|_| bad())?;
                    if !(1..=MAX_AGENTS).contains(&c.agents) {
                        return Err(format!("agents must be 1..={MAX_AGENTS}, not {value}"));
                    }
                }
                "kernel" => {
                    c.kernel = match value {
                        "rust" => Kernel::Rust,
                        "cpp" => Kernel::Cpp,
                        _ => return Err(bad()),
                    }
                }
                "delivery" => {
                    c.every = match value {
                        "latest" => false,
                        "every" => true,
                        _ => return Err(bad()),
                    }
                }
                "rate" => {
                    c.rate = value.parse().map_err(|_| bad())?;
                    if !(c.rate >= 0.0 && c.rate.is_finite()) {
                        return Err(bad());
                    }
                }
                "playing" => c.playing = flag()?,
                "lockstep" => c.lockstep = flag()?,
                _ => return Err(format!("unknown key `{key}`")),
            }
        }
        Ok(c)
    }
}

impl fmt::Display for Config {
    /// The `key=value` text that [`Config::apply`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "agents={} kernel={} delivery={} rate={} playing={} lockstep={}",
            self.agents,
            match self.kernel {
                Kernel::Rust => "rust",
                Kernel::Cpp => "cpp",
            },
            if self.every { "every" } else { "latest" },
            self.rate,
            u8::from(self.playing),
            u8::from(self.lockstep)
        )
    }
}

/// A running simulation and the switch that silences its frames once it is replaced.
#[derive(Debug)]
struct Running {
    sim: SimControl,
    live: Arc<AtomicBool>,
}

impl Running {
    fn start(rt: &Handle, config: &Config, resume: Option<Vec<u8>>) -> Result<Running> {
        let options = SimOptions {
            name: "particles".into(),
            delivery: if config.every {
                Delivery::Every {
                    capacity: EVERY_CAPACITY,
                }
            } else {
                Delivery::Latest
            },
            rate: (config.rate > 0.0).then_some(config.rate),
            playing: config.playing,
            lockstep: config.lockstep,
            resume,
        };
        let live = Arc::new(AtomicBool::new(true));
        let frames_live = live.clone();
        let sim = rt.simulate(
            Particles::new(config.agents, config.kernel),
            options,
            move |positions, info, main| {
                // A frame of a replaced simulation may still be waiting for this pump.
                if frames_live.load(Ordering::Acquire) {
                    let _ = main.emit("particles/step", Payload::Bytes(&info.step.to_le_bytes()));
                    let _ = main.emit(
                        "particles/positions",
                        Payload::Array(ArrayView::packed(positions, 3)),
                    );
                }
            },
        )?;
        let errors_live = live.clone();
        sim.on_error(move |message, main| {
            if errors_live.load(Ordering::Acquire) {
                emit_error(main, message);
            }
        });
        Ok(Running { sim, live })
    }

    fn stop(&self) {
        self.live.store(false, Ordering::Release);
        self.sim.stop();
    }
}

fn emit_error(main: &mut Main<'_>, message: &str) {
    let _ = main.emit("particles/error", Payload::Bytes(message.as_bytes()));
}

/// The plugin: the configuration and the simulation running it.
#[derive(Debug)]
pub struct ParticlesPlugin {
    rt: Handle,
    config: Config,
    running: Running,
}

impl ParticlesPlugin {
    /// Replaces the running simulation with one built from `config`, resumed from `snapshot`
    /// if given.
    fn restart(&mut self, config: Config, snapshot: Option<Vec<u8>>) -> Result<()> {
        let running = Running::start(&self.rt, &config, snapshot)?;
        self.running.stop();
        self.running = running;
        self.config = config;
        Ok(())
    }

    fn configure(&mut self, bytes: &[u8], main: &mut Main<'_>) {
        let config = std::str::from_utf8(bytes)
            .map_err(|_| "particles/configure: not UTF-8".to_owned())
            .and_then(|text| self.config.apply(text))
            .and_then(|config| self.restart(config, None).map_err(|e| e.to_string()));
        if let Err(message) = config {
            emit_error(main, &format!("particles/configure refused: {message}"));
        }
    }
}

impl Plugin for ParticlesPlugin {
    const NAME: &'static str = "particles";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(ctx: &PluginContext) -> Result<Self> {
        let config = Config::default();
        let running = Running::start(ctx.handle(), &config, None)?;
        Ok(ParticlesPlugin {
            rt: ctx.handle().clone(),
            config,
            running,
        })
    }

    fn event(&mut self, event: &Event, main: &mut Main<'_>) {
        match event {
            Event::PlaybackStarted => {
                self.config.playing = true;
                self.running.sim.play();
            }
            Event::PlaybackStopped => {
                self.config.playing = false;
                self.running.sim.pause();
            }
            Event::Custom { topic, bytes, .. } => match topic.as_str() {
                "particles/configure" => self.configure(bytes, main),
                "particles/reset" => self.running.sim.reset(),
                _ => {}
            },
            _ => {}
        }
    }

    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        out.str(&self.config.to_string());
        self.running.sim.save_into(out, STATE_TIMEOUT)
    }

    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let text = input.str().map_err(Error::failed)?;
        let config = Config::default().apply(text).map_err(Error::failed)?;
        let snapshot = input.bytes().map_err(Error::failed)?.to_vec();
        self.restart(config, Some(snapshot))
    }

    fn unload(&mut self) {
        self.running.stop();
    }
}

hostloop::export_plugin!(ParticlesPlugin);
