//! The command line: options, their parsing (by hand: the host depends on `hostloop` and std
//! only) and the `--help` text.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `--help`.
pub const HELP: &str = "\
hostloop-host: a generic host to try a hostloop plugin in. It loads the plugin, posts it
the events you give on the command line or type at its prompt, prints what reaches the
host's sink, and reloads the plugin when its file changes.

Usage: hostloop-host [OPTIONS] PLUGIN
       hostloop-host [OPTIONS] -- PLUGIN

PLUGIN is the plugin's shared library: a Rust cdylib exported with
hostloop::export_plugin!, or a C/C++ plugin implementing hostloop_plugin.h (for example
target/release/libhostloop_plugin_template.so).

The host runs a host loop on its main thread: it sleeps on the runtime's doorbell, pumps
main-thread work within the budget when it rings, and prints each sink message as it
arrives: the time since the load, the topic, the size, and what it carries -- for
`<name>/step` the step and the configuration number, for an array its element type,
records x components and the min/max/mean of each component (of the first 4096 records),
for text the text. `<name>/error` and `hostloop/...` messages are always printed.

Options:
  -e, --event \"TOPIC TEXT\"  Post a custom host event once the plugin is loaded: TOPIC
                           (up to the first space), TEXT (the rest, may be empty) as its
                           bytes. Repeatable; posted in order. For example
                           --event \"particles/configure agents=1000 rate=0\"
  -s, --seconds SECS       Run SECS seconds, then unload the plugin and exit. Default: run
                           until stdin ends, :quit or Ctrl-C.
      --until-messages N   Exit once N messages reached the sink.
      --frames N           Exit once N frames (`<name>/step` messages) reached the sink.
      --reload-after SECS  Reload the plugin from its file once, SECS after loading it,
                           to watch the hand-off of its state without rebuilding: the
                           host prints whether the steps go on from where they were.
      --no-reload          Do not reload the plugin when its file changes. (Without this,
                           the file is checked every 250 ms; a change is reloaded once the
                           file has stayed the same for one more check.)
      --no-prompt          Do not read commands from stdin.
      --every-message      Print a line for every message. Default: a line per topic at
                           most every 0.1 s, and one line a second counting the others.
      --summary-every SECS No line per message: a table per topic (messages, bytes, last
                           step or array shape) every SECS.
  -q, --quiet              No line per message: only what the host does (load, events,
                           reloads, errors) and the final summary.
      --budget-ms MS       The main-thread budget of one pump, in milliseconds (default 2,
                           at most 10000).
      --workers N          Worker threads (default: the cores less one, at least one).
  -h, --help               Print this help.
  -V, --version            Print the version.

At the prompt (stdin), one command per line:
  TOPIC TEXT       Post a custom event, as --event does.
  :play, :pause    Post PlaybackStarted / PlaybackStopped.
  :frame F         Post FrameChanged with frame F.
  :reload          Reload the plugin from its file now.
  :stats           Print the summary so far.
  :help            List these commands.
  :quit            Unload the plugin and exit.
Empty lines and lines starting with # are ignored. When stdin ends the host exits, unless
--seconds, --until-messages or --frames says when to.

At exit the host unloads the plugin (5 s deadline), shuts the runtime down (2 s) and prints
a summary: messages and bytes per topic, pumps and how many ran over the budget, reloads,
the unload and the shutdown.

Exit status:
  0  The plugin ran and was unloaded.
  1  The plugin did not load (the message says why: no such file, not a shared library,
     not a hostloop plugin, built for another plugin ABI, its load failed or panicked), or
     the runtime did not start.
  2  Bad command line.
  3  The plugin ran, but what the command line asked for did not happen: fewer messages
     or frames than --until-messages or --frames by the end, a failed --reload-after
     reload or steps going back after it, or an --event that could not be posted.

Examples:
  hostloop-host target/release/libhostloop_plugin_template.so
  hostloop-host --event \"particles/configure agents=1000 rate=0\" --frames 100 \\
      target/release/libhostloop_particles.so
  hostloop-host --seconds 10 --summary-every 1 target/release/libhostloop_particles.so
  echo \"particles/configure agents=500\" | hostloop-host --seconds 3 \\
      target/release/libhostloop_particles.so
  hostloop-host --seconds 3 --reload-after 1 --quiet \\
      target/release/libhostloop_plugin_template.so
";

/// The largest `--budget-ms`: a pump of ten seconds is a frozen host already.
const MAX_BUDGET_MS: f64 = 10_000.0;

