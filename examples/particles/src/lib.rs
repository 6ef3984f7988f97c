//! An example simulation for hostloop: `n` particles falling under gravity and bouncing on the
//! floor, stored as columns (structure of arrays) and stepped in parallel chunks on the
//! runtime's pool. The per-chunk kernel is Rust or C++ (through `cxx`, one call per chunk,
//! slices crossing without a copy), chosen at run time; both give the same positions, bit for
//! bit. Built as a `cdylib`, the crate is also the `particles` plugin ([`plugin`]).
//!
//! ```
//! use hostloop::{SimOptions, Runtime};
//! use hostloop_particles::{Kernel, Particles};
//!
//! let rt = Runtime::builder().workers(1).build()?;
//! let sim = rt.simulate(Particles::new(10_000, Kernel::Rust), SimOptions::default(), |positions, info, _main| {
//!     // On the main thread: `positions` is x, y, z per particle, ready for a host mesh.
//!     assert_eq!(positions.len(), 3 * 10_000);
//!     let _ = info.step;
//! })?;
//! sim.step_by(10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[expect(
    clippy::too_many_arguments,
    reason = "the kernel takes six particle columns and three parameters"
)]
mod cpp;
pub mod plugin;

use std::sync::Mutex;

use hostloop::{Error, Simulation, StepContext};

/// Which implementation steps a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The Rust loop in this crate.
    Rust,
    /// The C++ function in `cpp/kernel.cc`, through cxx.
    Cpp,
}

/// Particles as columns: positions and velocities.
#[derive(Debug, Clone)]
pub struct Particles {
    px: Vec<f32>,
    py: Vec<f32>,
    pz: Vec<f32>,
    vx: Vec<f32>,
    vy: Vec<f32>,
    vz: Vec<f32>,
    kernel: Kernel,
    /// Seconds per step.
    pub dt: f32,
    /// Acceleration along y (negative: down).
    pub gravity: f32,
    /// Fraction of speed kept by a bounce.
    pub restitution: f32,
    /// Particles per chunk handed to one thread (0 = automatic).
    pub grain: usize,
}

/// The step of one particle; the C++ kernel performs the same operations in the same order.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one particle: six components and three parameters"
)]
fn step_one(
    x: &mut f32,
    y: &mut f32,
    z: &mut f32,
    u: f32,
    v: &mut f32,
    w: f32,
    dt: f32,
    gravity: f32,
    restitution: f32,
) {
    *v += gravity * dt;
    *x += u * dt;
    *y += *v * dt;
    *z += w * dt;
    if *y < 0.0 {
        *y = -*y;
        *v = -*v * restitution;
    }
}

/// Raw column pointers, for handing disjoint chunks of all six columns to the pool.
struct Columns([*mut f32; 6]);

// SAFETY: only used to rebuild disjoint sub-slices (one chunk per thread) of six columns that
// the step borrows mutably for its whole duration.
unsafe impl Sync for Columns {}

impl Particles {
    /// `n` particles scattered in a 10 × 10 × 10 box above the floor with small random
    /// velocities (deterministic: the same `n` always gives the same start).
    pub fn new(n: usize, kernel: Kernel) -> Self {
        let mut p = Particles {
            px: vec![0.0; n],
            py: vec![0.0; n],
            pz: vec![0.0; n],
            vx: vec![0.0; n],
            vy: vec![0.0; n],
            vz: vec![0.0; n],
            kernel,
            dt: 1.0 / 60.0,
            gravity: -9.81,
            restitution: 0.8,
            grain: 0,
        };
        p.reset();
        p
    }

    /// Number of particles.
    pub fn len(&self) -> usize {
        self.px.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.px.is_empty()
    }

    /// Switches the kernel (takes effect at the next step).
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
    }

    /// The positions, interleaved x, y, z.
    pub fn positions(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.write_positions(&mut out);
        out
    }

    /// Interleaves the position columns into `out` as `x y z` triples. A playing simulation
    /// does this after every step (its newest frame), so it reuses `out`'s memory and is a
    /// plain gather the compiler vectorizes: no per-element capacity checks.
    fn write_positions(&self, out: &mut Vec<f32>) {
        out.resize(3 * self.len(), 0.0);
        let columns = self.px.iter().zip(&self.py).zip(&self.pz);
        for (xyz, ((x, y), z)) in out.chunks_exact_mut(3).zip(columns) {
            xyz.copy_from_slice(&[*x, *y, *z]);
        }
    }
}

