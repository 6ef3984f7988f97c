//! `hostloop-worker run`: a simulation plugin stepped headless, to a step, with snapshots and a
//! frame cache — the unit of work of a farm.
//!
//! The runner is a host like any other: it loads the plugin in its own process, with the same
//! loader and services, and talks to it through the simulation plugin protocol ([`SimPlugin`]:
//! `<name>/configure`, `<name>/reset`, `<name>/advance`, `<name>/step` frames). The simulation
//! is paused and asked for exact runs of steps — a seek to a frame (lock-step) without a cache,
//! `<name>/advance N` (every frame delivered) with one — never past a snapshot's step, each run
//! sized to take about a quarter of a second; so a run is a pure function of its start state and
//! its step count (the same steps in one run, in several chained runs, or stepped in a host give
//! the same bytes), and a signal is answered within one such run.
//!
//! [`SimPlugin`]: crate::plugin::SimPlugin

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{step_message, CacheError, CacheWriter, Recorder};
use crate::event::Event;
use crate::internal::sync::lock;
use crate::plugin::sim_tool::state_with_settings;
use crate::runtime::Runtime;
use crate::sink::{Message, Payload};

/// Exit status: the run reached its step and saved what it was asked to.
pub const EXIT_DONE: u8 = 0;
/// Exit status: the run failed (the plugin, its state, a file); the message says why. A
/// snapshot written before the failure is still there.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: stopped early by `SIGTERM`, `SIGUSR1` or `SIGINT`, at a step boundary, with the
/// state saved to `--save`: run again with `--resume` to go on (`EX_TEMPFAIL`).
pub const EXIT_INTERRUPTED: u8 = 75;

/// The settings the runner drives a simulation with, applied after the user's: paused,
/// following the host's frame, every frame delivered. They are saved with the state, so they do
/// not depend on the run's options: a state is the same bytes with or without a cache.
///
/// With a cache every frame is needed: the runner asks for N more steps (`<name>/advance`), each
/// frame delivered. Without one only the step a snapshot is taken at matters: it sends that
/// frame number (lock-step) and the simulation seeks there, publishing only that frame.
const DRIVE: &str = "lockstep=1 playing=0 delivery=every";
/// How long the pump may work before the loop looks at the clock and the signals again.
const BUDGET: Duration = Duration::from_millis(50);

const USAGE: &str = "\
usage: hostloop-worker run [OPTIONS] PLUGIN

Steps a simulation plugin (one built on hostloop::plugin::SimPlugin) headless, in
exact runs of steps: from its start (or a saved state) to a step, saving its state and writing
its frames to a cache on the way. The same steps give the same bytes, in one run or
in several chained ones.

