//! `tests/c/farm_host.c`: a C host submits farm runs through `hl_farm_run` (`hostloop/farm.h`)
//! to the real Slurm `scripts/farm-up` starts, sleeps on its wake fd and pumps, and receives
//! progress and completion on its main thread; the run's final state is the bytes of the same
//! steps run here in one process; cancelling a run leaves none of its Slurm jobs queued. Bad
//! input gets its documented statuses. Natively, under ASan/UBSan and under valgrind; the C++
//! wrapper (`hostloop::FarmRun`) too.
//!
//! When Slurm cannot be installed here (no root), the cluster parts print SKIPPED and only the
//! bad-input part (which needs no cluster) runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hostloop_tests::SANITIZER_FLAGS;
use hostloop_tests::{c_dir, fixture, run, run_program, run_sanitized, run_valgrind};
use hostloop_tests::{test_dir, worker_program, Build, Lang, Run, TestDir, HANG_LIMIT};

fn farm() -> Option<&'static Path> {
    hostloop_tests::slurm_farm()
}

/// The cluster is one node with few CPUs: one farm program at a time, so each run's timing is
/// its own and not the sum of every test's.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn plugin() -> PathBuf {
    fixture("hostloop_particles")
}

/// The same steps run by `hostloop-worker run` here, in one process: its final state.
fn local_run(dir: &Path, configure: &str, until: u64) -> Vec<u8> {
    let state = dir.join("local.state");
    run(
        Command::new(worker_program())
            .args(["run", "--progress", "none", "--configure", configure])
            .args(["--until", &until.to_string(), "--save"])
            .arg(&state)
            .arg(plugin()),
        HANG_LIMIT,
    )
    .assert_success("the local run");
    std::fs::read(state).unwrap()
}

fn build(dir: &TestDir, flags: &[&str]) -> PathBuf {
    Build::new(Lang::C)
        .flags(flags)
        .source(c_dir().join("farm_host.c"))
        .compile(dir.join("farm_host"))
}

/// The program's arguments: the worker, the plugin, its run directory and the mode.
fn args(dir: &TestDir, mode: &'static str) -> Vec<String> {
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    vec![
        worker_program().display().to_string(),
        plugin().display().to_string(),
        runs.display().to_string(),
        mode.to_owned(),
    ]
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// What every mode prints: every refusal got its status, an unreachable Slurm is a FAILED done.
fn assert_bad_input(run: &Run) {
    run.assert_success("farm_host.c");
    assert!(run.has_line("farm_host: OK"), "{}", run.describe());
    assert!(run.number("refused") >= 18, "{}", run.describe());
    assert_eq!(
        run.value("unreachable"),
        Some("HL_STATUS_FAILED"),
        "{}",
        run.describe()
    );
}

/// One `progress run=<name> ...` line: (main thread, fraction, message).
fn progress_lines(run: &Run, name: &str) -> Vec<(bool, f32, String)> {
    let prefix = format!("progress run={name} ");
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|rest| {
            let (head, message) = rest
                .split_once(" message=")
                .unwrap_or_else(|| panic!("a progress line without a message: {rest}"));
            let mut main = None;
            let mut fraction = None;
            for kv in head.split_whitespace() {
                match kv.split_once('=') {
                    Some(("main", v)) => main = Some(v == "1"),
                    Some(("fraction", v)) => fraction = v.parse().ok(),
                    _ => {}
                }
            }
            (
                main.expect("main="),
                fraction.expect("fraction="),
                message.to_owned(),
            )
        })
        .collect()
}

/// The `done run=<name> ...` line: (status name, main thread, text).
fn done_line(run: &Run, name: &str) -> (String, bool, String) {
    let prefix = format!("done run={name} ");
    let rest = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no done for run {name}:\n{}", run.describe()));
    let (head, text) = rest.split_once(" text=").expect("text=");
    let mut status = String::new();
    let mut main = false;
    for kv in head.split_whitespace() {
        match kv.split_once('=') {
            Some(("status", v)) => status = v.to_owned(),
            Some(("main", v)) => main = v == "1",
            _ => {}
        }
    }
    (status, main, text.to_owned())
}

