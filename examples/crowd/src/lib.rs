//! An example simulation for hostloop: a crowd where every agent carries its own logic — a
//! small state machine that wanders, seeks a goal, and flees a threat — stepped in parallel
//! chunks on the runtime's pool. An agent is a plain 24-byte struct in one `Vec`, not a thread
//! or a task. Agents outside the camera's view step only every `k`-th frame ([`Thin`]).
//! Built as a `cdylib`, the crate is also the `crowd` plugin ([`plugin`]).
//!
//! ```
//! use hostloop::{Runtime, SimOptions};
//! use hostloop_crowd::Crowd;
//!
//! let rt = Runtime::builder().workers(1).build()?;
//! let sim = rt.simulate(Crowd::new(100_000), SimOptions::default(), |frame, _info, _main| {
//!     // On the main thread: x, y per agent, and each agent's state as a byte.
//!     assert_eq!(frame.positions.len(), 2 * 100_000);
//! })?;
//! sim.step_by(10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use hostloop::{Error, Simulation, StepContext, Thin};

pub mod plugin;

/// What an agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Drifting around.
    Wander = 0,
    /// Heading for the goal.
    Seek = 1,
    /// Running from the threat.
    Flee = 2,
}

/// One agent: position, velocity, mode, and its own random state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agent {
    pub pos: [f32; 2],
    pub vel: [f32; 2],
    pub mode: Mode,
    /// Steps left in the current mode.
    pub timer: u16,
    rng: u32,
}

impl Agent {
    fn rand(&mut self) -> f32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        (self.rng >> 8) as f32 / (1u32 << 24) as f32
    }

    /// One step of the state machine.
    fn step(&mut self, goal: [f32; 2], threat: [f32; 2]) {
        let to = |a: [f32; 2], b: [f32; 2]| [b[0] - a[0], b[1] - a[1]];
        let dist2 = |d: [f32; 2]| d[0] * d[0] + d[1] * d[1];
        let away = to(threat, self.pos);
        if dist2(away) < 25.0 && self.mode != Mode::Flee {
            self.mode = Mode::Flee;
            self.timer = 30;
        }
        match self.mode {
            Mode::Wander => {
                self.vel[0] += (self.rand() - 0.5) * 0.2;
                self.vel[1] += (self.rand() - 0.5) * 0.2;
                if self.timer == 0 {
                    self.mode = Mode::Seek;
                    self.timer = 60 + (self.rand() * 60.0) as u16;
                }
            }
            Mode::Seek => {
                let d = to(self.pos, goal);
                let len = dist2(d).sqrt().max(1e-3);
                self.vel = [d[0] / len, d[1] / len];
                if self.timer == 0 || len < 1.0 {
                    self.mode = Mode::Wander;
                    self.timer = 30 + (self.rand() * 90.0) as u16;
                }
            }
            Mode::Flee => {
                let len = dist2(away).sqrt().max(1e-3);
                self.vel = [2.0 * away[0] / len, 2.0 * away[1] / len];
                if self.timer == 0 {
                    self.mode = Mode::Wander;
                    self.timer = 60;
                }
            }
        }
        self.timer = self.timer.saturating_sub(1);
        self.pos[0] += self.vel[0] * 0.1;
        self.pos[1] += self.vel[1] * 0.1;
    }
}

/// What the main thread receives: positions (x, y per agent) and modes (one byte per agent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrowdFrame {
    pub positions: Vec<f32>,
    pub modes: Vec<u8>,
}

/// The crowd simulation.
#[derive(Debug, Clone)]
pub struct Crowd {
    agents: Vec<Agent>,
    /// Where seeking agents head.
    pub goal: [f32; 2],
    /// What fleeing agents run from.
    pub threat: [f32; 2],
    /// The camera's view: agents inside step every frame.
    pub view: [f32; 4],
    /// How often agents outside the view step (1 = always).
    pub thin_k: u64,
    /// Agents stepped by the last step.
    pub last_stepped: usize,
}