Where to start (at most one of):
  --configure TEXT     key=value settings for a fresh start, e.g. \"agents=100000\"
                       (the plugin's own keys; the run resets to step 0 after them)
  --restore FILE       start from a state saved by --save (or by a host's save)
  --resume             if the --save file exists, start from it instead: a run that
                       was stopped (or killed) and started again goes on from its
                       last snapshot

How far (exactly one):
  --steps N            N steps from the start
  --until STEP         to step STEP

What to keep:
  --save FILE          the state at the end (replaced atomically: a kill mid-write
                       leaves the previous one), and every --save-every steps
  --save-every K       also save every K steps
  --cache FILE         append each step's frames to a frame cache (hostloop::cache);
                       a resumed run first cuts frames after its start step
  --cache-topic TOPIC  cache only this topic (repeatable; default: every topic but
                       <name>/step and <name>/error)

Other:
  --workers N          worker threads (default: one per CPU)
  --step-timeout SECS  a step that takes longer is an error (default 600)
  --progress MODE      bar, lines or none (default: bar on a terminal, else lines)
  -h, --help           this text

SIGTERM, SIGUSR1 and SIGINT stop the run at a step boundary (within about a quarter
of a second of steps), after saving.

Exit status: 0 done; 1 failed (the message says why); 2 bad arguments;
75 stopped by a signal with the state saved (run again with --resume).

Example, 1000 steps in two segments:
  hostloop-worker run --configure agents=100000 --until 500 --save seg.state \\
      --cache frames.hlcache libhostloop_particles.so
  hostloop-worker run --restore seg.state --until 1000 --save end.state \\
      --cache frames.hlcache libhostloop_particles.so
";

/// How far a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Steps(u64),
    Until(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgressMode {
    Bar,
    Lines,
    None,
}

#[derive(Debug)]
struct Args {
    plugin: PathBuf,
    configure: Option<String>,
    restore: Option<PathBuf>,
    resume: bool,
    target: Target,
    save: Option<PathBuf>,
    save_every: Option<u64>,
    cache: Option<PathBuf>,
    cache_topics: Vec<String>,
    workers: usize,
    step_timeout: Duration,
    progress: ProgressMode,
}

/// Parses the arguments after `run`. `Ok(None)` for `--help`.
fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut plugin = None;
    let mut configure = None;
    let mut restore = None;
    let mut resume = false;
    let mut target = None;
    let mut save = None;
    let mut save_every = None;
    let mut cache = None;
    let mut cache_topics = Vec::new();
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut step_timeout = Duration::from_secs(600);
    let mut progress = if std::io::stderr().is_terminal() {
        ProgressMode::Bar
    } else {
        ProgressMode::Lines
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a whole number, not {v:?}"))
        };
        let set_target = |target: &mut Option<Target>, t: Target| match target {
            Some(_) => Err("give one of --steps and --until".to_string()),
            None => {
                *target = Some(t);
                Ok(())
            }
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--configure" => configure = Some(value(a)?),
            "--restore" => restore = Some(PathBuf::from(value(a)?)),
            "--resume" => resume = true,
            "--steps" => set_target(&mut target, Target::Steps(number(a, value(a)?)?))?,
            "--until" => set_target(&mut target, Target::Until(number(a, value(a)?)?))?,
            "--save" => save = Some(PathBuf::from(value(a)?)),
            "--save-every" => match number(a, value(a)?)? {
                0 => return Err("--save-every needs a number above 0".into()),
                k => save_every = Some(k),
            },
            "--cache" => cache = Some(PathBuf::from(value(a)?)),
            "--cache-topic" => cache_topics.push(value(a)?),
            "--workers" => match number(a, value(a)?)? {
                0 => return Err("--workers needs a number above 0".into()),
                n => workers = n as usize,
            },
            "--step-timeout" => {
                step_timeout = Duration::from_secs(number(a, value(a)?)?.max(1));
            }
            "--progress" => {
                progress = match value(a)?.as_str() {
                    "bar" => ProgressMode::Bar,
                    "lines" => ProgressMode::Lines,
                    "none" => ProgressMode::None,
                    other => {
                        return Err(format!("--progress is bar, lines or none, not {other:?}"))
                    }
                }
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s => match plugin {
                None => plugin = Some(PathBuf::from(s)),
                Some(_) => return Err(format!("one plugin only: {s:?} is extra")),
            },
        }
    }
    let plugin = plugin.ok_or("no PLUGIN given")?;
    let target = target.ok_or("give --steps N or --until STEP")?;
    if configure.is_some() && restore.is_some() {
        return Err("--configure is for a fresh start; a restored state keeps its own".into());
    }
    if resume && save.is_none() {
        return Err("--resume resumes from the --save file: give --save".into());
    }
    if save_every.is_some() && save.is_none() {
        return Err("--save-every needs --save".into());
    }
    Ok(Some(Args {
        plugin,
        configure,
        restore,
        resume,
        target,
        save,
        save_every,
        cache,
        cache_topics,
        workers,
        step_timeout,
        progress,
    }))
}

/// The signal that asked the run to stop (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(signal, Ordering::Relaxed);
}

fn install_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGUSR1, libc::SIGINT] {
        // SAFETY: a zeroed `sigaction` is a valid empty one; the handler only stores to an
        // atomic, which is async-signal-safe. No SA_RESTART: a signal ends a blocking wait early
        // (the loop then looks at STOP).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// What the sink saw, shared with the loop (both on the main thread).
struct Seen {
    name: String,
    /// The step of the latest accepted frame, and how many accepted frames arrived.
    step: Option<u64>,
    frames: u64,
    /// Frames of configurations below this are the plugin's default simulation's (or the one
    /// a configure replaced): ignored.
    min_configuration: u64,
    /// Whether the frame now arriving (since its `<name>/step`) is accepted.
    current: bool,
    errors: Vec<String>,
    cache: Option<Recorder>,
    cache_error: Option<CacheError>,
}

impl Seen {
    fn on_message(&mut self, m: &Message<'_>) {
        let Some(rest) = m
            .topic
            .strip_prefix(self.name.as_str())
            .and_then(|t| t.strip_prefix('/'))
        else {
            return self.cache_message(m);
        };
        match (rest, m.payload) {
            ("step", _) => {
                if let Some((step, configuration)) = step_message(m) {
                    self.current = configuration >= self.min_configuration;
                    if self.current {
                        self.step = Some(step);
                        self.frames += 1;
                    }
                }
            }
            ("error", p) => {
                let text = match p {
                    Payload::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    Payload::Array(_) => "(an array)".into(),
                };
                self.errors.push(text);
            }
            _ => {}
        }
        self.cache_message(m);
    }

    fn cache_message(&mut self, m: &Message<'_>) {
        if let Some(r) = &mut self.cache {
            if let Err(e) = r.record(m) {
                self.cache_error.get_or_insert(e);
            }
        }
    }
}

/// A run that could not go on: what to print, and whether a signal stopped it.
enum Stop {
    Failed(String),
    Interrupted(i32, u64),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Failed(s)
    }
}

