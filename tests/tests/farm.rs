//! The farm on a real Slurm: `scripts/farm-up` starts munged, slurmctld and slurmd on this
//! machine; a particles run split into chained segments gives the bytes of the same steps run
//! in one process; a segment requeued mid-run (what a pre-emption does) resumes from its last
//! snapshot and the result is still the same; a stopped Slurm is a clear error.
//!
//! When Slurm cannot be installed here (no root), the tests print SKIPPED.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bridge::sdk::farm::{Chain, ChainSpec, Farm, JobState, Slurm};
use hostloop_tests::{fixture, run, test_dir, worker_program, HANG_LIMIT};

fn farm() -> Option<&'static Path> {
    hostloop_tests::slurm_farm()
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

/// Waits (generously: a loaded machine) until the chain has finished; fails on a failure.
fn wait_finished(farm: &Slurm, chain: &Chain) {
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        let s = chain.status(farm).unwrap();
        if let Some((i, why)) = &s.failed {
            let log = std::fs::read_to_string(&chain.segments[*i].log).unwrap_or_default();
            panic!("segment {i}: {why}\n--- its log ---\n{log}");
        }
        if s.is_finished() {
            return;
        }
        assert!(Instant::now() < deadline, "the chain did not finish: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn four_chained_segments_give_the_bytes_of_one_local_run() {
    if farm().is_none() {
        return;
    }
    let dir = test_dir!("farm-chain");
    let slurm = Slurm::new();
    let spec = ChainSpec::new(worker_program(), plugin(), dir.join("run"))
        .configure("agents=1000")
        .steps(1000)
        .segments(4)
        .save_every(100);
    let chain = Chain::submit(&slurm, &spec).unwrap();
    assert_eq!(chain.segments.len(), 4);
    assert_eq!(
        chain.segments.iter().map(|s| s.until).collect::<Vec<_>>(),
        [250, 500, 750, 1000]
    );
    wait_finished(&slurm, &chain);
    let status = chain.status(&slurm).unwrap();
    assert_eq!((status.done, status.step), (4, Some(1000)), "{status:?}");
    assert_eq!(
        std::fs::read(chain.final_state()).unwrap(),
        local_run(dir.path(), "agents=1000", 1000),
        "the farm's final state differs from the same steps run here"
    );
    let cache = bridge::sdk::cache::Cache::open(chain.cache.as_ref().unwrap()).unwrap();
    assert!(cache.damage().is_none());
    assert_eq!(cache.len(), 1000, "one frame per step, each once");
    assert_eq!((cache.step(0), cache.step(999)), (Some(1), Some(1000)));
}

#[test]
fn a_segment_requeued_mid_run_resumes_and_the_result_is_the_same() {
    if farm().is_none() {
        return;
    }
    let dir = test_dir!("farm-requeue");
    let slurm = Slurm::new();
    // The first segment is long enough to be caught running on any machine; the test requeues
    // it once its first periodic snapshot exists.
    let spec = ChainSpec::new(worker_program(), plugin(), dir.join("run"))
        .configure("agents=1000")
        .steps(60_000)
        .segments(2)
        .save_every(200)
        .cache(false);
    let chain = Chain::submit(&slurm, &spec).unwrap();
    let first = &chain.segments[0];
    let deadline = Instant::now() + HANG_LIMIT;
    while !first.state.exists() {
        let (state, _) = slurm.state(&first.id).unwrap();
        assert!(
            !state.is_final(),
            "segment 0 ended ({state:?}) before its first snapshot"
        );
        assert!(Instant::now() < deadline, "segment 0 never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
    slurm.requeue(&first.id).unwrap();
    wait_finished(&slurm, &chain);
    let status = chain.status(&slurm).unwrap();
    assert!(
        status.restarts >= 1,
        "the requeue was not counted: {status:?}"
    );
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(
        log.contains("stopped by SIGTERM at step"),
        "segment 0 was not stopped at a step boundary:\n{log}"
    );
    assert_eq!(
        std::fs::read(chain.final_state()).unwrap(),
        local_run(dir.path(), "agents=1000", 60_000),
        "requeued and resumed differs from the same steps run here"
    );
}

#[test]
fn cancelling_a_chain_cancels_its_jobs_and_bad_input_is_a_clear_error() {
    if farm().is_none() {
        return;
    }
    let dir = test_dir!("farm-cancel");
    let slurm = Slurm::new();
    let spec = ChainSpec::new(worker_program(), plugin(), dir.join("run"))
        .configure("agents=1000")
        .steps(1_000_000)
        .segments(3)
        .cache(false);
    let chain = Chain::submit(&slurm, &spec).unwrap();
    chain.cancel(&slurm).unwrap();
    let deadline = Instant::now() + HANG_LIMIT;
    for s in &chain.segments {
        loop {
            let (state, _) = slurm.state(&s.id).unwrap();
            if state.is_final() {
                assert_eq!(state, JobState::Cancelled, "segment {}", s.id);
                break;
            }
            assert!(Instant::now() < deadline, "{} was not cancelled", s.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A plugin that does not exist: the job fails, the chain says which and why.
    let bad = ChainSpec::new(worker_program(), dir.join("missing.so"), dir.join("bad"))
        .steps(10)
        .segments(2);
    let chain = Chain::submit(&slurm, &bad).unwrap();
    let deadline = Instant::now() + HANG_LIMIT;
    let status = loop {
        let s = chain.status(&slurm).unwrap();
        if s.is_finished() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the bad chain did not end: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (i, why) = status.failed.expect("the chain failed");
    assert_eq!(i, 0, "{why}");
    let log = std::fs::read_to_string(&chain.segments[0].log).unwrap();
    assert!(log.contains("cannot load the plugin"), "{log}");

    // Both a configuration and a state: refused before anything is submitted.
    let both = ChainSpec::new(worker_program(), plugin(), dir.join("both"))
        .configure("agents=10")
        .restore(dir.join("x.state"), 0);
    assert!(Chain::submit(&slurm, &both).is_err());

    // A Slurm that cannot be reached: a clear error naming the command.
    let nowhere = Slurm::new().bin_dir(dir.join("no-slurm-here"));
    let e = Chain::submit(&nowhere, &spec).unwrap_err();
    assert!(e.0.contains("cannot run sbatch"), "{e}");
}

#[test]
fn a_host_runs_a_chain_as_a_job_with_progress_on_its_main_thread_and_cancels_it() {
    if farm().is_none() {
        return;
    }
    use std::sync::{Arc, Mutex};
    let dir = test_dir!("farm-job");
    let rt = bridge::sdk::Runtime::builder().workers(1).build().unwrap();
    let main = std::thread::current().id();
    let progress: Arc<Mutex<Vec<(f32, String, bool)>>> = Arc::default();
    let outcome = Arc::new(Mutex::new(None));
    let (p, o) = (progress.clone(), outcome.clone());
    let spec = ChainSpec::new(worker_program(), plugin(), dir.join("run"))
        .configure("agents=1000")
        .steps(400)
        .segments(2)
        .save_every(50);
    let _job = rt
        .run_on_farm(Slurm::new(), spec)
        .unwrap()
        .on_progress(move |pr, _| {
            p.lock().unwrap().push((
                pr.fraction,
                pr.message.clone().unwrap_or_default(),
                std::thread::current().id() == main,
            ))
        })
        .on_main(move |r, _| *o.lock().unwrap() = Some(r));
    let report = rt
        .run_until(
            || outcome.lock().unwrap().is_some(),
            Duration::from_millis(5),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(report.finished, "the farm job did not finish");
    let done = outcome
        .lock()
        .unwrap()
        .take()
        .unwrap()
        .expect("the farm run succeeded");
    assert_eq!(done.status.done, 2);
    assert_eq!(
        std::fs::read(&done.state).unwrap(),
        local_run(dir.path(), "agents=1000", 400)
    );
    let progress = progress.lock().unwrap().clone();
    assert!(!progress.is_empty(), "no progress reached the main thread");
    assert!(progress.iter().all(|p| p.2), "progress off the main thread");
    assert!(
        progress
            .iter()
            .any(|p| p.1.starts_with("segment ") && p.1.contains(" of 400")),
        "{progress:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress went back: {progress:?}"
    );

    // Cancelling the job cancels the farm's jobs.
    let spec = ChainSpec::new(worker_program(), plugin(), dir.join("cancelled"))
        .configure("agents=1000")
        .steps(10_000_000)
        .segments(2)
        .cache(false);
    let ended = Arc::new(Mutex::new(None));
    let e = ended.clone();
    let job = rt
        .run_on_farm(Slurm::new(), spec)
        .unwrap()
        .on_main(move |r, _| *e.lock().unwrap() = Some(r.map(|o| o.chain)));
    // Once segment 0 runs (its log has a progress line), cancel.
    let log = dir.join("cancelled/segment-0.log");
    let r = rt
        .run_until(
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("step ")),
            Duration::from_millis(5),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(r.finished, "segment 0 never reported a step");
    job.cancel();
    let r = rt
        .run_until(
            || ended.lock().unwrap().is_some(),
            Duration::from_millis(5),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(r.finished);
    assert!(matches!(
        ended.lock().unwrap().take(),
        Some(Err(bridge::sdk::Error::Cancelled))
    ));
    // Every job of that chain (its working directory is the chain's) leaves the queue
    // cancelled: none stays pending or running.
    let chain_dir = dir.join("cancelled");
    let chain_dir = chain_dir.to_str().unwrap();
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        let queue = run(
            Command::new("squeue").args(["-h", "-o", "%Z %T %i"]),
            HANG_LIMIT,
        )
        .stdout;
        let ours: Vec<&str> = queue
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(chain_dir))
            .collect();
        if ours.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still queued: {ours:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stopped_slurm_is_a_clear_error_and_what_was_written_stays() {
    let Some(conf) = farm() else {
        return;
    };
    let dir = test_dir!("farm-stopped");
    // The cluster's configuration with its controller on a port nothing listens on: what the
    // commands meet when slurmctld is down.
    let text = std::fs::read_to_string(conf).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let stopped: String = text
        .lines()
        .map(|l| {
            if l.starts_with("SlurmctldPort=") {
                format!("SlurmctldPort={port}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let stopped_conf = dir.write("stopped.conf", &stopped);
    let slurm = Slurm::new().conf(&stopped_conf);
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let kept = run_dir.join("segment-0.state");
    std::fs::write(&kept, b"an earlier attempt's state").unwrap();
    let spec = ChainSpec::new(worker_program(), plugin(), &run_dir)
        .configure("agents=1000")
        .steps(10)
        .segments(2);
    let e = Chain::submit(&slurm, &spec).unwrap_err();
    assert!(
        e.0.contains("sbatch failed") && e.0.contains("Unable to contact slurm controller"),
        "{e}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), b"an earlier attempt's state");
    let e = slurm
        .state(&bridge::sdk::farm::FarmJobId("1".into()))
        .unwrap_err();
    assert!(e.0.contains("scontrol failed"), "{e}");
}
