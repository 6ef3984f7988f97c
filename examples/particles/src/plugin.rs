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
//! | `particles/step` | 16 bytes: the frame's step and its configuration's number, u64 little-endian each |
//! | `particles/positions` | `f32` array, 3 components (x, y, z) per particle |
//! | `particles/error` | UTF-8 text: a failed step (the simulation pauses) or a refused configure |
//!
//! A hot reload keeps the configuration and the particles: the old build saves both, the new
//! build restores them and plays on from the same step.

use hostloop::plugin::{count_setting, SimPlugin, SimTool};
use hostloop::Main;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agents: 100_000,
            kernel: Kernel::Rust,
        }
    }
}

impl SimTool for Config {
    const NAME: &'static str = "particles";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Sim = Particles;

    fn apply_key(&mut self, key: &str, value: &str) -> Option<Result<bool, String>> {
        Some(match key {
            "agents" => count_setting(key, value, MAX_AGENTS).map(|n| {
                self.agents = n;
                true
            }),
            "kernel" => match value {
                "rust" | "cpp" => {
                    self.kernel = if value == "rust" {
                        Kernel::Rust
                    } else {
                        Kernel::Cpp
                    };
                    Ok(true)
                }
                _ => Err(format!("kernel must be rust or cpp, not {value}")),
            },
            _ => return None,
        })
    }

    fn to_text(&self) -> String {
        let kernel = match self.kernel {
            Kernel::Rust => "rust",
            Kernel::Cpp => "cpp",
        };
        format!("agents={} kernel={kernel}", self.agents)
    }

    fn build(&self) -> Particles {
        Particles::new(self.agents, self.kernel)
    }

    fn emit(positions: &hostloop::Shared<Vec<f32>>, main: &mut Main<'_>) {
        // Lendable: a host may keep the frame past its sink call instead of copying it.
        let _ = main.emit_shared("particles/positions", positions, 3);
    }
}

/// The plugin: a [`SimPlugin`] of [`Config`].
pub type ParticlesPlugin = SimPlugin<Config>;

hostloop::export_plugin!(SimPlugin<Config>);
