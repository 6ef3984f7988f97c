//! The crowd simulation as a hostloop plugin: `libhostloop_crowd.so`, plugin name `crowd`.
//!
//! At load it plays 100,000 agents, *latest* delivery, no rate limit, agents outside the camera
//! stepped every 4th step.
//!
//! | host event | effect |
//! |---|---|
//! | custom `crowd/configure`, bytes `key=value ...` (ASCII) | `agents=N` (1..=4,000,000), `delivery=latest\|every`, `rate=R` (steps per second, 0 = unlimited), `playing=0\|1` rebuild the crowd from its deterministic start; `view=x0,y0,x1,y1` (the camera), `goal=x,y`, `threat=x,y` and `thin=k` change the running crowd at the next step. Bad input changes nothing and is reported on `crowd/error` |
//! | custom `crowd/reset` | back to step 0 |
//! | playback started / stopped | play / pause |
//!
//! | sink topic (main thread, per delivered frame, in this order) | payload |
//! |---|---|
//! | `crowd/step` | 8 bytes: the frame's step, u64 little-endian |
//! | `crowd/positions` | `f32` array, 2 components (x, y) per agent |
//! | `crowd/modes` | `u8` array, one [`Mode`](crate::Mode) per agent |
//! | `crowd/error` | UTF-8 text: a failed step or a refused configure |
//!
//! A hot reload keeps the agents, the camera and the settings.

use hostloop::plugin::{settings_pairs, Plugin, PluginContext, SimSettings, SimSlot};
use hostloop::{
    ArrayView, Error, Event, Handle, Main, Payload, Result, SimOptions, SnapshotReader,
    SnapshotWriter,
};

use crate::{Crowd, CrowdFrame};

/// The most agents a configure may ask for.
pub const MAX_AGENTS: usize = 4_000_000;

/// What `crowd/configure` sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of agents.
    pub agents: usize,
    /// The camera's view: x0, y0, x1, y1.
    pub view: [f32; 4],
    /// Where seeking agents head.
    pub goal: [f32; 2],
    /// What fleeing agents run from.
    pub threat: [f32; 2],
    /// Agents outside the view step every `thin`-th step.
    pub thin: u64,
    /// Delivery, rate, playing, lock-step.
    pub sim: SimSettings,
}

impl Default for Config {
    fn default() -> Self {
        let crowd = Crowd::new(0);
        Config {
            agents: 100_000,
            view: crowd.view,
            goal: crowd.goal,
            threat: crowd.threat,
            thin: crowd.thin_k,
            sim: SimSettings::default(),
        }
    }
}

/// `N` comma-separated finite numbers.
fn floats<const N: usize>(value: &str) -> Option<[f32; N]> {
    let mut out = [0.0; N];
    let mut parts = value.split(',');
    for slot in &mut out {
        *slot = parts
            .next()?
            .trim()
            .parse()
            .ok()
            .filter(|v: &f32| v.is_finite())?;
    }
    parts.next().is_none().then_some(out)
}

/// Whether a change of `key` needs the crowd rebuilt (the others apply to the running crowd).
fn rebuilds(key: &str) -> bool {
    !matches!(key, "view" | "goal" | "threat" | "thin")
}

