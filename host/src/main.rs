//! `hostloop-host`: a generic host to try a plugin in. It loads any hostloop plugin, posts it the
//! events given on the command line or typed at its prompt, prints what reaches the host's sink,
//! reloads the plugin when its file changes, and reports load errors as the library gives them.
//! `hostloop-host --help` says how; `host/README.md` shows it on the example plugins.
//!
//! The host loop is the one a batch host runs: [`Handle::run_until`] sleeps on the runtime's
//! doorbell and pumps within the budget when it rings; it returns to this loop when a stdin line
//! arrives (a thread of its own only reads lines and forwards them over a channel), when a stop
//! condition holds, or every 250 ms for the file check. Events are posted and the plugin
//! reloaded here, on the main thread, between pumps.

mod args;
mod interrupt;
mod show;
mod watch;

use std::collections::VecDeque;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hostloop::plugin::{LoadedPlugin, PluginError, PluginErrorKind};
use hostloop::{Event, Handle, Message, Runtime};

use args::{Command, Options};
use show::Output;
use watch::{Change, Watcher};

/// How often the host loop comes back for the file check and the printing of counts.
const TICK: Duration = Duration::from_millis(250);
/// How long a reload may wait for the old build's work.
const RELOAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long the unload at exit may wait for the plugin's running calls.
const UNLOAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long the runtime's shutdown may wait for its threads.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(2);

/// The exit statuses `--help` documents.
const EXIT_LOAD_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNMET: u8 = 3;

/// The prompt's `:help`.
const PROMPT_HELP: &str = "\
commands, one per line:
  TOPIC TEXT      post a custom event (TEXT as its bytes, may be empty)
  :play, :pause   post PlaybackStarted / PlaybackStopped
  :frame F        post FrameChanged with frame F
  :reload         reload the plugin from its file now
  :stats          print the summary so far
  :help           list these commands
  :quit           unload the plugin and exit (so does the end of stdin, or Ctrl-C)";

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            error(&format!("{e}\nTry `hostloop-host --help`."));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            let _ = std::io::stdout().write_all(args::HELP.as_bytes());
            ExitCode::SUCCESS
        }
        Command::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "hostloop-host {}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Command::Run(options) => ExitCode::from(run(*options)),
    }
}

/// A message on stderr, prefixed with the program's name; a closed stderr is not an error.
fn error(text: &str) {
    let _ = writeln!(std::io::stderr(), "hostloop-host: {text}");
}

/// The lock, whether or not a panic poisoned it (the sink's state stays usable).
fn lock(out: &Mutex<Output>) -> MutexGuard<'_, Output> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

/// A load or reload failure in words: what kind of failure, then the library's own message
/// (which names the path).
fn plugin_error(e: &PluginError) -> String {
    let kind = match e.kind() {
        PluginErrorKind::NotALibrary => "not a shared library: ",
        PluginErrorKind::NoEntrySymbol => "not a hostloop plugin: ",
        PluginErrorKind::Panicked => "the plugin panicked: ",
        PluginErrorKind::Failed => "the plugin failed: ",
        _ => "",
    };
    // The loader's own message often starts with the path again (as given, or absolute).
    let path = e.path().display().to_string();
    let absolute = std::fs::canonicalize(e.path())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let reason = e.reason();
    let reason = [path.as_str(), absolute.as_str()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .find_map(|p| reason.strip_prefix(p)?.strip_prefix(": "))
        .unwrap_or(reason);
    format!("{kind}{path}: {reason}")
}

/// What a stdin line or the end of stdin is to the host loop.
#[derive(Debug)]
enum Input {
    /// A line's bytes as typed (an event's text need not be UTF-8).
    Line(Vec<u8>),
    End,
    Failed(String),
}

/// Reads stdin on a thread of its own, forwarding each line; the host loop does the rest.
fn read_stdin() -> std::io::Result<Receiver<Input>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let mut line = Vec::new();
            loop {
                line.clear();
                let input = match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => Input::End,
                    Ok(_) => Input::Line(std::mem::take(&mut line)),
                    Err(e) => Input::Failed(e.to_string()),
                };
                let last = !matches!(input, Input::Line(_));
                if tx.send(input).is_err() || last {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Why the host loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Seconds,
    Messages,
    Frames,
    EndOfInput,
    Quit,
    Interrupted,
    StdoutClosed,
    LoopFailed,
}

/// What a prompt line asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Quit,
}

