//! Benchmark 9: heap bytes per agent beyond the user's own agent struct, for a running
//! simulation.
//!
//! For each simulation and size, three heap measurements (the counting allocator's net growth,
//! all threads):
//!
//! 1. the frame buffers alone: one `Simulation::frame()` plus the two clones a `Latest`
//!    triple buffer makes of it, on a separate instance;
//! 2. everything: building the simulation, `Handle::simulate`, playing it until it has stepped a
//!    few times and a frame has reached the main thread — measured while it runs;
//! 3. the user's own agents: `N × size_of(agent)`.
//!
//! Bytes per agent beyond the struct = (2 − 1 − 3) / N. The driver thread's stack is mapped by
//! the OS, not allocated on the heap, and so is not in (2); it is per simulation, not per agent.
//!
//! The agent simulation is [`Herd`], defined here rather than taken from `examples/crowd`: the
//! crowd and particles example crates both export the plugin entry symbol, so one binary cannot
//! link both. `Herd` is built like the crowd (a 24-byte state-machine agent in one `Vec`,
//! stepped with `step_agents` and visibility thinning, a frame of positions and modes).

use std::thread;
use std::time::{Duration, Instant};

use hostloop::{Runtime, SimOptions, Simulation, StepContext, Thin};
use hostloop_particles::{Kernel, Particles};

use crate::alloc::Window;
use crate::report::{Row, Target, Unit};

/// One agent: position, velocity, a mode and its timer, its own random state (24 bytes).
#[derive(Debug, Clone, Copy)]
struct Agent {
    pos: [f32; 2],
    vel: [f32; 2],
    mode: u8,
    timer: u16,
    rng: u32,
}

impl Agent {
    fn step(&mut self, goal: [f32; 2]) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let r = (self.rng >> 8) as f32 / (1u32 << 24) as f32;
        if self.timer == 0 {
            self.mode = (self.mode + 1) % 3;
            self.timer = 30 + (r * 60.0) as u16;
        }
        self.timer -= 1;
        match self.mode {
            0 => self.vel = [self.vel[0] + (r - 0.5) * 0.2, self.vel[1] - (r - 0.5) * 0.2],
            1 => self.vel = [goal[0] - self.pos[0], goal[1] - self.pos[1]].map(|d| d * 0.01),
            _ => self.vel = [self.pos[0] - goal[0], self.pos[1] - goal[1]].map(|d| d * 0.01),
        }
        self.pos[0] += self.vel[0] * 0.1;
        self.pos[1] += self.vel[1] * 0.1;
    }
}

/// What the main thread receives: x, y per agent, and each agent's mode.
#[derive(Debug, Clone, Default)]
struct HerdFrame {
    positions: Vec<f32>,
    modes: Vec<u8>,
}

/// A crowd-like agent simulation (see the module docs).
#[derive(Debug)]
struct Herd {
    agents: Vec<Agent>,
}

impl Herd {
    fn new(n: usize) -> Self {
        let mut herd = Herd {
            agents: Vec::with_capacity(n),
        };
        herd.agents.resize(
            n,
            Agent {
                pos: [0.0; 2],
                vel: [0.0; 2],
                mode: 0,
                timer: 0,
                rng: 1,
            },
        );
        herd.reset();
        herd
    }
}

impl Simulation for Herd {
    type Frame = HerdFrame;

    fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
        let thin = Thin {
            visible: |a: &Agent| a.pos[0].abs() < 50.0 && a.pos[1].abs() < 50.0,
            k: 4,
        };
        ctx.step_agents(&mut self.agents, 4096, &thin, |_, a| a.step([50.0, 50.0]));
        Ok(())
    }

    fn frame(&self) -> HerdFrame {
        let mut f = HerdFrame::default();
        self.write_frame(&mut f);
        f
    }

    fn write_frame(&self, frame: &mut HerdFrame) {
        frame.positions.clear();
        frame.modes.clear();
        frame.positions.reserve(2 * self.agents.len());
        frame.modes.reserve(self.agents.len());
        for a in &self.agents {
            frame.positions.extend_from_slice(&a.pos);
            frame.modes.push(a.mode);
        }
    }

    fn reset(&mut self) {
        for (i, a) in self.agents.iter_mut().enumerate() {
            let rng = (i as u32).wrapping_mul(2_654_435_761) | 1;
            let f = |k: u32| (rng.rotate_left(k) >> 8) as f32 / (1u32 << 24) as f32;
            *a = Agent {
                pos: [f(3) * 200.0 - 100.0, f(11) * 200.0 - 100.0],
                vel: [f(17) - 0.5, f(23) - 0.5],
                mode: 0,
                timer: (f(29) * 120.0) as u16,
                rng,
            };
        }
    }
}