impl Config {
    /// This configuration with the `key=value` pairs of `text` applied, and whether the crowd
    /// must be rebuilt: `agents` and the simulation settings rebuild it; `view`, `goal`,
    /// `threat` and `thin` change the running crowd.
    ///
    /// # Errors
    ///
    /// The first unknown key or bad value, described.
    pub fn apply(&self, text: &str) -> std::result::Result<(Config, bool), String> {
        let mut c = self.clone();
        let mut rebuild = false;
        for pair in settings_pairs(text) {
            let (key, value) = pair?;
            let bad = || format!("bad value for {key}: `{value}`");
            match key {
                "agents" => match value.parse() {
                    Ok(n @ 1..=MAX_AGENTS) => c.agents = n,
                    _ => return Err(format!("agents must be 1..={MAX_AGENTS}, not {value}")),
                },
                "view" => c.view = floats(value).ok_or_else(bad)?,
                "goal" => c.goal = floats(value).ok_or_else(bad)?,
                "threat" => c.threat = floats(value).ok_or_else(bad)?,
                "thin" => match value.parse() {
                    Ok(k @ 1..) => c.thin = k,
                    _ => return Err(bad()),
                },
                _ => c
                    .sim
                    .apply(key, value)
                    .unwrap_or_else(|| Err(format!("unknown key `{key}`")))?,
            }
            rebuild |= rebuilds(key);
        }
        Ok((c, rebuild))
    }

    /// The `key=value` text that [`Config::apply`] reads back.
    pub fn to_text(&self) -> String {
        let [x0, y0, x1, y1] = self.view;
        let ([gx, gy], [tx, ty]) = (self.goal, self.threat);
        format!(
            "agents={} view={x0},{y0},{x1},{y1} goal={gx},{gy} threat={tx},{ty} thin={} {}",
            self.agents, self.thin, self.sim
        )
    }

    /// Sets the live parameters on a crowd.
    fn aim(&self, crowd: &mut Crowd) {
        crowd.view = self.view;
        crowd.goal = self.goal;
        crowd.threat = self.threat;
        crowd.thin_k = self.thin;
    }

    /// The crowd and its options.
    fn build(&self) -> (Crowd, SimOptions) {
        let mut crowd = Crowd::new(self.agents);
        self.aim(&mut crowd);
        (crowd, self.sim.options("crowd"))
    }
}

/// Sends a frame's positions and modes to the host.
fn emit(frame: &CrowdFrame, main: &mut Main<'_>) {
    let _ = main.emit(
        "crowd/positions",
        Payload::Array(ArrayView::packed(&frame.positions, 2)),
    );
    let _ = main.emit(
        "crowd/modes",
        Payload::Array(ArrayView::packed(&frame.modes, 1)),
    );
}

/// The plugin: the configuration and the crowd running it.
#[derive(Debug)]
pub struct CrowdPlugin {
    rt: Handle,
    config: Config,
    slot: SimSlot,
}

impl CrowdPlugin {
    fn configure(&mut self, bytes: &[u8], main: &mut Main<'_>) {
        let applied = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| self.config.apply(text));
        let result = applied.and_then(|(config, rebuild)| {
            if rebuild {
                // Built on a worker: it replaces the running crowd when it is ready.
                let wanted = config.clone();
                self.slot
                    .start_in_background(&self.rt, move || Ok(wanted.build()), emit)
                    .map_err(|e| e.to_string())?;
            } else if let Some(c) = self.slot.control() {
                let live = config.clone();
                c.edit(move |crowd: &mut Crowd| live.aim(crowd));
            }
            self.config = config;
            Ok(())
        });
        if let Err(message) = result {
            self.slot
                .report(main, &format!("crowd/configure refused: {message}"));
        }
    }
}

impl Plugin for CrowdPlugin {
    const NAME: &'static str = "crowd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(ctx: &PluginContext) -> Result<Self> {
        let config = Config::default();
        let mut slot = SimSlot::new("crowd");
        let (crowd, options) = config.build();
        slot.start(ctx.handle(), crowd, options, emit)?;
        Ok(CrowdPlugin {
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
                "crowd/configure" => self.configure(bytes, main),
                "crowd/reset" => self.slot.control().map_or((), |c| c.reset()),
                _ => {}
            }
        }
    }

    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        self.slot.save(&self.config.to_text(), out)
    }

    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let mut restored = None;
        self.slot.restore(
            &self.rt,
            input,
            |text| {
                let (config, _) = Config::default().apply(text).map_err(Error::failed)?;
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

hostloop::export_plugin!(CrowdPlugin);