/// The running host: the plugin, the console, and what the exit status will say.
struct Session<'a> {
    rt: &'a Handle,
    plugin: LoadedPlugin,
    path: PathBuf,
    out: Arc<Mutex<Output>>,
    options: &'a Options,
    reloads: u64,
    failed_reloads: u64,
    /// Something the command line asked for did not happen (exit status 3).
    unmet: Vec<String>,
}

impl Session<'_> {
    fn say(&self, text: &str) {
        lock(&self.out).say(text);
    }

    fn post(&mut self, event: Event, what: &str, from_command_line: bool) {
        match self.rt.post_event(event) {
            Ok(()) => self.say(&format!("posted {what}")),
            Err(e) => {
                self.say(&format!("cannot post {what}: {e}"));
                if from_command_line {
                    self.unmet
                        .push(format!("--event {what} was not posted: {e}"));
                }
            }
        }
    }

    fn post_custom(&mut self, topic: String, bytes: Vec<u8>, from_command_line: bool) {
        let what = match std::str::from_utf8(&bytes) {
            Ok(text) => format!("{topic} {text:?}"),
            Err(_) => format!("{topic} ({} bytes)", bytes.len()),
        };
        let event = Event::Custom {
            topic,
            bytes,
            coalesce: false,
        };
        self.post(event, &what, from_command_line);
    }

    /// Reloads from the file; `true` on success. The old build keeps running on failure.
    fn reload(&mut self, why: &str) -> bool {
        let at = {
            let mut out = lock(&self.out);
            out.reload_begins();
            out.at_step()
        };
        self.say(&format!("reloading {} ({why})", self.path.display()));
        let started = Instant::now();
        let result = self.plugin.reload(&self.path, RELOAD_DEADLINE);
        match result {
            Ok(()) => {
                self.reloads += 1;
                let info = self.plugin.info();
                self.say(&format!(
                    "reloaded {} {} (generation {}) in {:.1} ms{at}",
                    info.name,
                    info.version,
                    info.generation,
                    started.elapsed().as_secs_f64() * 1e3
                ));
                true
            }
            Err(e) => {
                lock(&self.out).reload_failed();
                self.failed_reloads += 1;
                self.say(&format!(
                    "reload failed, the old build keeps running: {}",
                    plugin_error(&e)
                ));
                false
            }
        }
    }

    /// One stdin line.
    fn command(&mut self, line: &[u8]) -> Flow {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            return Flow::Go;
        }
        let Some(command) = line.strip_prefix(b":") else {
            match args::split_event(line) {
                Ok((topic, bytes)) => self.post_custom(topic, bytes, false),
                Err(e) => self.say(&e),
            }
            return Flow::Go;
        };
        let command = String::from_utf8_lossy(command);
        let command = command.as_ref();
        let (name, arg) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(n, a)| (n, a.trim()));
        match name {
            "quit" | "q" | "exit" => return Flow::Quit,
            "help" | "h" | "?" => {
                let mut out = lock(&self.out);
                for l in PROMPT_HELP.lines() {
                    out.line(l);
                }
            }
            "reload" => {
                self.reload("asked at the prompt");
            }
            "stats" => {
                let lines = self.stats_lines();
                let mut out = lock(&self.out);
                for l in lines {
                    out.line(&l);
                }
            }
            "play" => self.post(Event::PlaybackStarted, "PlaybackStarted", false),
            "pause" => self.post(Event::PlaybackStopped, "PlaybackStopped", false),
            "frame" => match arg.parse::<f64>() {
                Ok(frame) if frame.is_finite() => self.post(
                    Event::FrameChanged { frame },
                    &format!("FrameChanged {frame}"),
                    false,
                ),
                _ => self.say(&format!(":frame needs a frame number, got `{arg}`")),
            },
            other => self.say(&format!(
                "unknown command `:{other}` (:help lists the commands)"
            )),
        }
        Flow::Go
    }

    /// The summary so far: the table per topic, then the runtime's pumps and the reloads.
    fn stats_lines(&self) -> Vec<String> {
        let out = lock(&self.out);
        let stats = self.rt.stats();
        let mut lines = vec![format!(
            "after {:.2} s: {} messages reached the sink, {} of them frames",
            out.elapsed().as_secs_f64(),
            out.messages,
            out.frames
        )];
        lines.extend(out.table(false));
        lines.push(format!(
            "  pumps     {} (p50 {:.2} ms, p99 {:.2} ms), {} over the {} ms budget",
            stats.pumps,
            stats.pump_p50.as_secs_f64() * 1e3,
            stats.pump_p99.as_secs_f64() * 1e3,
            stats.budget_overruns,
            self.options.budget.as_secs_f64() * 1e3
        ));
        lines.push(format!(
            "  reloads   {} ({} failed)",
            self.reloads, self.failed_reloads
        ));
        lines
    }
}