/// The runner's entry point: `args` are the arguments after `run`.
#[doc(hidden)]
pub fn runner_main(args: &[String]) -> ExitCode {
    let args = match parse(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::from(EXIT_DONE);
        }
        Err(e) => {
            eprintln!("hostloop-worker run: {e}");
            eprintln!("(hostloop-worker run --help for the options)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    install_stop_signals();
    match run(&args) {
        Ok(()) => ExitCode::from(EXIT_DONE),
        Err(Stop::Failed(e)) => {
            eprintln!("hostloop-worker run: {e}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Stop::Interrupted(signal, step)) => {
            let saved = match &args.save {
                Some(p) => format!("state saved to {}", p.display()),
                None => "no --save given, nothing saved".into(),
            };
            eprintln!(
                "hostloop-worker run: stopped by {} at step {step}; {saved}",
                signal_name(signal)
            );
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}

/// Reads a state file, saying which one in the error.
fn read_state(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the state {}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed, renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot save the state to {}: {e}", path.display())
    })
}

fn run(args: &Args) -> Result<(), Stop> {
    let rt = Runtime::builder()
        .workers(args.workers)
        .thread_name("hl-run")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = run_on(&rt, args);
    rt.shutdown(Duration::from_secs(10));
    result
}

fn run_on(rt: &Runtime, args: &Args) -> Result<(), Stop> {
    let seen = Arc::new(Mutex::new(Seen {
        name: String::new(),
        step: None,
        frames: 0,
        min_configuration: u64::MAX,
        current: false,
        errors: Vec::new(),
        cache: None,
        cache_error: None,
    }));
    let sink_seen = seen.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        lock(&sink_seen).on_message(m)
    })));
    let plugin = rt
        .load_plugin(&args.plugin)
        .map_err(|e| format!("cannot load the plugin: {e}"))?;
    let name = plugin.info().name;
    lock(&seen).name = name.clone();
    let result = drive(rt, args, &plugin, &name, &seen);
    let _ = plugin.unload(Duration::from_secs(10));
    if let Some(w) = lock(&seen).cache.take() {
        w.finish()
            .map_err(|e| format!("cannot finish the cache: {e}"))?;
    }
    result
}

/// Pumps until `done` holds for what the sink saw, a plugin error arrives, or `timeout`.
fn wait_for(
    rt: &Runtime,
    seen: &Mutex<Seen>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Seen) -> bool,
) -> Result<(), String> {
    let mut failed = None;
    let report = rt
        .run_until(
            || {
                let s = lock(seen);
                if let Some(e) = s.errors.first() {
                    failed = Some(e.clone());
                    return true;
                }
                done(&s)
            },
            BUDGET,
            timeout,
        )
        .map_err(|e| format!("the host loop failed: {e}"))?;
    if let Some(e) = failed {
        return Err(format!("the plugin reported: {e}"));
    }
    if !report.finished {
        return Err(format!(
            "{what}: nothing arrived in {} s",
            timeout.as_secs()
        ));
    }
    Ok(())
}

fn post(rt: &Runtime, event: Event) -> Result<(), String> {
    rt.post_event(event)
        .map_err(|e| format!("cannot send the plugin an event: {e}"))
}

