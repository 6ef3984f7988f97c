//! Side-by-side benchmarks of hostloop against its peers, in one process.
//!
//! Every benchmark runs all its contenders once per round, interleaved (A B A B, with the order
//! reversed every other round), so the noise of a small VM hits everyone alike; the table
//! reports the median of the rounds (or percentiles of the pooled latency samples) and
//! hostloop's ratio to each peer or to the machine's limit measured in the same run. Timings
//! are reported, never asserted.
//!
//! ```text
//! cargo run --release -p hostloop-bench                # full run, prints the table
//! cargo run --release -p hostloop-bench -- --report    # full run, writes BENCHMARKS.md and plots
//! cargo run --release -p hostloop-bench -- --quick     # smoke run (CI): writes nothing
//! ```

mod alloc;
mod cancel;
mod doorbell;
mod drain;
mod farm;
mod frames;
mod frametime;
mod isolation;
mod memory;
mod oversub;
mod particles;
mod plot;
mod report;
mod spawn;
mod sys;
mod wake;

use std::error::Error;
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use report::Row;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const USAGE: &str = "\
usage: hostloop-bench [--quick] [--report]

  (default)  full sizes, 15 interleaved rounds (several minutes on 2 cores)
  --quick    small sizes, one round: proves the bench builds and runs (CI)
  --report   also write BENCHMARKS.md at the workspace root and SVG plots in benches/plots/
  --only S   run only the benchmark sections whose names contain S (development aid; the other
             rows print n/a)
";

/// Sizes of one run.
#[derive(Debug, Clone)]
struct Config {
    name: &'static str,
    /// Run only the sections whose names contain this.
    only: Option<String>,
    rounds: usize,
    /// Items per drain measurement (benchmark 1).
    items: usize,
    /// Jobs per spawn measurement (benchmark 4).
    jobs: usize,
    /// Posts per doorbell burst (benchmark 2).
    burst: usize,
    /// Wake-ups per contender and round (benchmark 2).
    wake_samples: usize,
    /// Marshal samples per mode, round and host tick of 1/10/50 ms (benchmark 3).
    marshal_samples: [usize; 3],
    /// Particle counts (ascending) and particles stepped per measurement (benchmark 5).
    particles: &'static [usize],
    updates: usize,
    /// Operations per latest-frame measurement (benchmark 6).
    frame_ops: usize,
    frame_window: Duration,
    /// Host frame period and frames per block (benchmark 7), particles simulated meanwhile.
    frame_period: Duration,
    frames_per_block: usize,
    frame_particles: usize,
    /// Cancels per contender and round, queued jobs at shutdown, shutdown runs (benchmark 8).
    cancels: usize,
    queued: usize,
    shutdowns: usize,
    /// Agent counts (benchmark 9).
    agents: &'static [usize],
    /// Items and jobs of the oversubscribed runs (benchmark 10).
    oversub: (usize, usize),
}

impl Config {
    fn full() -> Config {
        Config {
            name: "full",
            only: None,
            rounds: 15,
            items: 1_000_000,
            jobs: 200_000,
            burst: 100_000,
            wake_samples: 400,
            marshal_samples: [100, 30, 10],
            particles: &[1_000, 10_000, 100_000, 1_000_000],
            updates: 20_000_000,
            frame_ops: 5_000_000,
            frame_window: Duration::from_millis(50),
            frame_period: Duration::from_micros(16_667),
            frames_per_block: 120,
            frame_particles: 1_000_000,
            cancels: 100,
            queued: 1_000_000,
            shutdowns: 3,
            agents: &[100_000, 1_000_000],
            oversub: (500_000, 100_000),
        }
    }

    fn quick() -> Config {
        Config {
            name: "quick",
            only: None,
            rounds: 1,
            items: 200_000,
            jobs: 50_000,
            burst: 100_000,
            wake_samples: 100,
            marshal_samples: [30, 10, 4],
            particles: &[1_000, 100_000],
            updates: 2_000_000,
            frame_ops: 1_000_000,
            frame_window: Duration::from_millis(10),
            frame_period: Duration::from_millis(5),
            frames_per_block: 40,
            frame_particles: 100_000,
            cancels: 50,
            queued: 100_000,
            shutdowns: 1,
            agents: &[100_000],
            oversub: (100_000, 20_000),
        }
    }
}

