//! `hostloop-host` driven by its command line and its prompt, as a plugin author drives it: the
//! help, bad arguments, load errors, the particles plugin configured from `--event` and from
//! stdin, and a reload when the plugin's file is replaced.
//!
//! The plugins are the workspace's own, built by `hostloop_tests::fixture` (the particles
//! plugin) and `hostloop_tests::c_plugin` (C plugins with a wrong ABI or no entry symbol). Every
//! wait is for a line of the host's output, with a deadline that only fires on failure.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostloop_tests::{c_plugin, fixture, test_dir, Run};

/// Only fires on failure (a loaded 2-core machine included).
const DEADLINE: Duration = Duration::from_secs(120);

fn host() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostloop-host"));
    // A panic would print its backtrace: the tests check that none is printed.
    cmd.env("RUST_BACKTRACE", "1");
    cmd
}

/// Runs the host to completion, stdin closed.
fn run(args: &[&str]) -> Run {
    hostloop_tests::run(host().args(args), DEADLINE)
}

fn particles() -> String {
    fixture("hostloop_particles").display().to_string()
}

#[track_caller]
fn assert_no_panic(run: &Run) {
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains("panicked") && !text.contains("backtrace"),
            "a panic:\n{}",
            run.describe()
        );
    }
}

/// A running host with its stdin open, its stdout read line by line. Dropping it kills the
/// host (a failed test leaves no process behind).
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    fn start(args: &[&str]) -> Session {
        let mut child = host()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hostloop-host");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Session {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// Types a line at the prompt.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to the host's stdin");
        stdin.flush().expect("flush the host's stdin");
    }

    /// Waits for the next line that satisfies `want`, and returns it.
    #[track_caller]
    fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{what}: not within {DEADLINE:?}\n{}", self.output())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{what}: the host exited first\n{}", self.output())
                }
            }
        }
    }

    /// Closes stdin, reads the rest of the output and waits for the exit.
    #[track_caller]
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        self.stdin = None;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the host did not exit within {DEADLINE:?}\n{}",
                        self.output()
                    )
                }
            }
        }
        let status = self.child.wait().expect("wait for the host");
        // Its stderr closed with it.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status, std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The step and configuration of a message line `<time> s  particles/step  16 B  step 12,
/// configuration 1` (not of the summary's row for the topic).
fn step_of(line: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        [time, "s", "particles/step", "16", "B", "step", step, "configuration", c]
            if time.parse::<f64>().is_ok() =>
        {
            Some((step.strip_suffix(',')?.parse().ok()?, c.parse().ok()?))
        }
        _ => None,
    }
}

fn replace_atomically(dir: &Path, target: &Path, contents: &[u8]) {
    let next = dir.join("next.tmp");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, target).unwrap();
}

#[test]
fn help_names_every_option_and_the_exit_statuses() {
    let run = run(&["--help"]);
    run.assert_success("hostloop-host --help");
    for option in [
        "--event",
        "--seconds",
        "--until-messages",
        "--frames",
        "--reload-after",
        "--no-reload",
        "--no-prompt",
        "--every-message",
        "--summary-every",
        "--quiet",
        "--budget-ms",
        "--workers",
        "--help",
        "--version",
        ":reload",
        ":stats",
        ":quit",
        ":help",
        "Exit status",
        "Examples",
    ] {
        assert!(run.stdout.contains(option), "--help names {option}");
    }
    let version = run_version();
    assert!(version.starts_with("hostloop-host "), "{version}");
}

fn run_version() -> String {
    let run = run(&["--version"]);
    run.assert_success("hostloop-host --version");
    run.stdout
}

#[test]
fn bad_arguments_exit_2_with_what_is_wrong() {
    for (args, says) in [
        (&[][..], "no plugin given"),
        (
            &["--seconds", "soon", "x.so"],
            "--seconds needs a number, got `soon`",
        ),
        (&["--bogus", "x.so"], "unknown option `--bogus`"),
        (&["--until-messages"], "--until-messages needs a count"),
        (&["a.so", "b.so"], "unexpected argument `b.so`"),
    ] {
        let run = run(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}\n{}", run.describe());
        assert!(run.stderr.contains(says), "{args:?}\n{}", run.describe());
        assert!(run.stderr.contains("--help"), "{}", run.describe());
        assert_no_panic(&run);
    }
}

