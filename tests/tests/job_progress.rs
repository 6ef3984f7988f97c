//! `tests/c/job_progress.c`: a C job's coalesced main-thread progress callback
//! (`hl_job_desc_t::progress`), natively, under ASan/UBSan and under valgrind.

use hostloop_tests::{c_dir, run_program, run_sanitized, run_valgrind, test_dir, Build, Lang, Run};
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
    assert_behaviour(&run_sanitized(&build(&dir, SANITIZER_FLAGS), &[]));
}

#[test]
fn the_progress_callback_is_clean_under_valgrind() {
    let dir = test_dir!("job-progress-valgrind");
    if let Some(run) = run_valgrind(&build(&dir, &["-g"]), &[]) {
        assert_behaviour(&run);
    }
}