/// Slurm's queue has no job (pending, running, completing) whose working directory is `dir`:
/// waits for it, generously.
fn assert_no_job_left_in(dir: &str) {
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        let queue = run(
            Command::new("squeue").args(["-h", "-o", "%Z %T %i"]),
            HANG_LIMIT,
        );
        queue.assert_success("squeue");
        let ours: Vec<&str> = queue
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(dir))
            .collect();
        if ours.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled run's jobs are still queued: {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything the full program must have shown: both runs on the cluster, and the bad input.
fn assert_farm_runs(dir: &TestDir, run: &Run) {
    assert_bad_input(run);
    let d = run.describe();

    // Run a: progress on the main thread, never backwards, then OK with the final state.
    let progress = progress_lines(run, "a");
    assert!(!progress.is_empty(), "no progress reached the host\n{d}");
    assert!(
        progress.iter().all(|p| p.0),
        "progress off the main thread\n{d}"
    );
    assert!(
        progress.windows(2).all(|w| w[0].1 <= w[1].1),
        "progress went back\n{d}"
    );
    assert!(
        progress
            .iter()
            .all(|p| p.2.starts_with("segment ") && p.2.ends_with(" of 400")),
        "progress messages\n{d}"
    );
    assert_eq!(progress.last().unwrap().1, 1.0, "{d}");
    let (status, main, state) = done_line(run, "a");
    assert_eq!((status.as_str(), main), ("HL_STATUS_OK", true), "{d}");
    assert_eq!(run.value("final_state"), Some(state.as_str()), "{d}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        local_run(dir.path(), "agents=1000", 400),
        "the farm's final state differs from the same steps run here\n{d}"
    );
    assert_eq!(run.number("cache_frames"), 400, "one frame per step\n{d}");

    // Run b: cancelled at its first step, then CANCELLED, and Slurm has none of its jobs.
    let progress = progress_lines(run, "b");
    assert!(
        progress.iter().all(|p| p.0),
        "progress off the main thread\n{d}"
    );
    assert!(run.number("at_step") > 0, "{d}");
    let (status, main, _) = done_line(run, "b");
    assert_eq!(
        (status.as_str(), main),
        ("HL_STATUS_CANCELLED", true),
        "{d}"
    );
    let cancelled = run.value("cancelled_dir").expect("cancelled_dir=");
    assert!(
        cancelled.ends_with("runs/cancelled"),
        "the cancelled run's directory: {cancelled}\n{d}"
    );
    assert_no_job_left_in(cancelled);
}

#[test]
fn a_c_host_runs_a_farm_job_with_progress_and_done_on_its_main_thread_and_cancels_it() {
    let dir = test_dir!("farm-c");
    let exe = build(&dir, &[]);
    let Some(conf) = farm() else {
        assert_bad_input(&run_program(&exe, &as_strs(&args(&dir, "bad")), &[]));
        return;
    };
    let _one = one_at_a_time();
    let conf = conf.display().to_string();
    let run = run_program(
        &exe,
        &as_strs(&args(&dir, "all")),
        &[("SLURM_CONF", conf.as_str())],
    );
    assert_farm_runs(&dir, &run);
}

#[test]
fn the_farm_host_is_clean_under_sanitizers() {
    let dir = test_dir!("farm-c-asan");
    let exe = build(&dir, SANITIZER_FLAGS);
    let mode = if farm().is_some() { "all" } else { "bad" };
    let _one = one_at_a_time();
    // SLURM_CONF reaches the program from this process's environment (`farm`).
    let run = run_sanitized(&exe, &as_strs(&args(&dir, mode)));
    if mode == "all" {
        assert_farm_runs(&dir, &run);
    } else {
        assert_bad_input(&run);
    }
}

