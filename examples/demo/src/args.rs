//! The command line.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage: hostloop-demo [flags]

Runs a 60 Hz host loop on hostloop's C ABI with the particles plugin, then prints a summary and
writes a picture of the particles and a frame-time plot.

  --agents N        particles to simulate, 1..=16000000 (default 1000000)
  --seconds S       how long the host loop runs (default 5)
  --workers N       worker threads (default: cores - 1, at least 1)
  --budget-ms B     main-thread budget of one pump, in ms (default 2)
  --kernel K        rust or cpp (default rust)
  --delivery D      latest (drop frames the host has no time for) or every (default latest)
  --out DIR         where the pictures go (default: target/hostloop-demo)
  --plugin PATH     the plugin library (default: built beside this program, built if missing)
  --isolated        run the plugin in a worker process (hostloop-worker): a crash of its
                    native code ends the worker, not this host
  --kill-worker-at S
                    with --isolated: kill -9 the worker S seconds into the loop, to watch the
                    host keep its 60 Hz, print the crash report and resume from the checkpoint
  --worker PATH     the worker program (default: built beside this program, built if missing)
  --copy-in-sink    copy each frame inside the sink (during the pump) instead of keeping it
                    with hl_message_lend and copying it at the draw, after the pump
  --headless, --no-image
                    write no pictures
  --quiet           no live line: one plain progress line per second
  -h, --help        this text";

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct Options {
    pub agents: u64,
    pub seconds: f64,
    pub workers: u32,
    pub budget_ms: f64,
    pub kernel: String,
    pub delivery: String,
    pub images: bool,
    pub out: Option<PathBuf>,
    pub plugin: Option<PathBuf>,
    pub quiet: bool,
    pub isolated: bool,
    pub kill_worker_at: Option<f64>,
    pub worker: Option<PathBuf>,
    pub copy_in_sink: bool,
}

/// Why the command line was not run.
#[derive(Debug)]
pub enum Stop {
    Help,
    Bad(String),
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, Stop> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let mut o = Options {
        agents: 1_000_000,
        seconds: 5.0,
        workers: cores.saturating_sub(1).max(1),
        budget_ms: 2.0,
        kernel: "rust".into(),
        delivery: "latest".into(),
        images: true,
        out: None,
        plugin: None,
        quiet: false,
        isolated: false,
        kill_worker_at: None,
        copy_in_sink: false,
        worker: None,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| Stop::Bad(format!("{flag} needs a value ({what})")))
        };
        match flag.as_str() {
            "--agents" => o.agents = number(&flag, &value("a count")?)?,
            "--seconds" => o.seconds = number(&flag, &value("seconds")?)?,
            "--workers" => o.workers = number(&flag, &value("a count")?)?,
            "--budget-ms" => o.budget_ms = number(&flag, &value("milliseconds")?)?,
            "--kernel" => o.kernel = value("rust or cpp")?,
            "--delivery" => o.delivery = value("latest or every")?,
            "--out" => o.out = Some(value("a directory")?.into()),
            "--plugin" => o.plugin = Some(value("a path")?.into()),
            "--headless" | "--no-image" => o.images = false,
            "--quiet" => o.quiet = true,
            "--isolated" => o.isolated = true,
            "--copy-in-sink" => o.copy_in_sink = true,
            "--kill-worker-at" => o.kill_worker_at = Some(number(&flag, &value("seconds")?)?),
            "--worker" => o.worker = Some(value("a path")?.into()),
            "-h" | "--help" => return Err(Stop::Help),
            other => return Err(Stop::Bad(format!("unknown flag {other}"))),
        }
    }
    if !(1..=16_000_000).contains(&o.agents) {
        return Err(Stop::Bad("--agents must be 1..=16000000".into()));
    }
    if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
        return Err(Stop::Bad("--seconds must be in (0, 3600]".into()));
    }
    if o.workers == 0 || o.workers > 1024 {
        return Err(Stop::Bad("--workers must be 1..=1024".into()));
    }
    if !(o.budget_ms > 0.0 && o.budget_ms <= 1000.0) {
        return Err(Stop::Bad("--budget-ms must be in (0, 1000]".into()));
    }
    if !matches!(o.kernel.as_str(), "rust" | "cpp") {
        return Err(Stop::Bad("--kernel must be rust or cpp".into()));
    }
    if !matches!(o.delivery.as_str(), "latest" | "every") {
        return Err(Stop::Bad("--delivery must be latest or every".into()));
    }
    if let Some(at) = o.kill_worker_at {
        if !o.isolated {
            return Err(Stop::Bad("--kill-worker-at needs --isolated".into()));
        }
        if !(at >= 0.0 && at < o.seconds) {
            return Err(Stop::Bad(
                "--kill-worker-at must be in [0, --seconds)".into(),
            ));
        }
    }
    Ok(o)
}

/// A number; `_` and `,` may group digits (`1_000_000`).
fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, Stop> {
    let digits: String = text.chars().filter(|&c| c != '_' && c != ',').collect();
    digits
        .parse()
        .map_err(|_| Stop::Bad(format!("{flag}: not a number: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Options, Stop> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_override_the_defaults() {
        let o = parse_str(
            "--agents 1_000 --seconds 0.5 --workers 3 --budget-ms 1.5 --kernel cpp --headless",
        )
        .unwrap();
        assert_eq!((o.agents, o.workers, o.kernel.as_str()), (1000, 3, "cpp"));
        assert_eq!((o.seconds, o.budget_ms, o.images), (0.5, 1.5, false));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(matches!(parse_str("--agents 0"), Err(Stop::Bad(_))));
        assert!(matches!(parse_str("--agents 16000001"), Err(Stop::Bad(_))));
        assert!(matches!(parse_str("--kernel fortran"), Err(Stop::Bad(_))));
        assert!(matches!(parse_str("--seconds"), Err(Stop::Bad(_))));
        assert!(matches!(parse_str("--frobnicate"), Err(Stop::Bad(_))));
        assert!(matches!(parse_str("--kill-worker-at 1"), Err(Stop::Bad(_))));
        assert!(matches!(
            parse_str("--isolated --seconds 2 --kill-worker-at 3"),
            Err(Stop::Bad(_))
        ));
        let o = parse_str("--isolated --seconds 4 --kill-worker-at 2").unwrap();
        assert!(o.isolated && o.kill_worker_at == Some(2.0));
    }
}
