//! A hostloop tool plugin to copy: `orbits`, a simulation of points circling the origin.
//!
//! - It steps on the host's worker pool (never on threads of its own) and hands each frame to
//!   the host's sink on the main thread, as an `f32` xyz array.
//! - It keeps its state across a hot reload: `save_state` pauses the simulation and snapshots
//!   it, `restore_state` puts the snapshot into the new build and plays on.
//!
//! Change [`SPEED`], rebuild (`cargo build --release -p hostloop-plugin-template`: the release
//! build is the one the README's host loads), and a running host that reloads the library
//! (`hostloop-host` does, when the file changes) continues from the same step with the new
//! speed. See `README.md`.

use std::time::Duration;

use hostloop::plugin::{Plugin, PluginContext};
use hostloop::{
    ArrayView, Error, Event, Main, Payload, Result, SimControl, SimOptions, Simulation,
    SnapshotReader, SnapshotWriter, StepContext,
};

/// Radians per step of the innermost ring. Edit, rebuild, and watch a running host pick it up.
pub const SPEED: f32 = 0.02;

/// How many points orbit.
pub const POINTS: usize = 10_000;

/// The simulation: one angle and one radius per point (structure of arrays).
#[derive(Debug, Clone)]
pub struct OrbitSim {
    angle: Vec<f32>,
    radius: Vec<f32>,
}

impl OrbitSim {
    /// `n` points on rings of radius 1..=4.
    pub fn new(n: usize) -> Self {
        OrbitSim {
            angle: vec![0.0; n],
            radius: (0..n).map(|i| 1.0 + (i % 4) as f32).collect(),
        }
    }
}

impl Simulation for OrbitSim {
    /// xyz per point.
    type Frame = Vec<f32>;
    const SNAPSHOT_KIND: &'static str = "orbits";

    fn step(&mut self, ctx: &StepContext<'_>) -> Result<()> {
        let radius = &self.radius;
        // Chunks of the angles fan out over the host's pool (grain 0 = automatic).
        ctx.parallel_for_mut(&mut self.angle, 0, |offset, chunk| {
            for (k, a) in chunk.iter_mut().enumerate() {
                *a += SPEED / radius[offset + k];
            }
        });
        Ok(())
    }

    fn frame(&self) -> Vec<f32> {
        vec![0.0; self.angle.len() * 3]
    }

    fn write_frame(&self, frame: &mut Vec<f32>) {
        frame.resize(self.angle.len() * 3, 0.0);
        for (i, xyz) in frame.chunks_exact_mut(3).enumerate() {
            let (s, c) = self.angle[i].sin_cos();
            xyz.copy_from_slice(&[c * self.radius[i], s * self.radius[i], 0.0]);
        }
    }

    fn reset(&mut self) {
        self.angle.iter_mut().for_each(|a| *a = 0.0);
    }

    fn save(&self, out: &mut SnapshotWriter) -> Result<()> {
        out.f32s(&self.angle);
        Ok(())
    }

    fn restore(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let angle = input.f32s()?;
        if angle.len() != self.angle.len() {
            return Err(Error::failed("the snapshot has another number of points"));
        }
        self.angle = angle;
        Ok(())
    }
}

/// The plugin: owns the running simulation.
#[derive(Debug)]
pub struct Orbits {
    sim: SimControl,
}

/// How long save and restore may wait for the simulation to reach a step boundary.
const STATE_TIMEOUT: Duration = Duration::from_secs(2);

impl Plugin for Orbits {
    const NAME: &'static str = "orbits";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(ctx: &PluginContext) -> Result<Self> {
        let options = SimOptions {
            name: "orbits".into(),
            playing: true,
            rate: Some(60.0),
            ..SimOptions::default()
        };
        let sim = ctx
            .handle()
            .simulate(OrbitSim::new(POINTS), options, |frame, info, main| {
                // On the main thread: zero-copy views, valid for the sink call.
                let _ = main.emit(
                    "orbits/positions",
                    Payload::Array(ArrayView::packed(frame, 3)),
                );
                let _ = main.emit("orbits/step", Payload::Bytes(&info.step.to_le_bytes()));
            })?;
        Ok(Orbits { sim })
    }

    fn event(&mut self, event: &Event, _main: &mut Main<'_>) {
        match event {
            Event::PlaybackStarted => self.sim.play(),
            Event::PlaybackStopped => self.sim.pause(),
            _ => {}
        }
    }

    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        // Pauses first, so the saved step is the last one this build takes.
        self.sim.save_into(out, STATE_TIMEOUT)
    }

    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        self.sim.restore_from(input, STATE_TIMEOUT)?;
        self.sim.play();
        Ok(())
    }

    fn unload(&mut self) {
        self.sim.stop();
    }
}

hostloop::export_plugin!(Orbits);
