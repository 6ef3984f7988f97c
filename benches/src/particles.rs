//! Benchmark 4: one step of a particle simulation (structure of arrays, gravity + bounce), the
//! same kernel under hostloop's `parallel_for`, rayon's `par_chunks_mut` at its best grain
//! (swept once, then fixed), and a sequential loop; plus a STREAM-like triad in the same run as
//! the machine's memory-bandwidth ceiling.
//!
//! A step reads six `f32` columns and writes four: 40 bytes per particle, from which the
//! achieved bandwidth is computed and compared with the triad's.

use std::time::{Duration, Instant};

use hostloop::{Runtime, SimOptions};
use hostloop_particles::{Kernel, Particles};
use rayon::prelude::*;
use rayon::ThreadPool;

use crate::report::{Row, Samples, Target, Unit};

/// Bytes a step moves per particle: reads px py pz vx vy vz, writes px py pz vy.
const BYTES_PER_PARTICLE: f64 = 40.0;

struct Columns {
    c: [Vec<f32>; 6],
}

impl Columns {
    fn new(n: usize) -> Self {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut c: [Vec<f32>; 6] = Default::default();
        for col in &mut c {
            *col = (0..n).map(|_| rnd() * 10.0).collect();
        }
        Columns { c }
    }
    fn len(&self) -> usize {
        self.c[0].len()
    }
}

/// The kernel, on one chunk of every column.
///
/// Written so that the compiler can vectorize it (as a tuned kernel would be): the columns are
/// re-sliced to one length up front, so the loop has no bounds checks, and the bounce is a
/// select rather than a branch. Same arithmetic, same results, as the plain loop
/// `v += g dt; x += u dt; y += v dt; z += w dt; if y < 0 { y = -y; v = -0.8 v }`.
#[inline(always)]
fn kernel(x: &mut [f32], y: &mut [f32], z: &mut [f32], u: &[f32], v: &mut [f32], w: &[f32]) {
    const DT: f32 = 1.0 / 60.0;
    let n = x.len();
    let (y, z, u, v, w) = (&mut y[..n], &mut z[..n], &u[..n], &mut v[..n], &w[..n]);
    for i in 0..n {
        let vi = v[i] + -9.81 * DT;
        x[i] += u[i] * DT;
        let yi = y[i] + vi * DT;
        z[i] += w[i] * DT;
        let bounce = yi < 0.0;
        y[i] = if bounce { -yi } else { yi };
        v[i] = if bounce { -vi * 0.8 } else { vi };
    }
}

struct Ptrs([*mut f32; 6]);
// SAFETY: used only to rebuild disjoint chunks of the six columns, one chunk per thread, while
// the columns are borrowed mutably by the step.
unsafe impl Sync for Ptrs {}

fn step_hostloop(rt: &Runtime, cols: &mut Columns, grain: usize) {
    let n = cols.len();
    let p = Ptrs(cols.c.each_mut().map(|c| c.as_mut_ptr()));
    let p = &p;
    rt.parallel_for(0..n, grain, |r| {
        // SAFETY: see `Ptrs`: `r` is a disjoint range within the columns.
        let [x, y, z, u, v, w] =
            p.0.map(|c| unsafe { std::slice::from_raw_parts_mut(c.add(r.start), r.len()) });
        kernel(x, y, z, u, v, w);
    });
}

fn step_rayon(pool: &ThreadPool, cols: &mut Columns, grain: usize) {
    let [x, y, z, u, v, w] = cols.c.each_mut();
    pool.install(|| {
        x.par_chunks_mut(grain)
            .zip(y.par_chunks_mut(grain))
            .zip(z.par_chunks_mut(grain))
            .zip(u.par_chunks_mut(grain))
            .zip(v.par_chunks_mut(grain))
            .zip(w.par_chunks_mut(grain))
            .for_each(|(((((x, y), z), u), v), w)| kernel(x, y, z, u, v, w));
    });
}

fn step_sequential(cols: &mut Columns) {
    let [x, y, z, u, v, w] = cols.c.each_mut();
    kernel(x, y, z, u, v, w);
}

/// Particles stepped per second over `steps` steps.
fn rate(steps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up (page faults, thread wake-ups)
    let start = Instant::now();
    for _ in 0..steps {
        f();
    }
    (steps * n) as f64 / start.elapsed().as_secs_f64()
}

