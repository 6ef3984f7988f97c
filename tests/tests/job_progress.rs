//! `tests/c/job_progress.c`: a C job's coalesced main-thread progress callback
//! (`hl_job_desc_t::progress`), natively, under ASan/UBSan and under valgrind.

use hostloop_tests::{c_dir, run_program, test_dir, tool_available, Build, Lang, Run};
use hostloop_tests::{TestDir, SANITIZER_FLAGS};

fn build(dir: &TestDir, flags: &[&str]) -> std::path::PathBuf {
    Build::new(Lang::C)
        .flags(flags)
        .source(c_dir().join("job_progress.c"))
        .compile(dir.join("job_progress"))
}

fn assert_behaviour(run: &Run) {
    run.assert_success("job_progress.c");
    assert!(run.has_line("job_progress: OK"), "{}", run.describe());
    let calls = run.number("progress_calls");
    assert!(
        calls >= 1 && calls <= run.number("pumps"),
        "coalesced: {calls} calls for {} reports in {} pumps\n{}",
        run.number("reports"),
        run.number("pumps"),
        run.describe()
    );
    assert!(calls < run.number("reports"), "{}", run.describe());
    assert_eq!(run.value("last"), Some("1.000"), "{}", run.describe());
    assert_eq!(run.number("progress_after_done"), 0, "{}", run.describe());
    assert_eq!(run.number("short_desc_read"), 0, "{}", run.describe());
}

#[test]
fn a_c_job_reports_progress_to_the_main_thread_coalesced() {
    let dir = test_dir!("job-progress");
    let run = run_program(&build(&dir, &[]), &[], &[]);
    assert_behaviour(&run);
}

#[test]
fn the_progress_callback_is_clean_under_sanitizers() {
    let dir = test_dir!("job-progress-asan");
    let run = run_program(
        &build(&dir, SANITIZER_FLAGS),
        &[],
        &[
            ("ASAN_OPTIONS", "detect_leaks=1"),
            ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
        ],
    );
    assert!(
        !run.stderr.contains("ERROR: AddressSanitizer")
            && !run.stderr.contains("ERROR: LeakSanitizer")
            && !run.stderr.contains("runtime error:"),
        "sanitizer report:\n{}",
        run.describe()
    );
    assert_behaviour(&run);
}

#[test]
fn the_progress_callback_is_clean_under_valgrind() {
    if !tool_available("valgrind") {
        println!("SKIPPED: valgrind is not installed (scripts/test-deps installs it)");
        eprintln!("SKIPPED: valgrind is not installed (scripts/test-deps installs it)");
        return;
    }
    let dir = test_dir!("job-progress-valgrind");
    let exe = build(&dir, &["-g"]);
    let mut cmd = std::process::Command::new("valgrind");
    cmd.env_remove("LD_LIBRARY_PATH")
        .args([
            "--fair-sched=yes",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .arg(&exe);
    let run = hostloop_tests::run(&mut cmd, hostloop_tests::HANG_LIMIT);
    assert!(
        run.stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind found errors:\n{}",
        run.describe()
    );
    assert_behaviour(&run);
}