/// Bytes per particle of `Particles`' own columns: px py pz vx vy vz.
const PARTICLE_BYTES: usize = 6 * std::mem::size_of::<f32>();

/// Waits (up to 5 s) until no thread allocates or frees for 50 ms, so that an earlier
/// benchmark's threads finishing their exit cannot leak into a measurement.
fn settle() {
    let give_up = Instant::now() + Duration::from_secs(5);
    while Instant::now() < give_up {
        let window = Window::open();
        thread::sleep(Duration::from_millis(50));
        if window.allocations() == 0 && window.net_bytes() == 0 {
            return;
        }
    }
}

/// Net heap bytes of the three frame buffers of a `Latest` simulation.
fn frame_bytes<S: Simulation>(sim: &S) -> i64 {
    let window = Window::open();
    let first = sim.frame();
    let clones = [first.clone(), first.clone()];
    let bytes = window.net_bytes();
    drop(window);
    drop((first, clones));
    bytes
}

/// Net heap bytes of `make()` running under `rt.simulate`, measured after a few steps.
fn running_bytes<S: Simulation>(rt: &Runtime, make: impl FnOnce() -> S) -> hostloop::Result<i64> {
    let window = Window::open();
    let sim = rt.simulate(
        make(),
        SimOptions {
            name: "bench-memory".to_owned(),
            playing: true,
            ..SimOptions::default()
        },
        |frame, _info, _main| {
            std::hint::black_box(frame);
        },
    )?;
    let give_up = Instant::now() + Duration::from_secs(60);
    while sim.step() < 3 {
        if Instant::now() > give_up {
            return Err(hostloop::Error::Timeout);
        }
        thread::sleep(Duration::from_millis(1));
    }
    rt.pump(Duration::from_millis(50))?;
    let bytes = window.net_bytes();
    drop(window);
    sim.stop();
    while !sim.is_stopped() {
        if Instant::now() > give_up {
            return Err(hostloop::Error::Timeout);
        }
        thread::sleep(Duration::from_millis(1));
    }
    // The last frames may wait for a pump.
    rt.pump(Duration::from_millis(50))?;
    Ok(bytes)
}

#[derive(Debug, Clone)]
struct Measurement {
    name: &'static str,
    agents: usize,
    agent_size: usize,
    total: i64,
    frames: i64,
}

impl Measurement {
    fn beyond(&self) -> f64 {
        (self.total - self.frames - (self.agents * self.agent_size) as i64) as f64
            / self.agents as f64
    }
}

/// The memory benchmark: measured once (heap sizes do not vary between rounds).
#[derive(Debug)]
pub struct Bench {
    sizes: Vec<usize>,
    results: Vec<Measurement>,
}

impl Bench {
    pub fn new(sizes: Vec<usize>) -> Self {
        Bench {
            sizes,
            results: Vec::new(),
        }
    }

    pub fn run(&mut self, rt: &Runtime) -> hostloop::Result<()> {
        settle();
        for &n in &self.sizes {
            let frames = frame_bytes(&Herd::new(n));
            let total = running_bytes(rt, || Herd::new(n))?;
            self.results.push(Measurement {
                name: "agents",
                agents: n,
                agent_size: std::mem::size_of::<Agent>(),
                total,
                frames,
            });
            let frames = frame_bytes(&Particles::new(n, Kernel::Rust));
            let total = running_bytes(rt, || Particles::new(n, Kernel::Rust))?;
            self.results.push(Measurement {
                name: "particles",
                agents: n,
                agent_size: PARTICLE_BYTES,
                total,
                frames,
            });
        }
        Ok(())
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for m in &self.results {
            rows.push(Row::value(
                format!(
                    "bytes per agent beyond its {} B struct, {} {} (frames apart)",
                    m.agent_size, m.name, m.agents
                ),
                Unit::Bytes(2),
                m.beyond(),
                Target::AtMost(8.0),
            ));
        }
        for m in &self.results {
            rows.push(Row::value(
                format!(
                    "frame buffers per agent (3 Latest frames), {} {}",
                    m.name, m.agents
                ),
                Unit::Bytes(1),
                m.frames as f64 / m.agents as f64,
                Target::None,
            ));
        }
        rows
    }
}
