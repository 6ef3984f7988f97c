//! Benchmark 4: one step of a particle simulation (structure of arrays, gravity + bounce), the
//! same kernel under hostloop's `parallel_for`, rayon's `par_chunks_mut` at its best grain
//! (swept once, then fixed), and a sequential loop; plus a STREAM-like triad in the same run as
//! the machine's memory-bandwidth ceiling.
//!
//! A step reads six `f32` columns and writes four: 40 bytes per particle, from which the
//! achieved bandwidth is computed and compared with the triad's.

use std::time::Instant;

use hostloop::Runtime;
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
#[inline(always)]
fn kernel(x: &mut [f32], y: &mut [f32], z: &mut [f32], u: &[f32], v: &mut [f32], w: &[f32]) {
    const DT: f32 = 1.0 / 60.0;
    for i in 0..x.len() {
        v[i] += -9.81 * DT;
        x[i] += u[i] * DT;
        y[i] += v[i] * DT;
        z[i] += w[i] * DT;
        if y[i] < 0.0 {
            y[i] = -y[i];
            v[i] = -v[i] * 0.8;
        }
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

pub struct Bench {
    big: Columns,
    small: Columns,
    steps_big: usize,
    steps_small: usize,
    rayon_grain: Option<usize>,
    hostloop_big: Samples,
    rayon_big: Samples,
    sequential_big: Samples,
    hostloop_small: Samples,
    sequential_small: Samples,
    triad: Samples,
    /// The pool for rayon and the triad: as many threads as hostloop uses (workers + caller).
    pool: ThreadPool,
}

impl Bench {
    pub fn new(big: usize, small: usize, steps_big: usize, threads: usize) -> Self {
        Bench {
            big: Columns::new(big),
            small: Columns::new(small),
            steps_big,
            steps_small: steps_big * 100,
            rayon_grain: None,
            hostloop_big: Samples::default(),
            rayon_big: Samples::default(),
            sequential_big: Samples::default(),
            hostloop_small: Samples::default(),
            sequential_small: Samples::default(),
            triad: Samples::default(),
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("rayon pool"),
        }
    }

    /// rayon's best grain for the big case, found once by a sweep of 2^8 … 2^16.
    fn rayon_grain(&mut self) -> usize {
        if let Some(g) = self.rayon_grain {
            return g;
        }
        let n = self.big.len();
        let (mut best, mut best_rate) = (1 << 12, 0.0);
        for shift in 8..=16 {
            let g = 1usize << shift;
            let (pool, cols) = (&self.pool, &mut self.big);
            let r = rate(self.steps_big.min(10), n, || step_rayon(pool, cols, g));
            if r > best_rate {
                (best, best_rate) = (g, r);
            }
        }
        self.rayon_grain = Some(best);
        best
    }

    pub fn round(&mut self, rt: &Runtime, reversed: bool) {
        let grain = self.rayon_grain();
        let (n, steps) = (self.big.len(), self.steps_big);
        let mut order = [0, 1, 2];
        if reversed {
            order.reverse();
        }
        for which in order {
            let cols = &mut self.big;
            match which {
                0 => self
                    .hostloop_big
                    .push(rate(steps, n, || step_hostloop(rt, cols, 0))),
                1 => {
                    let pool = &self.pool;
                    self.rayon_big
                        .push(rate(steps, n, || step_rayon(pool, cols, grain)));
                }
                _ => self
                    .sequential_big
                    .push(rate(steps, n, || step_sequential(cols))),
            }
        }
        let (n, steps) = (self.small.len(), self.steps_small);
        let cols = &mut self.small;
        if reversed {
            self.sequential_small
                .push(rate(steps, n, || step_sequential(cols)));
            self.hostloop_small
                .push(rate(steps, n, || step_hostloop(rt, cols, 0)));
        } else {
            self.hostloop_small
                .push(rate(steps, n, || step_hostloop(rt, cols, 0)));
            self.sequential_small
                .push(rate(steps, n, || step_sequential(cols)));
        }
        self.triad.push(triad(&self.pool, 1 << 23));
    }

    pub fn rows(&self) -> Vec<Row> {
        let big = self.big.len();
        let small = self.small.len();
        let mut pct = Samples::default();
        for (h, t) in self.hostloop_big.values().iter().zip(self.triad.values()) {
            pct.push(100.0 * h * BYTES_PER_PARTICLE / t);
        }
        vec![
            Row::versus(
                format!(
                    "particle step {big} vs rayon (grain {})",
                    self.rayon_grain.unwrap_or(0)
                ),
                Unit::Rate,
                &self.hostloop_big,
                &self.rayon_big,
                Target::RatioAtLeast(1.0),
            ),
            Row::versus(
                format!("particle step {big} vs sequential"),
                Unit::Rate,
                &self.hostloop_big,
                &self.sequential_big,
                Target::None,
            ),
            Row::alone(
                format!("particle step {big}: % of triad bandwidth"),
                Unit::Count(1),
                &pct,
                Target::AtLeast(80.0),
            ),
            Row::versus(
                format!("particle step {small} vs sequential"),
                Unit::Rate,
                &self.hostloop_small,
                &self.sequential_small,
                Target::RatioAtLeast(0.9),
            ),
        ]
    }

    pub fn notes(&self) -> Vec<String> {
        vec![format!(
            "triad bandwidth (same run, {} threads): {:.1} GB/s",
            self.pool.current_num_threads(),
            self.triad.median() / 1e9
        )]
    }
}