/// A STREAM-like triad `a = b + s * c` over `f64` arrays on `threads` threads; bytes/s.
fn triad(pool: &ThreadPool, len: usize) -> f64 {
    let mut a = vec![0.0f64; len];
    let b = vec![1.0f64; len];
    let c = vec![2.0f64; len];
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(1 << 16)
                .zip(b.par_chunks(1 << 16))
                .zip(c.par_chunks(1 << 16))
                .for_each(|((a, b), c)| {
                    for i in 0..a.len() {
                        a[i] = b[i] + 3.0 * c[i];
                    }
                });
        });
        let secs = start.elapsed().as_secs_f64();
        best = best.max((3 * 8 * len) as f64 / secs);
    }
    std::hint::black_box(&a);
    best
}

/// One problem size: its columns and each contender's particles/s per round.
struct Size {
    cols: Columns,
    steps: usize,
    /// rayon's best grain for this size, found once by a sweep of 2^8 … 2^16.
    rayon_grain: Option<usize>,
    hostloop: Samples,
    rayon: Samples,
    sequential: Samples,
}

impl Size {
    fn n(&self) -> usize {
        self.cols.len()
    }

    fn rayon_grain(&mut self, pool: &ThreadPool) -> usize {
        if let Some(g) = self.rayon_grain {
            return g;
        }
        let n = self.n();
        let (mut best, mut best_rate) = (n, 0.0);
        let top = n
            .next_power_of_two()
            .clamp(1 << 8, 1 << 16)
            .trailing_zeros();
        for shift in 8..=top {
            let g = 1usize << shift;
            let cols = &mut self.cols;
            let r = rate((self.steps / 2).max(2), n, || step_rayon(pool, cols, g));
            if r > best_rate {
                (best, best_rate) = (g, r);
            }
        }
        self.rayon_grain = Some(best);
        best
    }
}

/// The example's `Particles` simulation under `Handle::simulate`, with the Rust and the C++
/// (cxx) kernel: particles/s of `step_by` through the driver (each step also writes the
/// interleaved position frame, 12 B per particle).
struct Kernels {
    n: usize,
    steps: u64,
    /// `[Rust, C++]`.
    sims: Vec<hostloop::SimControl>,
    rates: [Samples; 2],
}

impl Kernels {
    fn new(rt: &Runtime, n: usize, steps: u64) -> hostloop::Result<Self> {
        let mut sims = Vec::new();
        for kernel in [Kernel::Rust, Kernel::Cpp] {
            sims.push(rt.simulate(
                Particles::new(n, kernel),
                SimOptions {
                    name: "bench-kernel".to_owned(),
                    ..SimOptions::default()
                },
                |positions, _info, _main| {
                    std::hint::black_box(positions.first());
                },
            )?);
        }
        Ok(Kernels {
            n,
            steps,
            sims,
            rates: Default::default(),
        })
    }

    /// Particles/s of `steps` steps of simulation `k`.
    fn measure(&self, k: usize) -> hostloop::Result<f64> {
        let sim = &self.sims[k];
        let give_up = Instant::now() + Duration::from_secs(60);
        let target = sim.step() + self.steps;
        let start = Instant::now();
        sim.step_by(self.steps);
        while sim.step() < target {
            if Instant::now() > give_up || sim.last_error().is_some() {
                return Err(sim
                    .last_error()
                    .map_or(hostloop::Error::Timeout, hostloop::Error::failed));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok((self.steps as usize * self.n) as f64 / start.elapsed().as_secs_f64())
    }

    fn round(&mut self, reversed: bool) -> hostloop::Result<()> {
        for k in if reversed { [1, 0] } else { [0, 1] } {
            let r = self.measure(k)?;
            self.rates[k].push(r);
        }
        Ok(())
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        for sim in &self.sims {
            sim.stop();
        }
    }
}

pub struct Bench {
    sizes: Vec<Size>,
    triad: Samples,
    /// The triad over arrays as big as the largest particle step's columns (24 B per
    /// particle): on a machine whose cache holds them, the step's real ceiling.
    triad_same: Samples,
    kernels: Option<Kernels>,
    /// The pool for rayon and the triad: as many threads as hostloop uses (workers + caller).
    pool: ThreadPool,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("particles::Bench").finish_non_exhaustive()
    }
}

impl Bench {
    /// `sizes` in ascending order; each measurement steps about `updates` particles in all.
    pub fn new(sizes: &[usize], updates: usize, threads: usize) -> Self {
        Bench {
            sizes: sizes
                .iter()
                .map(|&n| Size {
                    cols: Columns::new(n),
                    steps: (updates / n).max(2),
                    rayon_grain: None,
                    hostloop: Samples::default(),
                    rayon: Samples::default(),
                    sequential: Samples::default(),
                })
                .collect(),
            triad: Samples::default(),
            triad_same: Samples::default(),
            kernels: None,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("rayon pool"),
        }
    }

