//! C++17 programs: one on the plain C header (`tests/cpp/host.cpp`) and, on `hostloop.hpp`, a
//! host (`tests/cpp/host_hpp.cpp`) and two translation units that both include it twice
//! (`tests/cpp/tu_a.cpp`, `tests/cpp/tu_b.cpp`).

use hostloop_tests::{cpp_dir, include_dir, run_program, test_dir, Build, Lang, SANITIZER_FLAGS};

#[test]
fn a_cxx17_host_on_the_c_header_runs_jobs_and_pumps() {
    let dir = test_dir!("cpp-host");
    let exe = Build::new(Lang::Cxx)
        .source(cpp_dir().join("host.cpp"))
        .compile(dir.join("host"));
    let run = run_program(&exe, &[], &[]);
    run.assert_success("host.cpp");
    assert!(run.has_line("cpp host: OK"), "{}", run.describe());
    assert_eq!(run.number("results"), 8, "{}", run.describe());
    assert_eq!(run.number("sink_messages"), 1, "{}", run.describe());
    assert_eq!(
        run.number("finalized"),
        9,
        "8 jobs and the sink\n{}",
        run.describe()
    );
}

#[test]
fn hostloop_hpp_compiles_alone_and_twice_as_cxx17_with_warnings_as_errors() {
    let dir = test_dir!("cpp-hpp-standalone");
    let hpp = include_dir().join("hostloop.hpp");
    for (times, name) in [(1, "once"), (2, "twice")] {
        let src = dir.write(
            &format!("{name}.cpp"),
            &format!("#include \"{}\"\n", hpp.display()).repeat(times),
        );
        Build::new(Lang::Cxx)
            .source(&src)
            .object_only()
            .compile(dir.join(format!("{name}.o")));
    }
}

fn build_hpp_host(
    name: &str,
    extra_flags: &[&str],
) -> (hostloop_tests::TestDir, std::path::PathBuf) {
    let dir = test_dir!(name);
    let exe = Build::new(Lang::Cxx)
        .flags(extra_flags)
        .source(cpp_dir().join("host_hpp.cpp"))
        .compile(dir.join("host_hpp"));
    (dir, exe)
}

fn assert_hpp_host(run: &hostloop_tests::Run) {
    run.assert_success("host_hpp.cpp");
    let d = run.describe();
    assert!(run.has_line("hpp host: OK"), "{d}");
    assert_eq!(run.number("results"), 10, "{d}");
    assert_eq!(run.number("failed_with_exception"), 1, "{d}");
    assert_eq!(run.number("arrays"), 10, "{d}");
    assert_eq!(run.number("events"), 1, "{d}");
    assert_eq!(
        run.number("swallowed"),
        2,
        "the sink's and the job's exceptions\n{d}"
    );
    assert_eq!(run.number("reentrant_errors"), 1, "{d}");
    assert_eq!(
        run.number("live_captures"),
        0,
        "every boxed callable destroyed\n{d}"
    );
    assert_eq!(run.number("timed_out"), 0, "{d}");
}

#[test]
fn a_cxx17_host_on_hostloop_hpp_runs_jobs_swallows_callback_exceptions_and_frees_everything() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-host", &[]);
    assert_hpp_host(&run_program(&exe, &[], &[]));
}

#[test]
fn the_hostloop_hpp_host_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-host-asan", SANITIZER_FLAGS);
    let run = run_program(
        &exe,
        &[],
        &[
            ("ASAN_OPTIONS", "detect_leaks=1"),
            ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
        ],
    );
    assert!(
        !run.stderr.contains("Sanitizer") && !run.stderr.contains("runtime error:"),
        "sanitizer report:\n{}",
        run.describe()
    );
    assert_hpp_host(&run);
}

/// hostloop.hpp: an `Error` with `HL_STATUS_CANCELLED` escaping `run` (what `JobContext::check()`
/// throws) "ends the job quietly as cancelled"; its trampoline returns `HL_STATUS_CANCELLED` as
/// the code, which the bridge turns into FAILED (see bad_input's
/// a_job_cancelled_while_running_is_cancelled_whatever_run_returned).
#[test]
fn a_hpp_job_stopped_by_check_ends_cancelled() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-cancel", &[]);
    let run = run_program(&exe, &["cancel"], &[]);
    run.assert_success("host_hpp.cpp cancel");
    assert_eq!(
        run.value("done_status"),
        Some("HL_STATUS_CANCELLED"),
        "{}",
        run.describe()
    );
}

#[test]
fn two_translation_units_including_hostloop_hpp_twice_link_into_one_program() {
    let dir = test_dir!("cpp-two-tus");
    let exe = Build::new(Lang::Cxx)
        .source(cpp_dir().join("tu_a.cpp"))
        .source(cpp_dir().join("tu_b.cpp"))
        .compile(dir.join("two_tus"));
    let run = run_program(&exe, &[], &[]);
    run.assert_success("tu_a.cpp + tu_b.cpp");
    assert_eq!(run.value("two_tus"), Some("OK"), "{}", run.describe());
}
