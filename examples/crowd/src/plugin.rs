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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hostloop::plugin::{Plugin, PluginContext};
use hostloop::{
    ArrayView, Delivery, Error, Event, Handle, Main, Payload, Result, SimControl, SimOptions,
    SnapshotReader, SnapshotWriter,
};

use crate::Crowd;

/// The most agents a configure may ask for.
pub const MAX_AGENTS: usize = 4_000_000;
const STATE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `crowd/configure` sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of agents.
    pub agents: usize,
    /// `true`: every frame in order; `false`: the latest.
    pub every: bool,
    /// Steps per second; 0 = unlimited.
    pub rate: f64,
    /// Whether it plays at once.
    pub playing: bool,
    /// The camera's view: x0, y0, x1, y1.
    pub view: [f32; 4],
    /// Where seeking agents head.
    pub goal: [f32; 2],
    /// What fleeing agents run from.
    pub threat: [f32; 2],
    /// Agents outside the view step every `thin`-th step.
    pub thin: u64,
}

impl Default for Config {
    fn default() -> Self {
        let crowd = Crowd::new(0);
        Config {
            agents: 100_000,
            every: false,
            rate: 0.0,
            playing: true,
            view: crowd.view,
            goal: crowd.goal,
            threat: crowd.threat,
            thin: crowd.thin_k,
        }
    }
}

/// `N` comma-separated numbers.
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

impl Config {
    /// This configuration with the `key=value` pairs of `text` applied, and whether the crowd
    /// must be rebuilt (`agents`, `delivery`, `rate` or `playing` given).
    ///
    /// # Errors
    ///
    /// The first unknown key or bad value, described.
    pub fn apply(&self, text: &str) -> std::result::Result<(Config, bool), String> {
        let mut c = self.clone();
        let mut rebuild = false;
        for pair in text.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let bad = || format!("bad value for {key}: `{value}`");
            match key {
                "agents" => {
                    c.agents = value.parse().map_err(|_| bad())?;
                    if !(1..=MAX_AGENTS).contains(&c.agents) {
                        return Err(format!("agents must be 1..={MAX_AGENTS}, not {value}"));
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
                "playing" => {
                    c.playing = match value {
                        "0" | "false" => false,
                        "1" | "true" => true,
                        _ => return Err(bad()),
                    }
                }
                "view" => c.view = floats(value).ok_or_else(bad)?,
                "goal" => c.goal = floats(value).ok_or_else(bad)?,
                "threat" => c.threat = floats(value).ok_or_else(bad)?,
                "thin" => {
                    c.thin = value.parse().map_err(|_| bad())?;
                    if c.thin == 0 {
                        return Err(bad());
                    }
                }
                _ => return Err(format!("unknown key `{key}`")),
            }
            rebuild |= matches!(key, "agents" | "delivery" | "rate" | "playing");
        }
        Ok((c, rebuild))
    }

    fn to_text(&self) -> String {
        let [x0, y0, x1, y1] = self.view;
        format!(
            "agents={} delivery={} rate={} playing={} view={x0},{y0},{x1},{y1} goal={},{} threat={},{} thin={}",
            self.agents,
            if self.every { "every" } else { "latest" },
            self.rate,
            u8::from(self.playing),
            self.goal[0],
            self.goal[1],
            self.threat[0],
            self.threat[1],
            self.thin
        )
    }

    /// Sets the live parameters on a crowd.
    fn aim(&self, crowd: &mut Crowd) {
        crowd.view = self.view;
        crowd.goal = self.goal;
        crowd.threat = self.threat;
        crowd.thin_k = self.thin;
    }
}

/// A running crowd and the switch that silences its frames once it is replaced.
#[derive(Debug)]
struct Running {
    sim: SimControl,
    live: Arc<AtomicBool>,
}

fn emit_error(main: &mut Main<'_>, message: &str) {
    let _ = main.emit("crowd/error", Payload::Bytes(message.as_bytes()));
}

impl Running {
    fn start(rt: &Handle, config: &Config, resume: Option<Vec<u8>>) -> Result<Running> {
        let mut crowd = Crowd::new(config.agents);
        config.aim(&mut crowd);
        let options = SimOptions {
            name: "crowd".into(),
            delivery: if config.every {
                Delivery::Every { capacity: 4 }
            } else {
                Delivery::Latest
            },
            rate: (config.rate > 0.0).then_some(config.rate),
            playing: config.playing,
            lockstep: false,
            resume,
        };
        let live = Arc::new(AtomicBool::new(true));
        let frames_live = live.clone();
        let sim = rt.simulate(crowd, options, move |frame, info, main| {
            if frames_live.load(Ordering::Acquire) {
                let _ = main.emit("crowd/step", Payload::Bytes(&info.step.to_le_bytes()));
                let _ = main.emit(
                    "crowd/positions",
                    Payload::Array(ArrayView::packed(&frame.positions, 2)),
                );
                let _ = main.emit(
                    "crowd/modes",
                    Payload::Array(ArrayView::packed(&frame.modes, 1)),
                );
            }
        })?;
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

/// The plugin: the configuration and the crowd running it.
#[derive(Debug)]
pub struct CrowdPlugin {
    rt: Handle,
    config: Config,
    running: Running,
}

impl CrowdPlugin {
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
        let applied = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| self.config.apply(text));
        let result = match applied {
            Ok((config, true)) => self.restart(config, None).map_err(|e| e.to_string()),
            Ok((config, false)) => {
                let live = config.clone();
                self.running
                    .sim
                    .edit(move |crowd: &mut Crowd| live.aim(crowd));
                self.config = config;
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(message) = result {
            emit_error(main, &format!("crowd/configure refused: {message}"));
        }
    }
}

impl Plugin for CrowdPlugin {
    const NAME: &'static str = "crowd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(ctx: &PluginContext) -> Result<Self> {
        let config = Config::default();
        let running = Running::start(ctx.handle(), &config, None)?;
        Ok(CrowdPlugin {
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
                "crowd/configure" => self.configure(bytes, main),
                "crowd/reset" => self.running.sim.reset(),
                _ => {}
            },
            _ => {}
        }
    }

    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        out.str(&self.config.to_text());
        self.running.sim.save_into(out, STATE_TIMEOUT)
    }

    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let text = input.str().map_err(Error::failed)?;
        let (config, _) = Config::default().apply(text).map_err(Error::failed)?;
        let snapshot = input.bytes().map_err(Error::failed)?.to_vec();
        self.restart(config, Some(snapshot))
    }

    fn unload(&mut self) {
        self.running.stop();
    }
}

hostloop::export_plugin!(CrowdPlugin);
