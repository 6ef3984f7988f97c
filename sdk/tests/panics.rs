//! Panics caught at hostloop's boundaries keep their message in the error but print nothing on
//! the host's stderr, even with `RUST_BACKTRACE=1`; panics outside them print as before; and
//! `HOSTLOOP_PANIC_BACKTRACE=1` brings the report back for diagnostics.
//!
//! The panic hook is process-wide, so each case runs this test executable again as a child (the
//! `child_…` test, which does nothing unless `CHILD` is set) and reads the child's stderr.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::pump_until;
use hostloop::{Error, Runtime};

const CHILD: &str = "HOSTLOOP_TEST_PANIC_CHILD";
const OPT_IN: &str = "HOSTLOOP_PANIC_BACKTRACE";
const N: usize = 300;

/// Many caught panics — in jobs, in main-thread items, in continuations and in inline
/// `call_on_main` — then one panic on a thread of the test's own, outside hostloop.
#[test]
fn child_panics_inside_and_outside_hostloop() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let rt = Runtime::builder().workers(2).io_threads(1).build().unwrap();
    // Each continuation checks that its job's panic message reached the job's error.
    let seen = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<_> = (0..N)
        .map(|i| {
            let seen = seen.clone();
            rt.spawn(move |_| -> hostloop::Result<()> { panic!("job-marker-{i}") })
                .unwrap()
                .on_main(move |r, _| {
                    if matches!(r, Err(Error::Panicked(m)) if m == format!("job-marker-{i}")) {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    panic!("continuation-marker-{i}")
                })
        })
        .collect();
    for i in 0..N {
        rt.post(move |_| panic!("main-marker-{i}")).unwrap();
    }
    let inline = rt.call_on_main(|_| -> () { panic!("call-marker") });
    assert!(matches!(inline, Err(Error::Panicked(ref m)) if m == "call-marker"));
    pump_until(rt.handle(), || {
        jobs.iter().all(|j| j.is_finished()) && rt.stats().main_items_panicked as usize >= 2 * N
    });
    assert_eq!(
        seen.load(Ordering::Relaxed),
        N,
        "every job's error keeps its message"
    );
    assert_eq!(rt.stats().jobs_panicked as usize, N);
    println!("messages-kept");
    let outside = std::thread::spawn(|| panic!("outside-marker")).join();
    assert!(outside.is_err());
    drop(rt);
}

fn run_child(opt_in: bool) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_panics_inside_and_outside_hostloop",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1")
    .env("RUST_BACKTRACE", "1")
    .env_remove(OPT_IN);
    if opt_in {
        cmd.env(OPT_IN, "1");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the test executable runs again");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    assert!(
        status.success() && stdout.contains("messages-kept"),
        "child failed: {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn caught_panics_print_nothing_even_with_rust_backtrace_set() {
    let (_, stderr) = run_child(false);
    for marker in [
        "job-marker",
        "main-marker",
        "continuation-marker",
        "call-marker",
    ] {
        assert!(
            !stderr.contains(marker),
            "a caught panic ({marker}) reached stderr:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("outside-marker"),
        "a panic outside hostloop's boundaries must still print:\n{stderr}"
    );
}

#[test]
fn hostloop_panic_backtrace_prints_caught_panics_again() {
    let (_, stderr) = run_child(true);
    for marker in ["job-marker-0", "main-marker-0", "continuation-marker-0"] {
        assert!(
            stderr.contains(marker),
            "with {OPT_IN}=1, {marker} is printed:\n{}",
            &stderr[..stderr.len().min(4000)]
        );
    }
    assert!(stderr.contains("outside-marker"));
}
