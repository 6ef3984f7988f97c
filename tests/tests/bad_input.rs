//! `tests/c/bad_input.c`: misuse of the C API from C, one case per test. Each case checks the
//! documented status (and a non-empty `hl_last_error()`) of every call it makes and exits
//! non-zero if any differs.

use std::path::PathBuf;
use std::sync::OnceLock;

use hostloop_tests::{c_dir, run_program, test_dir, Build, Lang, Run, TestDir, SANITIZER_FLAGS};

/// bad_input.c, compiled once for all the tests of this file.
fn bad_input() -> &'static PathBuf {
    static EXE: OnceLock<(TestDir, PathBuf)> = OnceLock::new();
    let (_, exe) = EXE.get_or_init(|| {
        let dir = test_dir!("bad-input");
        let exe = Build::new(Lang::C)
            .source(c_dir().join("bad_input.c"))
            .compile(dir.join("bad_input"));
        (dir, exe)
    });
    exe
}

/// Runs one case and requires every check in it to have held.
#[track_caller]
fn case(name: &str) -> Run {
    let run = run_program(bad_input(), &[name], &[]);
    run.assert_success(name);
    let pass = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("PASS {name} checks=")))
        .unwrap_or_else(|| panic!("no PASS line:\n{}", run.describe()));
    assert!(
        pass.parse::<u32>().is_ok_and(|n| n > 0),
        "no checks ran:\n{}",
        run.describe()
    );
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("FAIL")),
        "{}",
        run.describe()
    );
    run
}

#[test]
fn null_pointers_are_null_arg_with_a_message_and_out_params_stay_untouched() {
    case("null_args");
}

#[test]
fn wrong_struct_sizes_and_abi_versions_are_refused() {
    case("struct_sizes");
}

/// include/hostloop/runtime.h, `hl_runtime_new`: "INVALID_ARG if ... `thread_name` is not UTF-8".
#[test]
fn a_thread_name_that_is_not_utf8_is_invalid_utf8_as_the_header_says() {
    case("thread_name_not_utf8");
}

#[test]
fn main_thread_functions_refuse_other_threads_and_any_thread_ones_work_there() {
    case("wrong_thread");
}

#[test]
fn pump_from_inside_a_sink_an_event_or_a_done_callback_is_reentrant() {
    case("reentrant_pump");
}

#[test]
fn every_call_after_shutdown_is_shut_down_except_stats_shutdown_and_free() {
    case("after_shutdown");
}

#[test]
fn freed_stale_foreign_and_made_up_handles_are_invalid_handle() {
    case("invalid_handles");
}

#[test]
fn strings_that_are_not_utf8_are_invalid_utf8() {
    case("invalid_utf8");
}

#[test]
fn array_views_that_do_not_fit_their_data_are_invalid_arg() {
    case("bad_array_views");
}

#[test]
fn unknown_kinds_priorities_lanes_and_subscriptions_are_invalid_arg() {
    case("bad_values");
}

/// include/hostloop/common.h: OUT_OF_MEMORY when there is no memory for a copy of the caller's
/// data, a length such as `SIZE_MAX` included.
#[test]
fn lengths_no_copy_can_be_made_of_are_out_of_memory_not_an_abort() {
    case("huge_lengths");
}

#[test]
fn a_job_that_never_returns_cannot_hold_shutdown_past_its_deadline() {
    let run = case("shutdown_timeout");
    let seconds: f64 = run
        .value("shutdown_seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no shutdown_seconds:\n{}", run.describe()));
    assert!(
        seconds < 2.0,
        "shutdown took {seconds} s\n{}",
        run.describe()
    );
    assert!(run.stdout.contains("spinner-7"), "{}", run.describe());
}

#[test]
fn every_status_has_its_name_and_success_clears_the_last_error() {
    case("status_names");
}

#[test]
fn a_job_cancelled_while_queued_never_runs_and_reports_cancelled() {
    case("cancel_before_start");
}

/// include/hostloop/job.h: `hl_job_status` writes the job's outcome; `done` says CANCELLED for
/// a job cancelled while it ran.
#[test]
fn a_job_cancelled_while_running_reports_the_same_status_to_done_and_hl_job_status() {
    case("cancelled_job_returning_zero");
}

/// include/hostloop/job.h, `hl_job_done_fn`: CANCELLED "the job was cancelled before or while
/// it ran".
#[test]
fn a_job_cancelled_while_running_is_cancelled_whatever_run_returned() {
    case("cancelled_job_returning_nonzero");
}

#[test]
fn a_failing_job_reports_failed_with_its_code() {
    case("failed_job");
}

#[test]
fn finalizers_run_once_on_replace_removal_and_free() {
    case("finalizers");
}

/// include/hostloop/job.h: a job's finalizer runs "after done (or after run if the job never
/// reaches done, e.g. at shutdown)"; include/hostloop.h: "called exactly once when hostloop drops
/// the callback".
#[test]
fn freeing_the_runtime_finalizes_every_job_even_while_its_handle_lives() {
    case("runtime_free_finalizes_jobs_with_live_handles");
}

/// include/hostloop/sink.h: a sink "may call [main-thread] functions except hl_runtime_pump";
/// `hl_runtime_set_sink(rt, NULL, ...)` removes and finalizes the sink.
#[test]
fn a_sink_that_removes_itself_is_gone() {
    case("sink_removes_itself");
}

/// include/hostloop/common.h: finalizers run "never while the callback is running (a callback
/// that replaces or removes itself is finalized after it returns)".
#[test]
fn callbacks_that_replace_themselves_are_finalized_after_they_return() {
    case("callbacks_replacing_themselves");
}

#[test]
fn io_lane_jobs_run_on_io_threads_and_every_priority_is_accepted() {
    case("lanes_and_priorities");
}

#[test]
fn emits_and_spawns_past_the_backlog_limit_are_refused_and_what_was_admitted_arrives() {
    case("backlog");
}

#[test]
fn the_bad_input_program_refuses_unknown_cases() {
    let run = run_program(bad_input(), &["no_such_case"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
}

/// The cases that pass today; each also runs under the sanitizers below.
const PASSING_CASES: &[&str] = &[
    "null_args",
    "struct_sizes",
    "wrong_thread",
    "reentrant_pump",
    "after_shutdown",
    "invalid_handles",
    "invalid_utf8",
    "bad_array_views",
    "bad_values",
    "huge_lengths",
    "shutdown_timeout",
    "status_names",
    "cancel_before_start",
    "failed_job",
    "finalizers",
    "sink_removes_itself",
    "callbacks_replacing_themselves",
    "lanes_and_priorities",
    "backlog",
];

#[test]
fn every_error_path_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let dir = test_dir!("bad-input-asan");
    let exe = Build::new(Lang::C)
        .flags(SANITIZER_FLAGS)
        .source(c_dir().join("bad_input.c"))
        .compile(dir.join("bad_input"));
    for name in PASSING_CASES {
        let run = run_program(
            &exe,
            &[name],
            &[
                ("ASAN_OPTIONS", "detect_leaks=1"),
                ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
            ],
        );
        run.assert_success(name);
        assert!(
            !run.stderr.contains("Sanitizer") && !run.stderr.contains("runtime error:"),
            "{name}: sanitizer report:\n{}",
            run.describe()
        );
        assert!(
            run.stdout.contains(&format!("PASS {name} ")),
            "{}",
            run.describe()
        );
    }
}
