//! Benchmark 6: the latest-frame handoff (`hostloop::latest::latest`) against the
//! `triple_buffer` crate, same payload, same loops, interleaved.
//!
//! Both are filled in place (`LatestWriter::write(fill)` vs `input_buffer_mut` + `publish`) with
//! a 64-byte frame, so the rows measure the handoff protocol, not a copy. Single-thread rows time
//! a tight loop; the concurrent rows run a writer thread and a reader thread for the same
//! window and time each side's operations.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::report::{Row, Samples, Target, Unit};

/// Seconds per operation of `ops` runs of `f`.
fn per_op(ops: usize, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..ops as u64 {
        f(i);
    }
    start.elapsed().as_secs_f64() / ops as f64
}

/// `[write, read (nothing new), write + read, read under a writer thread, write under a reader]`.
fn measure(ops: usize, window: Duration, use_hostloop: bool) -> [f64; 5] {
    if use_hostloop {
        let (w, r) = hostloop::latest::latest([0u64; 8]);
        measure_with(
            ops,
            window,
            w,
            r,
            |w, v| w.write(|f| f[0] = v),
            // `read` is `None` when nothing new arrived: then the current frame is the newest.
            |r| match r.read() {
                Some(f) => f[0],
                None => r.current()[0],
            },
        )
    } else {
        let (i, o) = triple_buffer::triple_buffer(&[0u64; 8]);
        measure_with(
            ops,
            window,
            i,
            o,
            |i, v| {
                i.input_buffer_mut()[0] = v;
                i.publish();
            },
            |o| o.read()[0],
        )
    }
}

/// Runs `f` in batches from the start line until `stop`; seconds per call.
fn timed_until(stop: &AtomicBool, start_line: &Barrier, mut f: impl FnMut(u64)) -> f64 {
    start_line.wait();
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            f(n);
            n += 1;
        }
    }
    start.elapsed().as_secs_f64() / n.max(1) as f64
}

fn measure_with<W: Send, R: Send>(
    ops: usize,
    window: Duration,
    mut w: W,
    mut r: R,
    write: impl Fn(&mut W, u64) + Sync,
    read: impl Fn(&mut R) -> u64 + Sync,
) -> [f64; 5] {
    let write_only = per_op(ops, |i| write(&mut w, black_box(i)));
    let read_only = per_op(ops, |_| {
        black_box(read(&mut r));
    });
    let pair = per_op(ops, |i| {
        write(&mut w, black_box(i));
        black_box(read(&mut r));
    });
    // Both sides run for the same window, each on its own thread, counting operations.
    let stop = AtomicBool::new(false);
    let start_line = Barrier::new(3);
    let (reader, writer) = thread::scope(|s| {
        let (stop, start_line, write, read) = (&stop, &start_line, &write, &read);
        let writer =
            s.spawn(move || timed_until(stop, start_line, |n| write(&mut w, black_box(n))));
        let reader = s.spawn(move || {
            timed_until(stop, start_line, |_| {
                black_box(read(&mut r));
            })
        });
        start_line.wait();
        thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        (
            reader.join().expect("reader thread"),
            writer.join().expect("writer thread"),
        )
    });
    [write_only, read_only, pair, reader, writer]
}

const NAMES: [&str; 5] = [
    "latest frame: write (in place)",
    "latest frame: read, nothing new",
    "latest frame: write + read, one thread",
    "latest frame: read while a thread writes",
    "latest frame: write while a thread reads",
];

/// The frames benchmark's configuration and samples.
#[derive(Debug)]
pub struct Bench {
    ops: usize,
    /// How long the two-thread measurements run.
    window: Duration,
    /// `[hostloop, triple_buffer][operation]`, seconds per operation.
    times: [[Samples; 5]; 2],
}

impl Bench {
    pub fn new(ops: usize, window: Duration) -> Self {
        Bench {
            ops,
            window,
            times: Default::default(),
        }
    }

    pub fn round(&mut self, reversed: bool) {
        for which in if reversed { [1, 0] } else { [0, 1] } {
            let t = measure(self.ops, self.window, which == 0);
            for (samples, v) in self.times[which].iter_mut().zip(t) {
                samples.push(v);
            }
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        NAMES
            .iter()
            .enumerate()
            .map(|(k, name)| {
                Row::versus(
                    format!("{name} vs triple_buffer"),
                    Unit::Time,
                    &self.times[0][k],
                    &self.times[1][k],
                    Target::RatioAtMost(1.5),
                )
            })
            .collect()
    }
}
