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

use std::thread;
use std::time::{Duration, Instant};

use hostloop::{Runtime, SimOptions, Simulation};
use hostloop_crowd::{Agent, Crowd};
use hostloop_particles::{Kernel, Particles};

use crate::alloc::Window;
use crate::report::{Row, Target, Unit};

/// Bytes per particle of `Particles`' own columns: px py pz vx vy vz.
const PARTICLE_BYTES: usize = 6 * std::mem::size_of::<f32>();

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
        for &n in &self.sizes {
            let frames = frame_bytes(&Crowd::new(n));
            let total = running_bytes(rt, || Crowd::new(n))?;
            self.results.push(Measurement {
                name: "crowd",
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