/// Loads the plugin, runs the host loop, unloads, shuts down; returns the exit status.
fn run(options: Options) -> u8 {
    interrupt::install();
    let mut builder = Runtime::builder();
    if let Some(n) = options.workers {
        builder = builder.workers(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            error(&format!("cannot start the hostloop runtime: {e}"));
            return EXIT_LOAD_FAILED;
        }
    };
    let out = Arc::new(Mutex::new(Output::new(options.print)));
    {
        let out = out.clone();
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| lock(&out).message(m))));
    }
    // The file as loaded: a rebuild finishing during the load is still seen as a change.
    let watcher = options.watch.then(|| Watcher::new(&options.plugin));
    let plugin = match rt.load_plugin(&options.plugin) {
        Ok(p) => p,
        Err(e) => {
            error(&format!("cannot load the plugin: {}", plugin_error(&e)));
            if e.kind() == PluginErrorKind::FileNotFound {
                error(
                    "(a Rust plugin is built with `cargo build --release` in its crate, \
                     into target/release/lib<name>.so)",
                );
            }
            rt.shutdown(SHUTDOWN_DEADLINE);
            return EXIT_LOAD_FAILED;
        }
    };
    lock(&out).restart_clock();
    let info = plugin.info();
    let mut session = Session {
        rt: &rt,
        plugin,
        path: options.plugin.clone(),
        out: out.clone(),
        options: &options,
        reloads: 0,
        failed_reloads: 0,
        unmet: Vec::new(),
    };
    session.say(&format!(
        "loaded {} {} from {} ({} worker{}, pump budget {} ms)",
        info.name,
        info.version,
        options.plugin.display(),
        rt.workers(),
        if rt.workers() == 1 { "" } else { "s" },
        options.budget.as_secs_f64() * 1e3
    ));
    for (topic, bytes) in options.events.clone() {
        session.post_custom(topic, bytes, true);
    }
    let mut watcher = watcher;
    if watcher.is_some() {
        session.say(&format!(
            "watching {} (a rebuild is reloaded)",
            options.plugin.display()
        ));
    }
    let mut stdin = None;
    if options.prompt {
        match read_stdin() {
            Ok(rx) => stdin = Some(rx),
            Err(e) => session.say(&format!("cannot read stdin, no prompt: {e}")),
        }
        if std::io::stdin().is_terminal() {
            session
                .say("type `TOPIC TEXT` to post an event, :help for the commands, :quit to exit");
        }
    }

    let stop = host_loop(&mut session, &mut watcher, stdin.as_ref());
    finish(session, &rt, stop)
}

