//! Runs the demo binary as a user would and checks what it promises: frames reach the sink on
//! the main thread, the doorbell fd drives the pumps, the pictures are valid files, exit code 0.
//!
//! The first run in a fresh target directory also builds the particles plugin (the demo does it
//! itself), which takes a while in debug builds.

use std::path::PathBuf;
use std::process::{Command, Output};

fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostloop-demo"))
        .args(args)
        .output()
        .expect("the demo binary runs")
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hostloop-demo-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The number after which `label` is written on the summary line starting with `line`, e.g.
/// `number(out, "pumps", "woken by")` is 12 for `pumps  12 woken by …`; digits may be grouped.
fn number_before(out: &str, line: &str, label: &str) -> u64 {
    let l = out
        .lines()
        .find(|l| l.trim_start().starts_with(line))
        .unwrap_or_else(|| panic!("no `{line}` line in:\n{out}"));
    let at = l
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in `{l}`"));
    let word = l[..at].split_whitespace().last().unwrap_or("");
    word.trim_start_matches('(')
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no number before `{label}` in `{l}`"))
}

#[test]
fn a_short_run_delivers_frames_through_the_fd_driven_sink_and_writes_valid_pictures() {
    let dir = TempDir::new("run");
    let out_dir = dir.0.to_str().unwrap();
    let run = demo(&[
        "--agents",
        "2000",
        "--seconds",
        "1",
        "--workers",
        "1",
        "--quiet",
        "--out",
        out_dir,
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("hostloop-demo summary: 2,000 particles"),
        "{stdout}"
    );

    // Frames arrived through the sink, all of them on the main thread.
    assert!(
        number_before(&stdout, "frames", "delivered to the sink") > 0,
        "{stdout}"
    );
    let messages = number_before(&stdout, "sink", "messages");
    assert!(messages > 0);
    assert_eq!(
        number_before(&stdout, "sink", "on the main thread"),
        messages
    );

    // The doorbell fd, not only the frame timer, started pumps that ran work.
    assert!(
        number_before(&stdout, "pumps", "woken by the doorbell") > 0,
        "{stdout}"
    );
    assert!(number_before(&stdout, "pumps", "item") > 0, "{stdout}");
    // The frame timer paces the loop at 60 Hz: never faster (a loaded machine may drop ticks,
    // so there is no lower bound beyond "it ran").
    let frames = number_before(&stdout, "host frame time", "frames at");
    assert!(
        (1..=61).contains(&frames),
        "{frames} frames in 1 s:\n{stdout}"
    );
    let p50: f64 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("host frame time"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("a p50 frame time");
    assert!(
        p50 >= 16.0,
        "p50 frame time {p50} ms is shorter than a 60 Hz frame"
    );
    // Shutdown joined threads and left none behind.
    assert!(number_before(&stdout, "runtime shutdown", "threads joined") > 0);
    assert_eq!(number_before(&stdout, "runtime shutdown", "stragglers"), 0);

    // The PNG: signature, then IHDR with the picture's size, then the IEND trailer.
    let png = std::fs::read(dir.0.join("particles.png")).expect("particles.png was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (960, 540));
    assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");

    // The SVG: a complete document with the frame-time and pump-time series.
    let svg = std::fs::read_to_string(dir.0.join("frame-times.svg")).expect("the plot was written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
}

#[test]
fn headless_runs_write_no_pictures() {
    let dir = TempDir::new("headless");
    let run = demo(&[
        "--agents",
        "1000",
        "--seconds",
        "0.3",
        "--workers",
        "1",
        "--quiet",
        "--headless",
        "--out",
        dir.0.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!dir.0.join("particles.png").exists());
    assert!(!dir.0.join("frame-times.svg").exists());
}

#[test]
fn a_missing_plugin_fails_with_hostloops_error_message() {
    let dir = TempDir::new("missing");
    let run = demo(&[
        "--plugin",
        dir.0.join("nope.so").to_str().unwrap(),
        "--seconds",
        "0.1",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("hl_plugin_load"), "{stderr}");
    assert!(stderr.contains("HL_STATUS_FILE_NOT_FOUND"), "{stderr}");
}

#[test]
fn a_bad_flag_prints_the_usage_and_exits_with_2() {
    let run = demo(&["--agents", "0"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--agents must be"), "{stderr}");
    assert!(stderr.contains("usage: hostloop-demo"), "{stderr}");
}

#[test]
fn an_isolated_plugin_whose_worker_is_killed_comes_back_and_the_host_goes_on() {
    let run = demo(&[
        "--agents",
        "2000",
        "--seconds",
        "1.5",
        "--workers",
        "1",
        "--quiet",
        "--headless",
        "--isolated",
        "--kill-worker-at",
        "0.5",
    ]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("isolated: the plugin runs in worker process"),
        "{out}"
    );
    assert!(
        out.contains("killed by signal 9 (SIGKILL)"),
        "the crash report reached the sink:\n{out}"
    );
    assert!(
        out.contains("resuming from step"),
        "the restored simulation sent frames:\n{out}"
    );
    // The host ran its whole loop and shut down cleanly around the crash.
    assert!(
        number_before(&out, "host frame time", "frames at") > 0,
        "{out}"
    );
    assert_eq!(
        number_before(&out, "runtime shutdown", "stragglers"),
        0,
        "{out}"
    );
}