fn drive(
    rt: &Runtime,
    args: &Args,
    plugin: &crate::plugin::LoadedPlugin,
    name: &str,
    seen: &Mutex<Seen>,
) -> Result<(), Stop> {
    let setup = Duration::from_secs(120).max(args.step_timeout);
    // The start state: the --save file of an earlier attempt (--resume), a --restore file, or
    // a fresh start from the configuration.
    let resume_from = args.save.as_deref().filter(|p| args.resume && p.exists());
    let start = resume_from.or(args.restore.as_deref());
    if let Some(path) = start {
        let state = read_state(path)?;
        let (state, configuration) = state_with_settings(&state, name, DRIVE).map_err(|e| {
            format!(
                "{} is not a state of the {name:?} simulation: {e}",
                path.display()
            )
        })?;
        {
            let mut s = lock(seen);
            s.min_configuration = configuration.unwrap_or(0);
            s.step = None;
        }
        plugin
            .restore_state(&state)
            .map_err(|e| format!("cannot restore {}: {e}", path.display()))?;
        wait_for(rt, seen, setup, "the restored state's first frame", |s| {
            s.step.is_some()
        })?;
    } else {
        let text = format!("{} {DRIVE}", args.configure.as_deref().unwrap_or(""));
        lock(seen).min_configuration = 1;
        post(
            rt,
            Event::Custom {
                topic: format!("{name}/configure"),
                bytes: text.into_bytes(),
                coalesce: false,
            },
        )?;
        wait_for(
            rt,
            seen,
            setup,
            "the configured simulation's first frame",
            |s| s.step.is_some(),
        )?;
        // A configure that rebuilt the simulation starts it at step 0; one that kept the
        // running state (only live keys changed) keeps its step: back to 0 then. The reset goes
        // to the simulation installed when the plugin reads it, which may for a moment still be
        // the one being replaced: it is sent again until a frame of step 0 arrives.
        let deadline = Instant::now() + setup;
        while lock(seen).step != Some(0) {
            if Instant::now() >= deadline {
                return Err(Stop::Failed(format!(
                    "the reset: no frame of step 0 in {} s",
                    setup.as_secs()
                )));
            }
            post(
                rt,
                Event::Custom {
                    topic: format!("{name}/reset"),
                    bytes: Vec::new(),
                    coalesce: false,
                },
            )?;
            match wait_for(rt, seen, Duration::from_secs(1), "the reset", |s| {
                s.step == Some(0)
            }) {
                Ok(()) => {}
                Err(e) if e.contains("nothing arrived") => {}
                Err(e) => return Err(Stop::Failed(e)),
            }
        }
    }
    let first = lock(seen).step.expect("a frame arrived");
    let target = match args.target {
        Target::Steps(n) => first.saturating_add(n),
        Target::Until(t) if t < first => {
            return Err(Stop::Failed(format!(
                "the state is at step {first}, past --until {t}"
            )))
        }
        Target::Until(t) => t,
    };
    if let Some(path) = &args.cache {
        let (w, damage) = CacheWriter::append_through(path, first)
            .map_err(|e| format!("cannot open the cache: {e}"))?;
        if let Some(d) = damage {
            eprintln!(
                "hostloop-worker run: {}: {d}; the damaged tail was cut off",
                path.display()
            );
        }
        let mut s = lock(seen);
        let recorder = Recorder::new(w, name)
            .after(first)
            .min_configuration(s.min_configuration)
            .topics(args.cache_topics.clone());
        s.cache = Some(recorder);
    }
    let save = |step: u64| -> Result<(), String> {
        let Some(path) = &args.save else {
            return Ok(());
        };
        let state = plugin
            .checkpoint()
            .map_err(|e| format!("cannot save the state at step {step}: {e}"))?
            .ok_or_else(|| format!("the plugin {name:?} saves no state"))?;
        write_atomically(path, &state)
    };
    let mut progress = Progress::new(args.progress, first, target);
    let mut step = first;
    // Steps per request: grown (doubling) until a request takes about a quarter of a second,
    // so that progress is reported and signals are answered that often whatever a step costs,
    // and the round trip between requests costs little.
    let mut chunk: u64 = 16;
    while step < target {
        // One request per chunk, and never past a snapshot's step: the simulation steps ahead
        // on the workers while this thread writes the frames (held back only by `Every`
        // delivery's queue), and stops exactly at `end`.
        let save_at = match args.save_every {
            Some(k) => target.min((step / k + 1) * k),
            None => target,
        };
        let end = save_at.min(step.saturating_add(chunk));
        let asked = Instant::now();
        let ask = if args.cache.is_some() {
            Event::Custom {
                topic: format!("{name}/advance"),
                bytes: (end - step).to_string().into_bytes(),
                coalesce: false,
            }
        } else {
            Event::FrameChanged { frame: end as f64 }
        };
        post(rt, ask)?;
        loop {
            let frames = lock(seen).frames;
            wait_for(
                rt,
                seen,
                args.step_timeout,
                &format!("step {}", step + 1),
                |s| s.frames != frames || s.step == Some(end),
            )?;
            if let Some(e) = lock(seen).cache_error.take() {
                return Err(Stop::Failed(format!("cannot write the cache: {e}")));
            }
            step = lock(seen).step.unwrap_or(step);
            progress.update(step);
            if step >= end {
                break;
            }
        }
        // A signal is answered at the end of the chunk, a step boundary where the simulation is
        // idle (a chunk takes about a quarter of a second): saved there, as a chunk's end is.
        let signal = STOP.load(Ordering::Relaxed);
        if signal != 0 {
            save(step)?;
            progress.end(step);
            return Err(Stop::Interrupted(signal, step));
        }
        if asked.elapsed() < Duration::from_millis(250) {
            chunk = chunk.saturating_mul(2);
        }
        if step == save_at && step < target {
            save(step)?;
        }
    }
    save(step)?;
    progress.end(step);
    Ok(())
}