/// How sink messages are printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Print {
    /// A line per message, at most [`crate::show::LINES_PER_SECOND`] a second per topic;
    /// the rest counted in one line a second.
    Auto,
    /// A line per message, all of them.
    Every,
    /// A table per topic at this interval, no line per message.
    Summary(Duration),
    /// Only the final summary.
    Quiet,
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub plugin: PathBuf,
    /// `--event`s: topic and bytes, in order.
    pub events: Vec<(String, Vec<u8>)>,
    pub seconds: Option<Duration>,
    pub until_messages: Option<u64>,
    pub frames: Option<u64>,
    pub reload_after: Option<Duration>,
    /// Reload when the file changes.
    pub watch: bool,
    /// Read commands from stdin.
    pub prompt: bool,
    pub print: Print,
    pub budget: Duration,
    pub workers: Option<usize>,
}

impl Options {
    /// Whether the command line says when to stop (so the end of stdin does not).
    pub fn has_own_end(&self) -> bool {
        self.seconds.is_some() || self.until_messages.is_some() || self.frames.is_some()
    }
}

/// The parsed command line.
#[derive(Debug)]
pub enum Command {
    Run(Box<Options>),
    Help,
    Version,
}

/// A bad command line, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(text: impl Into<String>) -> ArgError {
    ArgError(text.into())
}

/// Splits `TOPIC TEXT` at the first run of whitespace: the topic, and the rest as bytes.
///
/// # Errors
///
/// When there is no topic, or it is not UTF-8.
pub fn split_event(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    let line = line.trim_ascii();
    let end = line
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(line.len());
    let (topic, text) = line.split_at(end);
    if topic.is_empty() {
        return Err("an event needs a topic: `TOPIC TEXT`".into());
    }
    let topic = std::str::from_utf8(topic)
        .map_err(|_| "the topic is not UTF-8".to_owned())?
        .to_owned();
    Ok((topic, text.trim_ascii_start().to_vec()))
}

/// Parses the arguments after the program name.
///
/// # Errors
///
/// An [`ArgError`] naming the argument and what was wrong with it.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ArgError> {
    let mut plugin: Option<PathBuf> = None;
    let mut events = Vec::new();
    let mut seconds = None;
    let mut until_messages = None;
    let mut frames = None;
    let mut reload_after = None;
    let mut watch = true;
    let mut prompt = true;
    let mut print: Option<(String, Print)> = None;
    let mut budget = Duration::from_millis(2);
    let mut workers = None;

    let mut args = args.into_iter();
    let mut only_paths = false;
    while let Some(arg) = args.next() {
        if only_paths || !arg.as_encoded_bytes().starts_with(b"-") || arg == "-" {
            if plugin.is_some() {
                return Err(bad(format!(
                    "one plugin at a time: unexpected argument `{}`",
                    arg.to_string_lossy()
                )));
            }
            plugin = Some(arg.into());
            continue;
        }
        if arg == "--" {
            only_paths = true;
            continue;
        }
        // `--name=value` or `--name value`.
        let text = arg
            .to_str()
            .ok_or_else(|| bad(format!("unknown option `{}`", arg.to_string_lossy())))?;
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(OsString::from(v))),
            _ => (text, None),
        };
        let mut value = |what: &str| -> Result<OsString, ArgError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| bad(format!("{name} needs {what}")))
        };
        let mut set_print = |mode: Print| -> Result<(), ArgError> {
            if let Some((other, _)) = &print {
                if other != name {
                    return Err(bad(format!("{other} and {name} cannot be used together")));
                }
            }
            print = Some((name.to_owned(), mode));
            Ok(())
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-e" | "--event" => {
                let v = value("an event, \"TOPIC TEXT\"")?;
                let event = split_event(v.as_encoded_bytes())
                    .map_err(|e| bad(format!("{name} `{}`: {e}", v.to_string_lossy())))?;
                events.push(event);
            }
            "-s" | "--seconds" => {
                seconds = Some(positive_seconds(name, &value("a number of seconds")?)?)
            }
            "--until-messages" => until_messages = Some(count(name, &value("a count")?)?),
            "--frames" => frames = Some(count(name, &value("a count")?)?),
            "--reload-after" => {
                reload_after = Some(seconds_at_least_zero(name, &value("a number of seconds")?)?)
            }
            "--no-reload" => watch = false,
            "--no-prompt" => prompt = false,
            "--every-message" => set_print(Print::Every)?,
            "-q" | "--quiet" => set_print(Print::Quiet)?,
            "--summary-every" => {
                let every = positive_seconds(name, &value("a number of seconds")?)?;
                set_print(Print::Summary(every))?
            }
            "--budget-ms" => {
                let v = value("a number of milliseconds")?;
                let ms = number(name, &v)?;
                budget = (ms > 0.0 && ms <= MAX_BUDGET_MS)
                    .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
                    .flatten()
                    .ok_or_else(|| {
                        bad(format!(
                            "{name} needs a number of milliseconds above 0 and at most \
                             {MAX_BUDGET_MS}, got `{}`",
                            v.to_string_lossy()
                        ))
                    })?;
            }
            "--workers" => {
                let v = value("a number of threads")?;
                let n = count(name, &v)?;
                if n > hostloop::MAX_WORKERS as u64 {
                    return Err(bad(format!(
                        "{name} {n}: at most {} workers",
                        hostloop::MAX_WORKERS
                    )));
                }
                workers = Some(n as usize);
            }
            _ => {
                return Err(bad(format!("unknown option `{}`", arg.to_string_lossy())));
            }
        }
        if inline.is_some()
            && matches!(
                name,
                "--no-reload" | "--no-prompt" | "--every-message" | "--quiet"
            )
        {
            return Err(bad(format!("{name} takes no value")));
        }
    }
    let plugin = plugin.ok_or_else(|| bad("no plugin given: hostloop-host [OPTIONS] PLUGIN"))?;
    Ok(Command::Run(Box::new(Options {
        plugin,
        events,
        seconds,
        until_messages,
        frames,
        reload_after,
        watch,
        prompt,
        print: print.map_or(Print::Auto, |(_, p)| p),
        budget,
        workers,
    })))
}