    pub fn round(&mut self, rt: &Runtime, reversed: bool) -> hostloop::Result<()> {
        for size in &mut self.sizes {
            let grain = size.rayon_grain(&self.pool);
            let (n, steps) = (size.n(), size.steps);
            let mut order = [0, 1, 2];
            if reversed {
                order.reverse();
            }
            for which in order {
                let cols = &mut size.cols;
                match which {
                    0 => size
                        .hostloop
                        .push(rate(steps, n, || step_hostloop(rt, cols, 0))),
                    1 => {
                        let pool = &self.pool;
                        size.rayon
                            .push(rate(steps, n, || step_rayon(pool, cols, grain)));
                    }
                    _ => size
                        .sequential
                        .push(rate(steps, n, || step_sequential(cols))),
                }
            }
        }
        self.triad.push(triad(&self.pool, 1 << 23));
        let big = self.sizes.last().map_or(0, Size::n);
        self.triad_same.push(triad(&self.pool, big));
        if self.kernels.is_none() {
            let steps = self.sizes.last().map_or(2, |s| s.steps) as u64;
            self.kernels = Some(Kernels::new(rt, big, steps)?);
        }
        if let Some(k) = &mut self.kernels {
            k.round(reversed)?;
        }
        Ok(())
    }

    /// Median particles/s per size: `(n, [hostloop, rayon, sequential])`.
    pub fn scaling(&self) -> Vec<(usize, [f64; 3])> {
        self.sizes
            .iter()
            .map(|s| {
                (
                    s.n(),
                    [s.hostloop.median(), s.rayon.median(), s.sequential.median()],
                )
            })
            .collect()
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let last = self.sizes.len().saturating_sub(1);
        for (i, size) in self.sizes.iter().enumerate() {
            let n = size.n();
            let small = n <= 10_000;
            if small && i != 0 {
                continue; // in the scaling plot only
            }
            rows.push(Row::versus(
                format!(
                    "particle step {n} vs rayon (best grain {})",
                    size.rayon_grain.unwrap_or(0)
                ),
                Unit::Rate,
                &size.hostloop,
                &size.rayon,
                if small {
                    Target::None
                } else {
                    Target::RatioAtLeast(1.0)
                },
            ));
            rows.push(Row::versus(
                format!("particle step {n} vs sequential"),
                Unit::Rate,
                &size.hostloop,
                &size.sequential,
                if small {
                    Target::RatioAtLeast(0.9)
                } else {
                    Target::None
                },
            ));
            if i == last {
                for (triad, what) in [
                    (&self.triad, "triad bandwidth (192 MB arrays)".to_owned()),
                    (
                        &self.triad_same,
                        format!("same-footprint triad ({:.1} MB)", 24.0 * n as f64 / 1e6),
                    ),
                ] {
                    let mut pct = Samples::default();
                    for (h, t) in size.hostloop.values().iter().zip(triad.values()) {
                        pct.push(100.0 * h * BYTES_PER_PARTICLE / t);
                    }
                    rows.push(Row::alone(
                        format!("particle step {n}: % of {what}"),
                        Unit::Count(1),
                        &pct,
                        Target::AtLeast(80.0),
                    ));
                }
            }
        }
        if let Some(k) = &self.kernels {
            rows.push(Row::versus(
                format!(
                    "particles sim {} via simulate: C++ (cxx) vs Rust kernel",
                    k.n
                ),
                Unit::Rate,
                &k.rates[1],
                &k.rates[0],
                Target::None,
            ));
        }
        rows
    }

    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "triad bandwidth (same run, {} threads): {:.1} GB/s over 192 MB, {:.1} GB/s over the \
             largest step's footprint; a particle step moves {} B per particle (its kernel is \
             written to vectorize: no bounds checks, the bounce as a select)",
            self.pool.current_num_threads(),
            self.triad.median() / 1e9,
            self.triad_same.median() / 1e9,
            BYTES_PER_PARTICLE
        )];
        if let Some(k) = &self.kernels {
            notes.push(format!(
                "the kernels row steps the example's Particles through the driver, frame write included: Rust {:.1} M/s, C++ {:.1} M/s (the C++ column is the one marked hostloop)",
                k.rates[0].median() / 1e6,
                k.rates[1].median() / 1e6
            ));
        }
        notes
    }
}