fn main() -> ExitCode {
    let mut config = Config::full();
    let mut write_report = false;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => config = Config::quick(),
            "--only" => only = args.next(),
            "--report" => write_report = true,
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
    config.only = only;
    match run(&config, write_report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostloop-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything measured, for the table, the notes and the plots.
struct Results {
    rows: Vec<Row>,
    notes: Vec<String>,
    wake: wake::Bench,
    scaling: Vec<(usize, [f64; 3])>,
    elapsed: Duration,
}

fn run(config: &Config, write_report: bool) -> Result<(), Box<dyn Error>> {
    let command = format!(
        "cargo run --release -p hostloop-bench{}{}",
        if config.name == "quick" {
            " -- --quick"
        } else {
            ""
        },
        match (write_report, config.name == "quick") {
            (true, true) => " --report",
            (true, false) => " -- --report",
            _ => "",
        }
    );
    // Before anything is written: the report's own files would make every tree look dirty.
    let measured_at = commit(&workspace_root());
    let load_before = load_average();
    let results = measure(config)?;
    let load_after = load_average();
    let table = report::table(&results.rows);
    println!();
    print!("{table}");
    println!();
    let mut results = results;
    results.notes.push(format!(
        "machine load average (1 min) before the run {load_before}, after {load_after}: other \
         processes share these CPUs, which is why contenders are interleaved"
    ));
    for note in &results.notes {
        println!("- {note}");
    }
    if write_report {
        write_files(config, &command, &measured_at, &table, &results)?;
    }
    Ok(())
}

/// Whether `--only` (if given) selects the section `name`.
fn wanted_name(config: &Config, name: &str) -> bool {
    config
        .only
        .as_ref()
        .is_none_or(|o| name.contains(o.as_str()))
}

fn measure(config: &Config) -> Result<Results, Box<dyn Error>> {
    sys::remember_cpus()?;
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    // The main thread keeps a core, as in a host application.
    let workers = cores.saturating_sub(1).max(1);
    println!(
        "hostloop-bench ({}): {cores} cores, {workers} worker(s) for hostloop and rayon, {} round(s)",
        config.name, config.rounds
    );

    // This thread builds the runtime, so it is the runtime's main thread.
    // No backlog limit: the drain rows measure raw throughput against unbounded peers.
    let rt = hostloop::Runtime::builder()
        .workers(workers)
        .io_threads(1)
        .main_backlog_limit(usize::MAX)
        .build()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;

    let mut drain = drain::Bench::new(config.items);
    let mut spawn = spawn::Bench::new(config.jobs);
    let mut doorbell = doorbell::Bench::new(config.burst);
    let mut wake = wake::Bench::new(config.wake_samples, config.marshal_samples);
    let mut particles = particles::Bench::new(config.particles, config.updates, workers + 1);
    let mut frames = frames::Bench::new(config.frame_ops, config.frame_window);
    let mut frametime = frametime::Bench::new(
        config.frame_period,
        config.frames_per_block,
        config.frame_particles,
    );
    let mut cancel = cancel::Bench::new(config.cancels, config.queued, config.shutdowns);
    let mut oversub = oversub::Bench::new(config.oversub.0, config.oversub.1);
    let mut memory = memory::Bench::new(config.agents.to_vec());
    let mut pool_bench = if wanted_name(config, "pool") {
        Some(isolation::PoolBench::new(if config.name == "quick" {
            20
        } else {
            300
        })?)
    } else {
        None
    };
    let mut shm_bench = if wanted_name(config, "shm") {
        Some(if config.name == "quick" {
            isolation::ShmBench::new(4 << 20, 10)?
        } else {
            isolation::ShmBench::new(16 << 20, 160)?
        })
    } else {
        None
    };
    let mut isolation = if wanted_name(config, "isolation") {
        Some(isolation::Bench::new(
            config.frame_particles,
            config.frame_period,
            config.frames_per_block,
        )?)
    } else {
        None
    };

    let mut farm = if wanted_name(config, "farm") {
        Some(farm::Bench::new(if config.name == "quick" {
            farm::Sizes::quick()
        } else {
            farm::Sizes::full()
        })?)
    } else {
        None
    };

    let start = Instant::now();
    let wanted = |name: &str| {
        config
            .only
            .as_ref()
            .is_none_or(|o| name.contains(o.as_str()))
    };
    let section = |name: &str, f: &mut dyn FnMut() -> Result<(), Box<dyn Error>>| {
        if !wanted(name) {
            return Ok(());
        }
        let t = Instant::now();
        let r = f();
        eprint!(" {name} {:.1}s", t.elapsed().as_secs_f64());
        r
    };
    for round in 0..config.rounds {
        let reversed = round % 2 == 1;
        eprint!("round {}/{}:", round + 1, config.rounds);
        section("drain", &mut || {
            drain.round(&rt, reversed);
            Ok(())
        })?;
        section("spawn", &mut || Ok(spawn.round(&rt, &pool, reversed)?))?;
        section("doorbell", &mut || Ok(doorbell.round(&rt)?))?;
        section("wake", &mut || wake.round_wake(&rt, reversed))?;
        section("marshal", &mut || Ok(wake.round_marshal(&rt, reversed)?))?;
        section("particles", &mut || Ok(particles.round(&rt, reversed)?))?;
        section("frames", &mut || {
            frames.round(reversed);
            Ok(())
        })?;
        section("cancel", &mut || cancel.round(&rt, reversed))?;
        section("frametime", &mut || Ok(frametime.round(&rt, reversed)?))?;
        section("oversub", &mut || oversub.round(&rt, &pool, reversed))?;
        if let Some(iso) = isolation.as_mut() {
            section("isolation", &mut || Ok(iso.round(reversed)?))?;
        }
        if let Some(pb) = pool_bench.as_mut() {
            section("pool", &mut || Ok(pb.round(reversed)?))?;
        }
        if let Some(sb) = shm_bench.as_mut() {
            section("shm", &mut || Ok(sb.round(reversed)?))?;
        }
        eprintln!();
    }
    frametime.finish();
    let t = Instant::now();
    if wanted("memory") {
        memory.run(&rt)?;
    }
    eprintln!("memory {:.1}s", t.elapsed().as_secs_f64());
    if let Some(f) = farm.as_mut() {
        let t = Instant::now();
        f.run()?;
        eprintln!("farm {:.1}s", t.elapsed().as_secs_f64());
    }
    let elapsed = start.elapsed();

    let mut rows = drain.rows();
    rows.extend(doorbell.rows());
    rows.extend(wake.rows());
    rows.extend(spawn.rows());
    rows.extend(particles.rows());
    rows.extend(frames.rows());
    rows.extend(frametime.rows());
    rows.extend(cancel.rows());
    rows.extend(memory.rows());
    rows.extend(oversub.rows());
    if let Some(iso) = isolation.as_mut() {
        rows.extend(iso.rows());
    }
    if let Some(pb) = pool_bench.as_ref() {
        rows.extend(pb.rows());
    }
    if let Some(sb) = shm_bench.as_ref() {
        rows.extend(sb.rows());
    }
    if let Some(f) = farm.as_mut() {
        rows.extend(f.rows());
    }

    let mut notes = vec![format!(
        "medians of {} round(s) (latencies: percentiles of all samples pooled); ratio = median \
         of the per-round hostloop/peer ratios, or hostloop/peer (or /limit) of the pooled \
         percentiles; measured in {:.1} s",
        config.rounds,
        elapsed.as_secs_f64()
    )];
    notes.extend(drain.notes());
    notes.extend(wake.notes());
    notes.extend(particles.notes());
    notes.extend(frametime.notes());
    notes.extend(cancel.notes());
    if let Some(f) = farm.as_ref() {
        notes.extend(f.notes());
    }
    if config.rounds == 1 {
        notes.push("a single cold round is a smoke test, not a measurement".to_owned());
    }
    Ok(Results {
        rows,
        notes,
        scaling: particles.scaling(),
        wake,
        elapsed,
    })
}

/// The checked-out commit (short hash, `-dirty` with uncommitted changes), or "unknown".
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        None => "unknown".to_owned(),
    }
}

