//! Side-by-side benchmarks of hostloop against its peers, in one process.
//!
//! Every benchmark runs all its contenders once per round, interleaved (A B A B, with the order
//! reversed every other round), so the noise of a small VM hits everyone alike; the table
//! reports the median of the rounds and hostloop's ratio to each peer. Timings are reported,
//! never asserted.
//!
//! ```text
//! cargo run --release -p hostloop-bench             # full run
//! cargo run --release -p hostloop-bench -- --quick  # smoke run (CI)
//! ```

mod alloc;
mod doorbell;
mod drain;
mod particles;
mod report;
mod spawn;

use std::error::Error;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Instant;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const USAGE: &str = "\
usage: hostloop-bench [--quick]

  (default)  full sizes, 15 interleaved rounds (about a minute on 2 cores)
  --quick    small sizes, one round: proves the bench builds and runs (CI)
";

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Config {
    rounds: usize,
    /// Items per drain measurement (benchmark 1).
    items: usize,
    /// Jobs per spawn measurement (benchmark 2).
    jobs: usize,
    /// Posts per doorbell burst (benchmark 3).
    burst: usize,
    /// Particles in the big and small step (benchmark 4), and steps per big measurement.
    particles: (usize, usize, usize),
}

impl Config {
    const FULL: Config = Config {
        rounds: 15,
        items: 1_000_000,
        jobs: 200_000,
        burst: 100_000,
        particles: (1_000_000, 1_000, 20),
    };

    const QUICK: Config = Config {
        rounds: 1,
        items: 200_000,
        jobs: 50_000,
        burst: 100_000,
        particles: (100_000, 1_000, 2),
    };
}

fn main() -> ExitCode {
    let mut config = Config::FULL;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => config = Config::QUICK,
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprint!("hostloop-bench: unknown argument `{other}`\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostloop-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), Box<dyn Error>> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    // The main thread keeps a core, as in a host application.
    let workers = cores.saturating_sub(1).max(1);
    println!(
        "hostloop-bench: {cores} cores, {workers} worker(s) for hostloop and rayon, {} round(s)",
        config.rounds
    );
    println!(
        "  drain: {} items; spawn: {} jobs; doorbell: {}-post bursts",
        config.items, config.jobs, config.burst
    );

    // This thread builds the runtime, so it is the runtime's main thread.
    let rt = hostloop::Runtime::builder()
        .workers(workers)
        .io_threads(1)
        .build()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;

    let mut drain = drain::Bench::new(config.items);
    let mut spawn = spawn::Bench::new(config.jobs);
    let mut doorbell = doorbell::Bench::new(config.burst);
    let (big, small, steps) = config.particles;
    let mut particles = particles::Bench::new(big, small, steps, workers + 1);
    let start = Instant::now();
    for round in 0..config.rounds {
        let reversed = round % 2 == 1;
        drain.round(&rt, reversed);
        spawn.round(&rt, &pool, reversed)?;
        doorbell.round(&rt)?;
        particles.round(&rt, reversed);
    }
    let elapsed = start.elapsed();

    let mut rows = drain.rows();
    rows.extend(spawn.rows());
    rows.extend(doorbell.rows());
    rows.extend(particles.rows());
    println!();
    report::print_table(&rows);
    println!();
    println!(
        "medians of {} round(s); ratio = median of the per-round hostloop/peer ratios; {:.1} s",
        config.rounds,
        elapsed.as_secs_f64()
    );
    for note in drain.notes().into_iter().chain(particles.notes()) {
        println!("{note}");
    }
    if config.rounds == 1 {
        println!("a single cold round is a smoke test, not a measurement");
    }
    Ok(())
}
