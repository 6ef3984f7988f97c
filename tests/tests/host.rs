//! `tests/c/host.c`, a real C11 host loop on libhostloop: natively, under ASan/UBSan and under
//! valgrind.

use hostloop_tests::{c_dir, run_program, run_sanitized, run_valgrind, test_dir, Build, Lang, Run};
use hostloop_tests::{TestDir, SANITIZER_FLAGS};

const JOBS: u64 = 50;

fn build_host(dir: &TestDir, extra_flags: &[&str]) -> std::path::PathBuf {
    Build::new(Lang::C)
        .flags(extra_flags)
        .source(c_dir().join("host.c"))
        .compile(dir.join("host"))
}

/// What every run of host.c must show, however it was built.
fn assert_host_behaviour(run: &Run) {
    run.assert_success("host.c");
    assert!(run.has_line("host: OK"), "{}", run.describe());
    let d = run.describe();
    assert_eq!(
        run.number("results"),
        JOBS,
        "every job's done saw its result\n{d}"
    );
    assert_eq!(
        run.number("cancelled"),
        1,
        "the long job's done saw CANCELLED\n{d}"
    );
    assert_eq!(run.number("sink_messages"), 2 * JOBS, "{d}");
    assert_eq!(run.number("bytes_messages"), JOBS, "{d}");
    assert_eq!(run.number("array_messages"), JOBS, "{d}");
    assert_eq!(
        run.number("events"),
        2,
        "one custom event, three frames coalesced to one\n{d}"
    );
    assert_eq!(
        run.value("last_frame"),
        Some("3"),
        "the latest frame wins\n{d}"
    );
    assert!(run.number("wakes") >= 1, "the doorbell fd drove pumps\n{d}");
    assert_eq!(
        run.number("idle_wake"),
        1,
        "a job finishing while the host idles in poll() makes the fd readable\n{d}"
    );
    assert!(
        run.number("wake_items") >= 1,
        "pumps after a readable poll ran work\n{d}"
    );
    assert_eq!(
        run.number("doorbell_quiet"),
        1,
        "the fd is quiet once drained\n{d}"
    );
    assert_eq!(
        run.number("doorbell_rings"),
        run.number("request_pumps"),
        "request_pump is called exactly when the doorbell rings\n{d}"
    );
    assert!(
        run.number("doorbell_rings") < run.number("items"),
        "rings coalesce: fewer rings than main-thread items\n{d}"
    );
    assert_eq!(run.number("stragglers"), 0, "{d}");
    assert_eq!(
        run.number("threads_joined"),
        6,
        "4 workers + 2 IO threads\n{d}"
    );
    assert_eq!(
        run.number("finalized"),
        run.number("registered"),
        "every user_data finalized\n{d}"
    );
    assert_eq!(run.number("registered"), JOBS + 6, "{d}");
    assert_eq!(
        run.value("fds_leaked"),
        Some("0"),
        "the doorbell's fds are closed\n{d}"
    );
}

#[test]
fn a_c_host_loop_runs_jobs_pumps_on_the_doorbell_and_finalizes_everything() {
    let dir = test_dir!("host-native");
    let exe = build_host(&dir, &[]);
    assert_host_behaviour(&run_program(&exe, &[], &[]));
}

#[test]
fn the_c_host_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let dir = test_dir!("host-asan");
    let exe = build_host(&dir, SANITIZER_FLAGS);
    assert_host_behaviour(&run_sanitized(&exe, &[]));
}

#[test]
fn the_c_host_is_clean_under_valgrind() {
    let dir = test_dir!("host-valgrind");
    if let Some(run) = run_valgrind(&build_host(&dir, &["-g"]), &[]) {
        assert_host_behaviour(&run);
    }
}
