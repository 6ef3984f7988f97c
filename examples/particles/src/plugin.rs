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

use hostloop::plugin::{settings_pairs, Plugin, PluginContext, SimSettings, SimSlot};
use hostloop::{
    ArrayView, Error, Event, Handle, Main, Payload, Result, SimOptions, SnapshotReader,
    SnapshotWriter,
};

use crate::{Kernel, Particles};

/// The most particles a configure may ask for (16M particles take 384 MiB of columns).
pub const MAX_AGENTS: usize = 16_000_000;

/// What `particles/configure` sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of particles.
    pub agents: usize,
    /// The per-chunk kernel.
    pub kernel: Kernel,
    /// Delivery, rate, playing, lock-step.
    pub sim: SimSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agents: 100_000,
            kernel: Kernel::Rust,
            sim: SimSettings::default(),
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
        for pair in settings_pairs(text) {
            let (key, value) = pair?;
            match key {
                "agents" => match value.parse() {
                    Ok(n @ 1..=MAX_AGENTS) => c.agents = n,
                    _ => return Err(format!("agents must be 1..={MAX_AGENTS}, not {value}")),
                },
                "kernel" => {
                    c.kernel = match value {
                        "rust" => Kernel::Rust,
                        "cpp" => Kernel::Cpp,
                        _ => return Err(format!("kernel must be rust or cpp, not {value}")),
                    }
                }
                _ => c
                    .sim
                    .apply(key, value)
                    .unwrap_or_else(|| Err(format!("unknown key `{key}`")))?,
            }
        }
        Ok(c)
    }

    /// The simulation and its options.
    fn build(&self) -> (Particles, SimOptions) {
        (
            Particles::new(self.agents, self.kernel),
            self.sim.options("particles"),
        )
    }
}

impl fmt::Display for Config {
    /// The `key=value` text that [`Config::apply`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kernel = match self.kernel {
            Kernel::Rust => "rust",
            Kernel::Cpp => "cpp",
        };
        write!(f, "agents={} kernel={kernel} {}", self.agents, self.sim)
    }
}

/// Sends a frame's positions to the host.
#[expect(clippy::ptr_arg, reason = "the simulation's frame type is Vec<f32>")]
fn emit(positions: &Vec<f32>, main: &mut Main<'_>) {
    let _ = main.emit(
        "particles/positions",
        Payload::Array(ArrayView::packed(positions, 3)),
    );
}

/// The plugin: the configuration and the simulation running it.
#[derive(Debug)]
pub struct ParticlesPlugin {
    rt: Handle,
    config: Config,
    slot: SimSlot,
}

impl ParticlesPlugin {
    /// Applies a `particles/configure`: the new simulation is built on a worker, and replaces
    /// the running one when it is ready.
    fn configure(&mut self, bytes: &[u8], main: &mut Main<'_>) {
        let started = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| self.config.apply(text))
            .and_then(|config| {
                let wanted = config.clone();
                self.slot
                    .start_in_background(&self.rt, move || Ok(wanted.build()), emit)
                    .map_err(|e| e.to_string())?;
                self.config = config;
                Ok(())
            });
        if let Err(message) = started {
            self.slot
                .report(main, &format!("particles/configure refused: {message}"));
        }
    }
}

impl Plugin for ParticlesPlugin {
    const NAME: &'static str = "particles";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(ctx: &PluginContext) -> Result<Self> {
        let config = Config::default();
        let mut slot = SimSlot::new("particles");
        let (sim, options) = config.build();
        slot.start(ctx.handle(), sim, options, emit)?;
        Ok(ParticlesPlugin {
            rt: ctx.handle().clone(),
            config,
            slot,
        })
    }

    fn event(&mut self, event: &Event, main: &mut Main<'_>) {
        if self.slot.follow_playback(event, &mut self.config.sim) {
            return;
        }
        if let Event::Custom { topic, bytes, .. } = event {
            match topic.as_str() {
                "particles/configure" => self.configure(bytes, main),
                "particles/reset" => self.slot.control().map_or((), |c| c.reset()),
                _ => {}
            }
        }
    }

    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        self.slot.save(&self.config.to_string(), out)
    }

    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let mut restored = None;
        self.slot.restore(
            &self.rt,
            input,
            |text| {
                let config = Config::default().apply(text).map_err(Error::failed)?;
                let built = config.build();
                restored = Some(config);
                Ok(built)
            },
            emit,
        )?;
        self.config = restored.unwrap_or_default();
        Ok(())
    }

    fn unload(&mut self) {
        self.slot.stop();
    }
}

hostloop::export_plugin!(ParticlesPlugin);
