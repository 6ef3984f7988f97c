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
//! | `crowd/step` | 16 bytes: the frame's step and its configuration's number, u64 little-endian each |
//! | `crowd/positions` | `f32` array, 2 components (x, y) per agent |
//! | `crowd/modes` | `u8` array, one [`Mode`](crate::Mode) per agent |
//! | `crowd/error` | UTF-8 text: a failed step or a refused configure |
//!
//! A hot reload keeps the agents, the camera and the settings.

use hostloop::plugin::{count_setting, SimPlugin, SimTool};
use hostloop::{ArrayView, Main, Payload};

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

impl SimTool for Config {
    const NAME: &'static str = "crowd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Sim = Crowd;

    /// `agents` rebuilds the crowd; `view`, `goal`, `threat` and `thin` change the running one.
    fn apply_key(&mut self, key: &str, value: &str) -> Option<Result<bool, String>> {
        let bad = || format!("bad value for {key}: `{value}`");
        Some(match key {
            "agents" => count_setting(key, value, MAX_AGENTS).map(|n| {
                self.agents = n;
                true
            }),
            "view" => floats(value)
                .map(|v| self.view = v)
                .ok_or_else(bad)
                .map(|()| false),
            "goal" => floats(value)
                .map(|v| self.goal = v)
                .ok_or_else(bad)
                .map(|()| false),
            "threat" => floats(value)
                .map(|v| self.threat = v)
                .ok_or_else(bad)
                .map(|()| false),
            "thin" => match value.parse() {
                Ok(k @ 1..) => {
                    self.thin = k;
                    Ok(false)
                }
                _ => Err(bad()),
            },
            _ => return None,
        })
    }

    fn to_text(&self) -> String {
        let [x0, y0, x1, y1] = self.view;
        let ([gx, gy], [tx, ty]) = (self.goal, self.threat);
        format!(
            "agents={} view={x0},{y0},{x1},{y1} goal={gx},{gy} threat={tx},{ty} thin={}",
            self.agents, self.thin
        )
    }

    fn build(&self) -> Crowd {
        let mut crowd = Crowd::new(self.agents);
        self.aim(&mut crowd);
        crowd
    }

    fn aim(&self, crowd: &mut Crowd) {
        crowd.view = self.view;
        crowd.goal = self.goal;
        crowd.threat = self.threat;
        crowd.thin_k = self.thin;
    }

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
}

/// The plugin: a [`SimPlugin`] of [`Config`].
pub type CrowdPlugin = SimPlugin<Config>;

hostloop::export_plugin!(SimPlugin<Config>);
