//! `tests/c/isolation_host.c`, a C11 host with SIGPIPE at its default disposition that runs the
//! crash-on-command fixture isolated through `hl_plugin_load_ex`, kills its worker, writes to
//! the dead worker, and resumes from the checkpoint; and shares a blob with a plugin in another
//! worker. Natively, under ASan/UBSan and under
//! valgrind (the host is checked; the worker is another process, run natively).

use std::path::PathBuf;

use hostloop_tests::{
    c_dir, fixture, run_program, run_sanitized, run_valgrind, test_dir, worker_program,
};
use hostloop_tests::{Build, Lang, Run, TestDir, SANITIZER_FLAGS};

fn build_host(dir: &TestDir, extra_flags: &[&str]) -> PathBuf {
    Build::new(Lang::C)
        .flags(extra_flags)
        .source(c_dir().join("isolation_host.c"))
        .compile(dir.join("isolation_host"))
}

fn args() -> [String; 3] {
    [
        worker_program(),
        fixture("fixture_crashy"),
        fixture("fixture_reader_b"),
    ]
    .map(|p| p.to_str().unwrap().to_owned())
}

/// What every run of isolation_host.c must show, however it was built.
fn assert_isolation_host_behaviour(run: &Run) {
    run.assert_success("isolation_host.c");
    assert!(run.has_line("isolation_host: OK"), "{}", run.describe());
    let d = run.describe();
    let one = |key: &str| assert_eq!(run.number(key), 1, "{key}\n{d}");
    // The defaults are LoadOptions::new()'s.
    assert_eq!(run.number("default_isolation"), 0, "{d}");
    assert_eq!(run.number("default_heartbeat_ms"), 5000, "{d}");
    assert_eq!(run.number("default_checkpoint_interval_ms"), 1000, "{d}");
    assert_eq!(run.number("default_restart_limit"), 3, "{d}");
    // It ran in a worker, and survived that worker's kill -9 and the writes to it.
    assert_eq!(run.number("isolation"), 1, "HL_ISOLATION_OWN_PROCESS\n{d}");
    for key in [
        "in_another_process",
        "counted_in_worker",
        "crash_signal_9",
        "crash_names_plugin",
        "host_alive_after_writes_to_a_dead_worker",
        "new_pid",
        "last_crash_sigkill",
        "first_reaped",
        "resumed_in_new_worker",
        "missing_worker_named",
        "second_reaped",
        "blob_len_ok",
        "blob_sum_ok",
        "blob_read_in_worker",
        "task_sum_ok",
        "task_segv_cause",
        "task_answers_once",
    ] {
        one(key);
    }
    assert_eq!(run.number("crashes_before"), 0, "{d}");
    assert_eq!(
        (run.number("restarts"), run.number("crashes")),
        (1, 1),
        "{d}"
    );
    assert_eq!(run.number("down"), 0, "{d}");
    assert_eq!(
        run.number("resumed_count"),
        4,
        "the checkpoint of 3, then one tick\n{d}"
    );
    for (key, status) in [
        ("null_options", "HL_STATUS_NULL_ARG"),
        ("unknown_isolation", "HL_STATUS_INVALID_ARG"),
        ("group_missing", "HL_STATUS_INVALID_ARG"),
        ("options_too_small", "HL_STATUS_INVALID_ARG"),
        ("reserved_set", "HL_STATUS_INVALID_ARG"),
        ("missing_worker", "HL_STATUS_WORKER"),
        ("in_process_twice", "HL_STATUS_ALREADY_LOADED"),
        ("blob_twice", "HL_STATUS_INVALID_ARG"),
        ("blob_null", "HL_STATUS_NULL_ARG"),
        ("blob_missing_file", "HL_STATUS_FAILED"),
        ("task_sum", "HL_STATUS_OK"),
        ("task_segv", "HL_STATUS_WORKER"),
        ("task_spin", "HL_STATUS_CANCELLED"),
        ("task_stale", "HL_STATUS_INVALID_HANDLE"),
    ] {
        assert_eq!(run.value(key), Some(status), "{key}\n{d}");
    }
    assert_eq!(run.number("unload_stragglers"), 0, "{d}");
    assert_eq!(run.number("sink_off_main"), 0, "{d}");
    assert_eq!(run.number("down_reports"), 0, "{d}");
    assert_eq!(
        run.number("task_finalized"),
        3,
        "each task's user data finalized once\n{d}"
    );
    assert_eq!(
        run.value("fds_leaked"),
        Some("0"),
        "sockets, pidfds and pipes of both workers closed\n{d}"
    );
}

#[test]
fn a_c_host_with_default_sigpipe_survives_its_isolated_plugins_crash() {
    let dir = test_dir!("isolation-host-native");
    let exe = build_host(&dir, &[]);
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_isolation_host_behaviour(&run_program(&exe, &args, &[]));
}

#[test]
fn the_isolation_host_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let dir = test_dir!("isolation-host-asan");
    let exe = build_host(&dir, SANITIZER_FLAGS);
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_sanitized(&exe, &args);
    assert_isolation_host_behaviour(&run);
}

#[test]
fn the_isolation_host_is_clean_under_valgrind() {
    let dir = test_dir!("isolation-host-valgrind");
    let exe = build_host(&dir, &["-g"]);
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(run) = run_valgrind(&exe, &args) else {
        return;
    };
    assert_isolation_host_behaviour(&run);
}