impl Simulation for Particles {
    /// Positions, xyz per particle. Shared so a host may keep a frame past its sink call
    /// ([`hostloop::Message::lend`]) without a copy.
    type Frame = hostloop::Shared<Vec<f32>>;

    fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
        let (dt, gravity, restitution, kernel) =
            (self.dt, self.gravity, self.restitution, self.kernel);
        let cols = Columns([
            self.px.as_mut_ptr(),
            self.py.as_mut_ptr(),
            self.pz.as_mut_ptr(),
            self.vx.as_mut_ptr(),
            self.vy.as_mut_ptr(),
            self.vz.as_mut_ptr(),
        ]);
        let cols = &cols;
        let failure = Mutex::new(None::<String>);
        ctx.parallel_for(0..self.len(), self.grain, |r| {
            // SAFETY: `parallel_for` hands out disjoint ranges within the columns' length (all
            // six have `self.len()` elements), each to one thread, while `self` is borrowed
            // mutably by this step.
            let [x, y, z, u, v, w] = cols
                .0
                .map(|p| unsafe { std::slice::from_raw_parts_mut(p.add(r.start), r.len()) });
            match kernel {
                Kernel::Rust => {
                    for i in 0..x.len() {
                        step_one(
                            &mut x[i],
                            &mut y[i],
                            &mut z[i],
                            u[i],
                            &mut v[i],
                            w[i],
                            dt,
                            gravity,
                            restitution,
                        );
                    }
                }
                Kernel::Cpp => {
                    if let Err(e) = cpp::ffi::step_chunk(x, y, z, u, v, w, dt, gravity, restitution)
                    {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert_with(|| format!("C++ kernel: {}", e.what()));
                    }
                }
            }
        });
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(msg) => Err(Error::failed(msg)),
            None => Ok(()),
        }
    }

    fn frame(&self) -> hostloop::Shared<Vec<f32>> {
        hostloop::Shared::new(self.positions())
    }

    fn write_frame(&self, frame: &mut hostloop::Shared<Vec<f32>>) {
        self.write_positions(frame);
    }

    const SNAPSHOT_KIND: &'static str = "hostloop-particles";
    const SNAPSHOT_VERSION: u32 = 1;

    fn save(&self, out: &mut hostloop::SnapshotWriter) -> hostloop::Result<()> {
        out.f32(self.dt).f32(self.gravity).f32(self.restitution);
        for column in [&self.px, &self.py, &self.pz, &self.vx, &self.vy, &self.vz] {
            out.f32s(column);
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut hostloop::SnapshotReader<'_>) -> hostloop::Result<()> {
        // Read everything first: a schema mismatch leaves the particles as they were.
        let (dt, gravity, restitution) = (input.f32()?, input.f32()?, input.f32()?);
        let mut columns: [Vec<f32>; 6] = Default::default();
        for column in &mut columns {
            *column = input.f32s()?;
        }
        if columns.iter().any(|c| c.len() != columns[0].len()) {
            return Err(Error::failed("snapshot columns have different lengths"));
        }
        let [px, py, pz, vx, vy, vz] = columns;
        (self.px, self.py, self.pz, self.vx, self.vy, self.vz) = (px, py, pz, vx, vy, vz);
        (self.dt, self.gravity, self.restitution) = (dt, gravity, restitution);
        Ok(())
    }

    fn reset(&mut self) {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        for i in 0..self.len() {
            self.px[i] = rnd() * 10.0 - 5.0;
            self.py[i] = rnd() * 10.0;
            self.pz[i] = rnd() * 10.0 - 5.0;
            self.vx[i] = rnd() - 0.5;
            self.vy[i] = rnd() - 0.5;
            self.vz[i] = rnd() - 0.5;
        }
    }
}