/// Pumps and handles input until a stop condition holds.
fn host_loop(
    session: &mut Session<'_>,
    watcher: &mut Option<Watcher>,
    mut stdin: Option<&Receiver<Input>>,
) -> Stop {
    let options = session.options;
    let start = Instant::now();
    // Past what an `Instant` can hold means never.
    let end = options.seconds.and_then(|s| start.checked_add(s));
    let mut reload_at = options.reload_after.and_then(|d| start.checked_add(d));
    let mut next_tick = start + TICK;
    let mut inputs: VecDeque<Input> = VecDeque::new();
    let out = session.out.clone();
    let reached = |out: &Output| {
        if options.until_messages.is_some_and(|n| out.messages >= n) {
            Some(Stop::Messages)
        } else if options.frames.is_some_and(|n| out.frames >= n) {
            Some(Stop::Frames)
        } else if out.stdout_closed() {
            Some(Stop::StdoutClosed)
        } else {
            None
        }
    };
    loop {
        let wake = [Some(next_tick), end, reload_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_tick);
        let pumped = session.rt.run_until(
            || {
                if let Some(rx) = stdin {
                    inputs.extend(rx.try_iter());
                }
                !inputs.is_empty()
                    || interrupt::requested()
                    || reached(&lock(&out)).is_some()
                    || Instant::now() >= wake
            },
            options.budget,
            wake.saturating_duration_since(Instant::now()),
        );
        if let Err(e) = pumped {
            session.say(&format!("the host loop stopped: {e}"));
            return Stop::LoopFailed;
        }
        while let Some(input) = inputs.pop_front() {
            match input {
                Input::Line(line) => {
                    if session.command(&line) == Flow::Quit {
                        return Stop::Quit;
                    }
                }
                Input::End | Input::Failed(_) => {
                    if let Input::Failed(e) = &input {
                        session.say(&format!("cannot read stdin any more: {e}"));
                    }
                    stdin = None;
                    if !options.has_own_end() {
                        return Stop::EndOfInput;
                    }
                }
            }
        }
        if interrupt::requested() {
            return Stop::Interrupted;
        }
        if let Some(stop) = reached(&lock(&out)) {
            return stop;
        }
        let now = Instant::now();
        if reload_at.is_some_and(|at| now >= at) {
            reload_at = None;
            if !session.reload("--reload-after") {
                session
                    .unmet
                    .push("the --reload-after reload failed".to_owned());
            }
            if let Some(w) = watcher.as_mut() {
                w.tried();
            }
        }
        if end.is_some_and(|end| now >= end) {
            return Stop::Seconds;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            if let Some(w) = watcher.as_mut() {
                match w.check() {
                    Change::None => {}
                    Change::Gone => session.say(&format!(
                        "{} is gone; waiting for it to come back (the loaded build keeps running)",
                        session.path.display()
                    )),
                    Change::Settled => {
                        session.reload("the file changed");
                        w.tried();
                    }
                }
            }
            lock(&out).tick();
        }
    }
}

/// Unloads, shuts down, prints the summary; returns the exit status.
fn finish(mut session: Session<'_>, rt: &Runtime, stop: Stop) -> u8 {
    let options = session.options;
    let (messages, frames, went_back) = {
        let out = lock(&session.out);
        (out.messages, out.frames, out.went_back.clone())
    };
    let why = match stop {
        Stop::Seconds => format!(
            "{} s passed",
            options.seconds.unwrap_or_default().as_secs_f64()
        ),
        Stop::Messages => format!("{messages} messages reached the sink"),
        Stop::Frames => format!("{frames} frames reached the sink"),
        Stop::EndOfInput => "stdin ended".to_owned(),
        Stop::Quit => ":quit".to_owned(),
        Stop::Interrupted => "interrupted".to_owned(),
        Stop::StdoutClosed => "stdout was closed".to_owned(),
        Stop::LoopFailed => "the host loop failed".to_owned(),
    };
    if let Some(n) = options.until_messages.filter(|&n| messages < n) {
        session.unmet.push(format!(
            "only {messages} of the {n} messages of --until-messages reached the sink"
        ));
    }
    if let Some(n) = options.frames.filter(|&n| frames < n) {
        session.unmet.push(format!(
            "only {frames} of the {n} frames of --frames reached the sink"
        ));
    }
    if options.reload_after.is_some() {
        for (before, after) in went_back {
            session.unmet.push(format!(
                "after a reload the steps went back from {before} to {after}"
            ));
        }
    }
    if stop == Stop::LoopFailed {
        session.unmet.push("the host loop failed".to_owned());
    }
    session.say(&format!("stopping: {why}; unloading the plugin"));
    let mut lines = session.stats_lines();
    let Session { plugin, unmet, .. } = session;
    let unload = plugin.unload(UNLOAD_DEADLINE);
    let shutdown = rt.shutdown(SHUTDOWN_DEADLINE);
    lines.push(format!(
        "  unload    {:.2} ms: {} queued items dropped, {} stragglers, image {}",
        unload.elapsed.as_secs_f64() * 1e3,
        unload.dropped,
        unload.stragglers,
        if unload.retired {
            "retired (kept mapped)"
        } else {
            "unmapped"
        }
    ));
    lines.push(format!(
        "  shutdown  {:.2} ms: {} threads joined, {} stragglers",
        shutdown.elapsed.as_secs_f64() * 1e3,
        shutdown.threads_joined,
        shutdown.stragglers.len()
    ));
    lines[0] = format!("summary {}", lines[0]);
    // The sink is gone with the runtime: nothing else prints into the summary.
    let mut out = std::io::stdout().lock();
    for line in &lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    if unmet.is_empty() {
        0
    } else {
        for u in &unmet {
            error(u);
        }
        EXIT_UNMET
    }
}