#[test]
fn the_farm_host_is_clean_under_valgrind() {
    let dir = test_dir!("farm-c-valgrind");
    let exe = build(&dir, &["-g"]);
    let mode = if farm().is_some() { "all" } else { "bad" };
    let _one = one_at_a_time();
    if let Some(run) = run_valgrind(&exe, &as_strs(&args(&dir, mode))) {
        if mode == "all" {
            assert_farm_runs(&dir, &run);
        } else {
            assert_bad_input(&run);
        }
    }
}

/// `hostloop::FarmRun` over the same API: a refused spec throws the status, an unreachable
/// Slurm is a FAILED `done` on the main thread, and the callable is destroyed after it.
const FARM_HPP: &str = r#"
#include "hostloop.hpp"

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const std::thread::id main_id = std::this_thread::get_id();
    int failures = 0;
    auto witness = std::make_shared<int>(0); /* captured by the callable: freed with it */
    {
        hostloop::Runtime rt(hostloop::Options().workers(1));
        try {
            hostloop::FarmRun bad(rt, hostloop::FarmSpec(argv[1], argv[2], argv[3]).segments(0));
            failures++;
        } catch (const hostloop::Error &e) {
            std::printf("refused=%s\n", hostloop::status_name(e.status()));
        }
        const std::string nowhere = std::string(argv[3]) + "/no-slurm-here";
        hl_status_t status = HL_STATUS_PENDING;
        std::string text;
        bool on_main = false;
        hostloop::FarmRun run(rt,
                              hostloop::FarmSpec(argv[1], argv[2], argv[3])
                                  .configure("agents=10")
                                  .steps(10)
                                  .slurm_bin_dir(nowhere),
                              [&, witness](hl_status_t s, const char *t) {
                                  (void)witness;
                                  status = s;
                                  text = t;
                                  on_main = std::this_thread::get_id() == main_id;
                              });
        const hostloop::RunReport r = rt.run_until([&] { return status != HL_STATUS_PENDING; },
                                                   std::chrono::microseconds(2000),
                                                   std::chrono::seconds(60));
        if (!r.finished) failures++;
        std::printf("done=%s main=%d status=%s\n", hostloop::status_name(status), on_main ? 1 : 0,
                    hostloop::status_name(run.status()));
        if (text.find("sbatch") == std::string::npos) failures++;
        hostloop::FarmRun moved = std::move(run);
        if (run || !moved) failures++;
    }
    std::printf("callable_destroyed=%d\n", witness.use_count() == 1 ? 1 : 0);
    if (failures != 0) {
        std::fprintf(stderr, "farm_hpp: %d checks failed\n", failures);
        return 1;
    }
    std::printf("farm_hpp: OK\n");
    return 0;
}
"#;

#[test]
fn the_cpp_wrapper_throws_refusals_and_delivers_done_on_the_main_thread() {
    let dir = test_dir!("farm-hpp");
    let src = dir.write("farm_hpp.cpp", FARM_HPP);
    let exe = Build::new(Lang::Cxx)
        .source(&src)
        .compile(dir.join("farm_hpp"));
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let worker = worker_program().display().to_string();
    let plugin = plugin().display().to_string();
    let runs = runs.display().to_string();
    let run = run_program(&exe, &[&worker, &plugin, &runs], &[]);
    run.assert_success("farm_hpp.cpp");
    assert!(run.has_line("farm_hpp: OK"), "{}", run.describe());
    assert_eq!(run.value("refused"), Some("HL_STATUS_INVALID_ARG"));
    assert_eq!(run.value("done"), Some("HL_STATUS_FAILED"));
    assert_eq!(run.value("main"), Some("1"));
    assert_eq!(run.value("status"), Some("HL_STATUS_FAILED"));
    assert_eq!(run.value("callable_destroyed"), Some("1"));
}