impl Crowd {
    /// `n` agents spread over a 200 × 200 field (deterministic for a given `n`), the camera on
    /// its central quarter.
    pub fn new(n: usize) -> Self {
        let mut crowd = Crowd {
            agents: Vec::with_capacity(n),
            goal: [50.0, 50.0],
            threat: [-40.0, 10.0],
            view: [-50.0, -50.0, 50.0, 50.0],
            thin_k: 4,
            last_stepped: 0,
        };
        crowd.agents.resize(
            n,
            Agent {
                pos: [0.0; 2],
                vel: [0.0; 2],
                mode: Mode::Wander,
                timer: 0,
                rng: 1,
            },
        );
        crowd.reset();
        crowd
    }

    /// The agents.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Positions now, x and y per agent.
    pub fn frame_positions(&self) -> Vec<f32> {
        self.agents.iter().flat_map(|a| a.pos).collect()
    }

    fn write(&self, frame: &mut CrowdFrame) {
        frame.positions.clear();
        frame.modes.clear();
        for a in &self.agents {
            frame.positions.extend_from_slice(&a.pos);
            frame.modes.push(a.mode as u8);
        }
    }
}

impl Simulation for Crowd {
    type Frame = CrowdFrame;

    fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
        let [x0, y0, x1, y1] = self.view;
        let thin = Thin {
            visible: |a: &Agent| {
                a.pos[0] >= x0 && a.pos[0] <= x1 && a.pos[1] >= y0 && a.pos[1] <= y1
            },
            k: self.thin_k,
        };
        let (goal, threat) = (self.goal, self.threat);
        self.last_stepped =
            ctx.step_agents(&mut self.agents, 4096, &thin, |_, a| a.step(goal, threat));
        Ok(())
    }

    fn frame(&self) -> CrowdFrame {
        let mut f = CrowdFrame::default();
        self.write(&mut f);
        f
    }

    fn write_frame(&self, frame: &mut CrowdFrame) {
        self.write(frame);
    }

    fn reset(&mut self) {
        for (i, a) in self.agents.iter_mut().enumerate() {
            let mut rng = (i as u32).wrapping_mul(2_654_435_761) | 1;
            let mut r = || {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                (rng >> 8) as f32 / (1u32 << 24) as f32
            };
            *a = Agent {
                pos: [r() * 200.0 - 100.0, r() * 200.0 - 100.0],
                vel: [r() - 0.5, r() - 0.5],
                mode: Mode::Wander,
                timer: (r() * 120.0) as u16,
                rng,
            };
        }
        self.last_stepped = 0;
    }

    const SNAPSHOT_KIND: &'static str = "hostloop-crowd";

    fn save(&self, out: &mut hostloop::SnapshotWriter) -> hostloop::Result<()> {
        out.u64(self.agents.len() as u64);
        for a in &self.agents {
            out.f32(a.pos[0]).f32(a.pos[1]).f32(a.vel[0]).f32(a.vel[1]);
            out.u8(a.mode as u8).u16(a.timer).u32(a.rng);
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut hostloop::SnapshotReader<'_>) -> hostloop::Result<()> {
        let n = usize::try_from(input.u64()?).map_err(|_| Error::failed("agent count"))?;
        // Each agent takes 23 bytes: refuse a count the payload cannot hold before allocating.
        if n.saturating_mul(23) > input.remaining() {
            return Err(Error::failed("snapshot holds fewer agents than it claims"));
        }
        let mut agents = Vec::with_capacity(n);
        for _ in 0..n {
            let pos = [input.f32()?, input.f32()?];
            let vel = [input.f32()?, input.f32()?];
            let mode = match input.u8()? {
                0 => Mode::Wander,
                1 => Mode::Seek,
                2 => Mode::Flee,
                _ => return Err(Error::failed("unknown agent mode")),
            };
            agents.push(Agent {
                pos,
                vel,
                mode,
                timer: input.u16()?,
                rng: input.u32()?,
            });
        }
        self.agents = agents;
        Ok(())
    }
}