/// The 1-minute load average, as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The workspace root (the bench crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The first line of `/proc/cpuinfo` starting with `key`, its value.
fn proc_value(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let model = proc_value("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".to_owned());
    let memory = proc_value("/proc/meminfo", "MemTotal")
        .and_then(|m| m.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let virt = proc_value("/proc/cpuinfo", "flags")
        .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    format!(
        "- CPUs (`nproc`): {cores}\n- CPU model: {model}{}\n- memory: {memory}\n- Linux {kernel}\n",
        if virt { " (virtual machine)" } else { "" }
    )
}

/// Where hand-written notes begin in BENCHMARKS.md; `--report` keeps everything after it.
const KEEP_MARKER: &str =
    "<!-- Everything below this line is hand-written and kept by --report. -->";

fn write_files(
    config: &Config,
    command: &str,
    measured_at: &str,
    table: &str,
    results: &Results,
) -> Result<(), Box<dyn Error>> {
    let root = workspace_root();
    let plots = root.join("benches").join("plots");
    std::fs::create_dir_all(&plots)?;
    let mut wake = results.wake.clone_distributions();
    let us = plot::Axis {
        label: "latency (microseconds, log scale)",
        log: true,
    };
    let fraction = plot::Axis {
        label: "fraction of samples at or below",
        log: false,
    };
    std::fs::write(
        plots.join("wake-latency.svg"),
        plot::line_plot(
            "Wake latency of a sleeping host loop (CDF)",
            us,
            fraction,
            &[
                plot::cdf("hostloop doorbell", wake.0.sorted(), 1e6),
                plot::cdf("raw eventfd", wake.1.sorted(), 1e6),
            ],
        ),
    )?;
    let mut series = Vec::new();
    for (ms, [fd, timer]) in wake::TICKS_MS.iter().zip(wake.2.iter_mut()) {
        series.push(plot::cdf(format!("{ms} ms tick, fd"), fd.sorted(), 1e6));
        series.push(plot::cdf(
            format!("{ms} ms tick, timer"),
            timer.sorted(),
            1e6,
        ));
    }
    std::fs::write(
        plots.join("marshal-latency.svg"),
        plot::line_plot(
            "Post -> run on the main thread, by host tick (CDF)",
            us,
            fraction,
            &series,
        ),
    )?;
    let names = ["hostloop parallel_for", "rayon best grain", "sequential"];
    let series: Vec<plot::Series> = names
        .iter()
        .enumerate()
        .map(|(k, name)| plot::Series {
            name: (*name).to_owned(),
            points: results
                .scaling
                .iter()
                .map(|(n, r)| (*n as f64, r[k] / 1e6))
                .collect(),
        })
        .collect();
    std::fs::write(
        plots.join("particle-scaling.svg"),
        plot::line_plot(
            "Particle step throughput by particle count",
            plot::Axis {
                label: "particles (log scale)",
                log: true,
            },
            plot::Axis {
                label: "million particles stepped per second",
                log: false,
            },
            &series,
        ),
    )?;

    let path = root.join("BENCHMARKS.md");
    let kept = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| old.split_once(KEEP_MARKER).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| "\n".to_owned());
    let mut md = String::new();
    let _ = writeln!(md, "# hostloop benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `{command}` ({} mode, {} round(s), {:.0} s of measuring). Everything above \
         the marker line below is written by that command; do not edit it by hand.\n",
        config.name,
        config.rounds,
        results.elapsed.as_secs_f64()
    );
    let _ = writeln!(md, "Measured at commit `{measured_at}`.\n");
    let _ = writeln!(md, "## The machine\n\n{}", machine());
    let _ = writeln!(
        md,
        "## Results\n\nhostloop against its peers in the same process, interleaved; `limit` is \
         the machine's own ceiling measured in the same run (raw eventfd, a plain atomic flag, \
         the frame period). Ratios are hostloop / peer (or / limit): above 1 is better for rates, \
         below 1 is better for times and bytes.\n"
    );
    let _ = writeln!(md, "```text\n{table}```\n");
    let missed: Vec<&str> = results
        .rows
        .iter()
        .filter(|r| r.met() == Some(false))
        .map(Row::benchmark)
        .collect();
    let _ = writeln!(md, "## Notes from the run\n");
    for note in &results.notes {
        let _ = writeln!(md, "- {note}");
    }
    if missed.is_empty() {
        let _ = writeln!(md, "- every target was met in this run");
    } else {
        let _ = writeln!(md, "- targets missed in this run: {}", missed.join("; "));
    }
    let _ = writeln!(
        md,
        "\n## Plots\n\n![wake latency](benches/plots/wake-latency.svg)\n\n\
         ![marshal latency](benches/plots/marshal-latency.svg)\n\n\
         ![particle scaling](benches/plots/particle-scaling.svg)\n"
    );
    let _ = write!(md, "{KEEP_MARKER}{kept}");
    std::fs::write(&path, md)?;
    println!(
        "wrote BENCHMARKS.md and benches/plots/*.svg under {}",
        root.file_name()
            .map_or_else(|| ".".into(), |n| n.to_string_lossy())
    );
    Ok(())
}