fn number(name: &str, v: &OsString) -> Result<f64, ArgError> {
    v.to_str()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .ok_or_else(|| {
            bad(format!(
                "{name} needs a number, got `{}`",
                v.to_string_lossy()
            ))
        })
}

fn seconds_at_least_zero(name: &str, v: &OsString) -> Result<Duration, ArgError> {
    let s = number(name, v)?;
    Duration::try_from_secs_f64(s).map_err(|_| {
        bad(format!(
            "{name} needs a number of seconds of 0 or more, got `{}`",
            v.to_string_lossy()
        ))
    })
}

fn positive_seconds(name: &str, v: &OsString) -> Result<Duration, ArgError> {
    let d = seconds_at_least_zero(name, v)?;
    if d.is_zero() {
        return Err(bad(format!(
            "{name} needs a positive number of seconds, got `{}`",
            v.to_string_lossy()
        )));
    }
    Ok(d)
}

fn count(name: &str, v: &OsString) -> Result<u64, ArgError> {
    v.to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            bad(format!(
                "{name} needs a whole number of 1 or more, got `{}`",
                v.to_string_lossy()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, ArgError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> Options {
        match parse_strs(args) {
            Ok(Command::Run(o)) => *o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn options_go_before_or_after_the_plugin_and_take_inline_values() {
        let o = run(&[
            "--event",
            "particles/configure agents=1000 rate=0",
            "p.so",
            "--seconds=1.5",
            "-e",
            "particles/reset",
            "--quiet",
        ]);
        assert_eq!(o.plugin, PathBuf::from("p.so"));
        assert_eq!(
            o.events,
            vec![
                (
                    "particles/configure".to_owned(),
                    b"agents=1000 rate=0".to_vec()
                ),
                ("particles/reset".to_owned(), Vec::new()),
            ]
        );
        assert_eq!(o.seconds, Some(Duration::from_millis(1500)));
        assert_eq!(o.print, Print::Quiet);
        assert!(o.watch && o.prompt);
    }

    #[test]
    fn a_plugin_path_after_a_double_dash_may_start_with_a_dash() {
        assert_eq!(run(&["--", "-odd.so"]).plugin, PathBuf::from("-odd.so"));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        for (args, says) in [
            (&[][..], "no plugin given"),
            (&["--seconds", "soon", "p.so"], "--seconds needs a number"),
            (&["--seconds", "0", "p.so"], "positive"),
            (&["--until-messages", "-3", "p.so"], "whole number"),
            (&["--frames"], "--frames needs a count"),
            (&["--bogus", "p.so"], "unknown option `--bogus`"),
            (&["a.so", "b.so"], "unexpected argument `b.so`"),
            (
                &["--quiet", "--every-message", "p.so"],
                "cannot be used together",
            ),
            (&["--event", "  ", "p.so"], "needs a topic"),
            (&["--workers", "5000", "p.so"], "at most"),
            (&["--budget-ms", "1e12", "p.so"], "at most 10000"),
            (&["--quiet=1", "p.so"], "takes no value"),
        ] {
            let e = parse_strs(args).expect_err(&format!("{args:?}"));
            assert!(e.0.contains(says), "{args:?}: {e} should say {says:?}");
        }
    }
}
