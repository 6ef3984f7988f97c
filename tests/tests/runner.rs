//! `hostloop-worker run`, the headless runner, as a farm uses it: run by its command line on the
//! real particles plugin. Chained runs give the bytes one run gives, which are the library's own
//! simulation stepped in this process; a run stopped by SIGTERM saves, exits 75 and resumes to
//! the same bytes; bad input is a clear error that leaves what was written alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bridge::sdk::cache::Cache;
use bridge::sdk::{Runtime, SimOptions};
use hostloop_particles::{Kernel, Particles};
use hostloop_tests::{fixture, run, test_dir, worker_program, Run, HANG_LIMIT};

const AGENTS: usize = 1000;

fn runner(args: &[&str]) -> Run {
    let mut cmd = Command::new(worker_program());
    cmd.arg("run").args(["--progress", "none"]).args(args);
    run(&mut cmd, HANG_LIMIT)
}

fn plugin() -> String {
    fixture("hostloop_particles").display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The positions of the library's simulation of `AGENTS` particles after `steps` steps,
/// stepped in this process.
fn library_positions(steps: u64) -> Vec<f32> {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = got.clone();
    let sim = rt
        .simulate(
            Particles::new(AGENTS, Kernel::Rust),
            SimOptions::default(),
            move |f: &bridge::sdk::Shared<Vec<f32>>, info, _| {
                if info.step == steps {
                    *slot.lock().unwrap() = Some(f.to_vec());
                }
            },
        )
        .unwrap();
    sim.seek(steps);
    let report = rt
        .run_until(
            || got.lock().unwrap().is_some(),
            Duration::from_millis(5),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished, "the library's step {steps} never arrived");
    let positions = got.lock().unwrap().take().unwrap();
    positions
}

#[test]
fn chained_runs_give_the_bytes_of_one_run_and_of_the_library() {
    let dir = test_dir!("runner-chain");
    let (one_state, one_cache) = (dir.join("one.state"), dir.join("one.hlcache"));
    let configure = format!("agents={AGENTS}");
    runner(&[
        "--configure",
        &configure,
        "--until",
        "300",
        "--save",
        s(&one_state),
        "--cache",
        s(&one_cache),
        &plugin(),
    ])
    .assert_success("one run of 300 steps");

    // The same 300 steps as three segments, each restoring the state the previous one saved,
    // all appending to one cache.
    let cache = dir.join("chain.hlcache");
    let mut previous: Option<PathBuf> = None;
    for (i, until) in ["100", "200", "300"].into_iter().enumerate() {
        let state = dir.join(format!("seg{i}.state"));
        let mut args = vec!["--until", until, "--save", s(&state), "--cache", s(&cache)];
        let start;
        match &previous {
            Some(p) => {
                start = p.clone();
                args.extend(["--restore", s(&start)]);
            }
            None => args.extend(["--configure", &configure]),
        }
        let plugin = plugin();
        args.push(&plugin);
        runner(&args).assert_success(&format!("segment {i}"));
        previous = Some(state);
    }
    assert_eq!(
        std::fs::read(previous.unwrap()).unwrap(),
        std::fs::read(&one_state).unwrap(),
        "the chained runs' final state differs from one run's"
    );
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        std::fs::read(&one_cache).unwrap(),
        "the chained runs' cache differs from one run's"
    );

    // The cache: steps 1..=300 once each, and step 300 is the library's own.
    let c = Cache::open(&one_cache).unwrap();
    assert!(c.damage().is_none(), "{:?}", c.damage());
    assert_eq!(c.len(), 300);
    assert_eq!(
        (0..c.len()).map(|i| c.step(i).unwrap()).collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    let last = c.frame(299).unwrap();
    assert_eq!(last.topic(), "particles/positions");
    let cached = last.array::<f32>(0).unwrap();
    let library = library_positions(300);
    assert_eq!(cached.len(), library.len());
    assert!(
        cached
            .iter()
            .zip(&library)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the runner's step 300 is not the library's, bit for bit"
    );
}

#[test]
fn a_run_stopped_by_sigterm_saves_exits_75_and_resumes_to_the_same_bytes() {
    let dir = test_dir!("runner-sigterm");
    let configure = format!("agents={AGENTS}");
    // Enough steps that the signal lands mid-run on any machine: the run is stopped as soon as
    // its first periodic snapshot exists.
    let until = "200000";
    let (state, cache) = (dir.join("run.state"), dir.join("run.hlcache"));
    let args = |state: &Path, cache: &Path| -> Vec<String> {
        [
            "run",
            "--progress",
            "none",
            "--configure",
            &configure,
            "--until",
            until,
            "--save",
            s(state),
            "--save-every",
            "50",
            "--resume",
            "--cache",
            s(cache),
            "--cache-topic",
            "particles/positions",
            &plugin(),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut child = Command::new(worker_program())
        .args(args(&state, &cache))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG_LIMIT;
    while !state.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first snapshot"
        );
        assert!(Instant::now() < deadline, "no snapshot in {HANG_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet (no wait has returned).
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill failed");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("stopped by SIGTERM at step") && stderr.contains("state saved"),
        "{stderr}"
    );
    let stopped_at: u64 = stderr
        .split("at step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no step in {stderr:?}"));
    assert!(stopped_at < 200_000, "{stderr}");
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        c.step(c.len() - 1),
        Some(stopped_at),
        "the cache ends at the saved step"
    );

    // Resumed: on to a nearer target, to compare with an uninterrupted run to the same step.
    let target = (stopped_at + 100).to_string();
    let mut resumed = args(&state, &cache);
    let at = resumed.iter().position(|a| a == until).unwrap();
    resumed[at] = target.clone();
    let r = run(Command::new(worker_program()).args(&resumed), HANG_LIMIT);
    r.assert_success("the resumed run");

    let (full_state, full_cache) = (dir.join("full.state"), dir.join("full.hlcache"));
    let mut full = args(&full_state, &full_cache);
    let at = full.iter().position(|a| a == until).unwrap();
    full[at] = target;
    run(Command::new(worker_program()).args(&full), HANG_LIMIT)
        .assert_success("the uninterrupted run");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        std::fs::read(&full_state).unwrap(),
        "stopped and resumed differs from uninterrupted"
    );
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        std::fs::read(&full_cache).unwrap(),
        "the resumed cache differs from the uninterrupted one"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_what_was_written_stays() {
    let dir = test_dir!("runner-bad");
    let help = runner(&["--help"]);
    help.assert_success("--help");
    assert!(help.stdout.contains("--save-every") && help.stdout.contains("Exit status"));

    for (args, why) in [
        (&["--until", "5"][..], "no PLUGIN"),
        (&["--steps", "five", "p.so"][..], "whole number"),
        (&["--steps", "5", "--resume", "p.so"][..], "give --save"),
    ] {
        let r = runner(args);
        assert_eq!(r.status.code(), Some(2), "{}", r.describe());
        assert!(r.stderr.contains(why), "{}", r.describe());
    }

    // A saved state, then runs that fail: it is left exactly as it was.
    let state = dir.join("kept.state");
    let configure = format!("agents={AGENTS}");
    runner(&[
        "--configure",
        &configure,
        "--steps",
        "20",
        "--save",
        s(&state),
        &plugin(),
    ])
    .assert_success("a short run");
    let saved = std::fs::read(&state).unwrap();
    let not_a_state = dir.write("notes.txt", "not a state");
    let missing = dir.join("missing.so");
    for (args, why) in [
        (
            vec!["--steps", "5", "--save", s(&state), s(&missing)],
            "cannot load the plugin",
        ),
        (
            vec![
                "--configure",
                "agents=0",
                "--steps",
                "5",
                "--save",
                s(&state),
                &plugin(),
            ],
            "agents must be",
        ),
        (
            vec![
                "--restore",
                s(&not_a_state),
                "--steps",
                "5",
                "--save",
                s(&state),
                &plugin(),
            ],
            "is not a state of the \"particles\" simulation",
        ),
        (
            vec![
                "--restore",
                s(&state),
                "--until",
                "10",
                "--save",
                s(&state),
                &plugin(),
            ],
            "the state is at step 20, past --until 10",
        ),
    ] {
        let r = runner(&args);
        assert_eq!(r.status.code(), Some(1), "{}", r.describe());
        assert!(r.stderr.contains(why), "{}", r.describe());
        assert!(!r.stderr.contains("panicked"), "{}", r.describe());
        assert_eq!(
            std::fs::read(&state).unwrap(),
            saved,
            "{args:?} changed the state"
        );
    }
}

