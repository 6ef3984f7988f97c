//! The soak (`src/bin/soak.rs`) in its shortest form: ten seconds of mixed load must pass and
//! plot its samples. CI runs it for 60 s (`.ci/run`), and `scripts/soak 3h` for as long as asked.
//!
//! Also the regression tests of the defects the soak found.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::sdk as hostloop;
use hostloop_tests::{fixture_dir, run, test_dir, HANG_LIMIT};

#[test]
fn a_short_soak_passes_and_plots_its_samples() {
    let dir = test_dir!("soak");
    let svg = dir.join("soak.svg");
    let csv = dir.join("soak.csv");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_soak"));
    cmd.args(["--duration", "10s", "--svg"])
        .arg(&svg)
        .arg("--csv")
        .arg(&csv)
        .arg("--plugin-dir")
        .arg(fixture_dir());
    let out = run(&mut cmd, HANG_LIMIT);
    out.assert_success("the soak");
    assert!(
        out.stdout.contains("soak: PASSED"),
        "the soak did not say it passed:\n{}",
        out.describe()
    );
    for figure in ["RSS growth", "peak RSS", "pump p50 / p99 / max"] {
        assert!(
            out.stdout.contains(figure),
            "the soak's summary lacks {figure:?}:\n{}",
            out.describe()
        );
    }
    let plot = std::fs::read_to_string(&svg).expect("the soak wrote its SVG");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains("<polyline"), "the plot has no lines");
    // One sample a second: about ten rows after the header.
    let rows = std::fs::read_to_string(&csv)
        .expect("the soak wrote its samples")
        .lines()
        .count()
        - 1;
    assert!((8..=12).contains(&rows), "{rows} samples in a 10 s run");
}

#[test]
fn the_soak_refuses_a_bad_duration() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_soak"));
    cmd.args(["--duration", "soon"]);
    let out = run(&mut cmd, HANG_LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("bad duration"), "{}", out.describe());
}

/// Found by the soak: after a pump had run many cheap items, the next pump ran hundreds of
/// items past its budget (64 ms for a budget of 1 ms) because it read the clock only once per
/// batch of up to 1024 items. Each item here costs 2 ms of wall time, twice the budget, so the
/// first item spends the budget whatever the machine's load, and no second item may start.
#[test]
fn a_pump_starts_no_item_once_its_budget_is_spent() {
    let rt = hostloop::Runtime::builder().workers(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    // Cheap items first: what a host's pumps see most of the time.
    for _ in 0..5000 {
        rt.post(|_main| {}).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(60);
    while rt.stats().queued.main > 0 && Instant::now() < until {
        rt.pump(Duration::from_secs(1)).unwrap();
    }
    assert_eq!(rt.stats().queued.main, 0, "the cheap items did not drain");
    for _ in 0..20 {
        let ran = ran.clone();
        rt.post(move |_main| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(2) {
                std::hint::spin_loop();
            }
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    let report = rt.pump(Duration::from_millis(1)).unwrap();
    assert_eq!(
        report.ran, 1,
        "a 1 ms pump went on to run {} items of 2 ms (in {:?})",
        report.ran, report.elapsed
    );
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    assert_eq!(report.remaining, 19);
}

/// Found by the soak: a stream's handler ran 64 items per clock read, so a slow handler ran
/// up to 63 items after the pump's budget was spent. As above, each item costs twice the
/// budget.
#[test]
fn a_stream_starts_no_item_once_the_budget_is_spent() {
    let rt = hostloop::Runtime::builder().workers(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = ran.clone();
    let stream = rt.stream(64, move |_item: u32, _main| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        counted.fetch_add(1, Ordering::Relaxed);
    });
    for i in 0..20 {
        stream.try_send(i).unwrap();
    }
    let report = rt.pump(Duration::from_millis(1)).unwrap();
    assert_eq!(
        ran.load(Ordering::Relaxed),
        1,
        "a 1 ms pump handled {} stream items of 2 ms (in {:?})",
        ran.load(Ordering::Relaxed),
        report.elapsed
    );
    assert_eq!(stream.len(), 19);
}