#[test]
fn load_errors_exit_1_with_the_librarys_reason_and_the_path() {
    let dir = test_dir!("host-cli-load-errors");
    let missing = dir.join("missing.so");
    let text = dir.write("notes.so", "not a library\n");
    let no_entry = c_plugin(&dir, "no_entry", &["-DFIXTURE_NO_ENTRY"]);
    let newer_abi = c_plugin(&dir, "abi2", &["-DFIXTURE_ABI=2"]);
    for (path, says) in [
        (&missing, "no such file"),
        (&text, "not a shared library"),
        (&no_entry, "not a hostloop plugin"),
        (&newer_abi, "built for plugin ABI 2"),
    ] {
        let path = path.display().to_string();
        let run = run(&["--no-prompt", &path]);
        assert_eq!(run.status.code(), Some(1), "{}", run.describe());
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("hostloop-host: cannot load the plugin: ")
                && first.contains(&path)
                && first.contains(says),
            "{path}: should say {says:?}\n{}",
            run.describe()
        );
        assert_no_panic(&run);
    }
}

#[test]
fn an_event_from_the_command_line_configures_the_particles_and_their_frames_are_shown() {
    let run = run(&[
        "--event",
        "particles/configure agents=1000 rate=0",
        "--until-messages",
        "400",
        "--every-message",
        "--no-prompt",
        &particles(),
    ]);
    run.assert_success("hostloop-host on the particles plugin");
    assert_no_panic(&run);
    assert!(
        run.stdout.contains("loaded particles"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .contains("posted particles/configure \"agents=1000 rate=0\""),
        "{}",
        run.describe()
    );
    let configured: Vec<u64> = run
        .stdout
        .lines()
        .filter_map(step_of)
        .filter(|&(_, c)| c == 1)
        .map(|(s, _)| s)
        .collect();
    assert!(
        configured.len() >= 10,
        "steps of configuration 1:\n{}",
        run.describe()
    );
    assert!(
        configured.windows(2).all(|w| w[0] < w[1]),
        "the steps go on: {configured:?}"
    );
    let positions = run
        .stdout
        .lines()
        .find(|l| l.contains("particles/positions") && l.contains("f32 [1000 x 3]"))
        .unwrap_or_else(|| panic!("a summary of 1000 positions:\n{}", run.describe()));
    assert!(
        positions.contains("12000 B")
            && positions.contains(" x ")
            && positions.contains(" y ")
            && positions.contains(" z ")
            && positions.contains("mean"),
        "{positions}"
    );
    // The count is checked after each pumped item, and one item can carry several messages
    // (a frame's step and positions): the run stops at 400 or a few past it.
    let reached: u64 = run
        .stdout
        .split("stopping: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop line:\n{}", run.describe()));
    assert!(
        (400..420).contains(&reached)
            && run
                .stdout
                .contains(&format!("stopping: {reached} messages reached the sink")),
        "{}",
        run.describe()
    );
    let summary = &run.stdout[run.stdout.find("summary after").expect("a summary")..];
    for words in [
        "particles/positions",
        "particles/step",
        "pumps",
        "unload",
        "shutdown",
    ] {
        assert!(summary.contains(words), "{summary}");
    }
}