/// A host exporting a live `Every` simulation with `cache::Recorder` writes the frames the
/// runner writes: every step, in order, the same bytes.
#[test]
fn a_hosts_every_export_records_the_frames_the_runner_writes() {
    use bridge::sdk::cache::{CacheWriter, Recorder};
    use bridge::sdk::Event;
    use std::sync::{Arc, Mutex};

    let dir = test_dir!("runner-export");
    let runner_cache = dir.join("runner.hlcache");
    let configure = format!("agents={AGENTS}");
    runner(&[
        "--configure",
        &configure,
        "--until",
        "60",
        "--cache",
        s(&runner_cache),
        &plugin(),
    ])
    .assert_success("the runner");

    let host_cache = dir.join("host.hlcache");
    let rt = Runtime::builder().workers(2).build().unwrap();
    let recorder = Arc::new(Mutex::new(Some(
        Recorder::new(CacheWriter::create(&host_cache).unwrap(), "particles").min_configuration(1),
    )));
    let r = recorder.clone();
    rt.set_sink(Some(Box::new(move |m| {
        if let Some(r) = r.lock().unwrap().as_mut() {
            r.record(m).unwrap();
        }
    })));
    let p = rt.load_plugin(fixture("hostloop_particles")).unwrap();
    rt.post_event(Event::Custom {
        topic: "particles/configure".into(),
        bytes: format!("{configure} delivery=every rate=0 playing=1").into_bytes(),
        coalesce: false,
    })
    .unwrap();
    let report = rt
        .run_until(
            || {
                recorder
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|r| r.writer().frames() >= 61)
            },
            Duration::from_millis(5),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished, "the host did not receive 61 frames");
    p.unload(Duration::from_secs(10));
    rt.shutdown(Duration::from_secs(10));
    let recorder = recorder.lock().unwrap().take().unwrap();
    recorder.finish().unwrap();

    let host = Cache::open(&host_cache).unwrap();
    let ran = Cache::open(&runner_cache).unwrap();
    // Every step from the configured simulation's first frame on, none skipped.
    let steps: Vec<u64> = (0..host.len()).map(|i| host.step(i).unwrap()).collect();
    assert_eq!(steps[0], 0, "the configured simulation starts at step 0");
    assert!(
        steps.windows(2).all(|w| w[1] == w[0] + 1),
        "a step was skipped or repeated: {steps:?}"
    );
    for step in 1..=60u64 {
        let a = host.frame(host.find_step(step).unwrap()).unwrap();
        let b = ran.frame(ran.find_step(step).unwrap()).unwrap();
        assert_eq!(a.topic(), b.topic());
        assert_eq!(a.bytes(0), b.bytes(0), "step {step} differs");
    }
}