/// Progress on stderr: a bar redrawn in place on a terminal, a line every few seconds
/// otherwise (a farm's log).
struct Progress {
    mode: ProgressMode,
    first: u64,
    target: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(mode: ProgressMode, first: u64, target: u64) -> Progress {
        let now = Instant::now();
        Progress {
            mode,
            first,
            target,
            started: now,
            last: now,
        }
    }

    fn text(&self, step: u64) -> String {
        let done = step - self.first;
        let total = (self.target - self.first).max(1);
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            format!("{:.0} s left", (self.target - step) as f64 / rate)
        } else {
            "".into()
        };
        format!(
            "step {step}/{} ({:.0}%), {rate:.1} steps/s, {eta}",
            self.target,
            100.0 * done as f64 / total as f64
        )
    }

    fn update(&mut self, step: u64) {
        let every = match self.mode {
            ProgressMode::None => return,
            ProgressMode::Bar => Duration::from_millis(100),
            ProgressMode::Lines => Duration::from_secs(5),
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        self.print(step);
    }

    fn print(&self, step: u64) {
        let text = self.text(step);
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            ProgressMode::None => Ok(()),
            ProgressMode::Lines => writeln!(err, "hostloop-worker run: {text}"),
            ProgressMode::Bar => {
                let total = (self.target - self.first).max(1);
                let filled = ((step - self.first) * 30 / total) as usize;
                write!(
                    err,
                    "\r[{}{}] {text}\x1b[K",
                    "#".repeat(filled),
                    "-".repeat(30 - filled)
                )
            }
        };
    }

    fn end(&mut self, step: u64) {
        self.print(step);
        if self.mode == ProgressMode::Bar {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Option<Args>, String> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_are_checked_with_a_reason() {
        let ok = args(&["--steps", "10", "p.so"]).unwrap().unwrap();
        assert_eq!(ok.target, Target::Steps(10));
        assert!(args(&["--help"]).unwrap().is_none());
        for (bad, why) in [
            (&["p.so"][..], "--steps N or --until"),
            (&["--steps", "10"][..], "no PLUGIN"),
            (&["--steps", "x", "p.so"][..], "whole number"),
            (&["--steps", "1", "--until", "2", "p.so"][..], "one of"),
            (&["--steps", "1", "--resume", "p.so"][..], "give --save"),
            (
                &["--steps", "1", "--save-every", "5", "p.so"][..],
                "needs --save",
            ),
            (
                &[
                    "--steps",
                    "1",
                    "--configure",
                    "a=1",
                    "--restore",
                    "s",
                    "p.so",
                ][..],
                "fresh start",
            ),
            (&["--steps", "1", "--bogus", "p.so"][..], "unknown option"),
            (&["--steps", "1", "a.so", "b.so"][..], "one plugin"),
            (
                &["--steps", "1", "--progress", "fancy", "p.so"][..],
                "bar, lines",
            ),
        ] {
            let e = args(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