#[test]
fn events_and_commands_typed_at_the_prompt_are_posted_and_run() {
    let mut host = Session::start(&[&particles()]);
    host.wait_for("the load", |l| l.contains("loaded particles"));
    host.send("particles/configure agents=500 rate=0");
    host.wait_for("the event posted", |l| {
        l.contains("posted particles/configure \"agents=500 rate=0\"")
    });
    host.wait_for("a frame of the configured simulation", |l| {
        step_of(l).is_some_and(|(_, c)| c == 1)
    });
    host.wait_for("500 positions", |l| {
        l.contains("particles/positions") && l.contains("f32 [500 x 3]")
    });
    host.send(":reload");
    host.wait_for("the reload", |l| {
        l.contains("reloaded particles 0.1.0 (generation 1)")
    });
    host.wait_for("the steps going on", |l| {
        l.contains("the steps go on after the reload")
    });
    host.send(":stats");
    host.wait_for("the stats", |l| l.contains("messages reached the sink"));
    host.send(":no-such-command");
    host.wait_for("a refusal", |l| {
        l.contains("unknown command `:no-such-command`")
    });
    host.send(":quit");
    let (status, lines, stderr) = host.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{status}\n{all}\n{stderr}");
    assert!(all.contains("stopping: :quit"), "{all}");
    assert!(all.contains("image retired"), "{all}");
    assert!(
        !all.contains("panicked") && !stderr.contains("panicked"),
        "{all}\n{stderr}"
    );
}

#[test]
fn piped_lines_are_posted_and_the_end_of_stdin_ends_the_run() {
    let mut host = Session::start(&["--quiet", &particles()]);
    host.send("# a comment, ignored");
    host.send("particles/configure agents=700");
    let (status, lines, stderr) = host.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{status}\n{all}\n{stderr}");
    assert!(
        all.contains("posted particles/configure \"agents=700\""),
        "{all}"
    );
    assert!(!all.contains("comment"), "{all}");
    assert!(all.contains("stopping: stdin ended"), "{all}");
}

#[test]
fn a_count_not_reached_exits_3_and_reload_after_reloads_once() {
    let run = run(&[
        "--event",
        "particles/configure agents=100 playing=0",
        "--seconds",
        "1",
        "--frames",
        "1000000000",
        "--reload-after",
        "0.2",
        "--quiet",
        &particles(),
    ]);
    assert_eq!(run.status.code(), Some(3), "{}", run.describe());
    assert!(
        run.stderr.contains("of the 1000000000 frames of --frames"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .contains("reloaded particles 0.1.0 (generation 1)"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("reloads   1 (0 failed)"),
        "{}",
        run.describe()
    );
    assert_no_panic(&run);
}

#[test]
fn a_replaced_plugin_file_is_reloaded_and_a_broken_one_refused() {
    let dir = test_dir!("host-cli-reload");
    let plugin = dir.join("libhostloop_particles.so");
    let build = std::fs::read(fixture("hostloop_particles")).unwrap();
    std::fs::write(&plugin, &build).unwrap();
    let path = plugin.display().to_string();
    let mut host = Session::start(&["--event", "particles/configure agents=1000 rate=30", &path]);
    host.wait_for("the watch", |l| l.contains("watching"));
    host.wait_for("a frame", |l| step_of(l).is_some_and(|(_, c)| c == 1));

    // A broken build: refused plainly, the running one goes on.
    replace_atomically(dir.path(), &plugin, b"not a library\n");
    let refused = host.wait_for("the refusal", |l| l.contains("reload failed"));
    assert!(
        refused.contains("the old build keeps running") && refused.contains("not a shared library"),
        "{refused}"
    );
    host.wait_for("a frame of the old build", |l| {
        step_of(l).is_some_and(|(_, c)| c == 1)
    });

    // A good build again: reloaded, and its frames go on with the configuration.
    replace_atomically(dir.path(), &plugin, &build);
    let reloaded = host.wait_for("the reload", |l| l.contains("reloaded"));
    assert!(
        reloaded.contains("reloaded particles 0.1.0 (generation 1)"),
        "{reloaded}"
    );
    host.wait_for("the new build going on from the old one's step", |l| {
        l.contains("the steps go on after the reload")
    });
    host.wait_for("a frame of the new build, of the same configuration", |l| {
        step_of(l).is_some_and(|(_, c)| c == 1)
    });
    host.send(":quit");
    let (status, lines, stderr) = host.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{status}\n{all}\n{stderr}");
    assert!(all.contains("reloads   1 (1 failed)"), "{all}");
}
