//! `hl_runtime_new` and `hl_runtime_free` at their edges: thread counts no host should pass, a
//! free that abandons running jobs, and a runtime whose main thread is gone.

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostloop::ffi::common::*;
use hostloop::ffi::runtime::*;

/// A bound that only a hang reaches.
const HANG: Duration = Duration::from_secs(30);

fn options() -> hl_runtime_options_t {
    let mut opts = std::mem::MaybeUninit::<hl_runtime_options_t>::uninit();
    // SAFETY: `opts` is writable; init fills every field.
    let status = unsafe { hl_runtime_options_init(opts.as_mut_ptr()) };
    assert_eq!(status, HL_STATUS_OK);
    // SAFETY: initialised by the call above.
    let mut opts = unsafe { opts.assume_init() };
    opts.workers = 1;
    opts.io_threads = 1;
    opts
}

fn new_runtime(opts: &hl_runtime_options_t) -> *mut hl_runtime_t {
    let mut rt = std::ptr::null_mut();
    // SAFETY: valid options and out-pointer.
    let status = unsafe { hl_runtime_new(opts, &mut rt) };
    assert_eq!(status, HL_STATUS_OK, "{}", last_error());
    rt
}

fn last_error() -> String {
    // SAFETY: `hl_last_error` always returns a NUL-terminated string.
    unsafe { CStr::from_ptr(hl_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_bogus_worker_count_is_invalid_arg_naming_the_cap_and_starts_nothing() {
    // 0xFFFFFFFF is what a negative "all but N threads" setting becomes as a uint32_t.
    for (field, n) in [
        ("workers", u32::MAX),
        ("workers", 200_000),
        ("workers", 5_000),
        ("workers", 1_025),
        ("io_threads", u32::MAX),
    ] {
        let mut opts = options();
        match field {
            "workers" => opts.workers = n,
            _ => opts.io_threads = n,
        }
        let mut rt = std::ptr::null_mut();
        // SAFETY: valid options and out-pointer.
        let status = unsafe { hl_runtime_new(&opts, &mut rt) };
        let msg = last_error();
        assert_eq!(status, HL_STATUS_INVALID_ARG, "{field} = {n}: {msg}");
        assert!(rt.is_null(), "out is written only on success");
        assert!(
            msg.contains(field) && msg.contains("1024"),
            "the message names the field and the cap: {msg}"
        );
    }
    // The cap itself is allowed.
    let mut opts = options();
    opts.workers = 1024;
    let rt = new_runtime(&opts);
    assert_eq!(handle(rt).unwrap().workers(), 1024);
    // SAFETY: live handle, its main thread.
    assert_eq!(unsafe { hl_runtime_free(rt) }, HL_STATUS_OK);
}

#[test]
fn free_without_shutdown_returns_timeout_when_it_abandons_a_running_job() {
    let mut opts = options();
    opts.free_deadline_ms = 100;
    let rt = new_runtime(&opts);
    let h = handle(rt).expect("live runtime");
    let started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let job = {
        let (started, release) = (started.clone(), release.clone());
        h.job()
            .name("ignores-cancel")
            .spawn(move |_| {
                started.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                Ok(())
            })
            .unwrap()
    };
    let start = Instant::now();
    while !started.load(Ordering::SeqCst) {
        assert!(start.elapsed() < HANG, "the job never started");
        std::thread::yield_now();
    }
    drop(h);
    // SAFETY: live handle, its main thread.
    let status = unsafe { hl_runtime_free(rt) };
    let msg = last_error();
    release.store(true, Ordering::SeqCst);
    assert_eq!(status, HL_STATUS_TIMEOUT, "{msg}");
    assert!(msg.contains("ignores-cancel"), "names the straggler: {msg}");
    assert!(handle(rt).is_none(), "freed even so");
    // SAFETY: a freed handle is detected, not dereferenced.
    assert_eq!(unsafe { hl_runtime_free(rt) }, HL_STATUS_INVALID_HANDLE);
    drop(job);
}

#[test]
fn free_without_shutdown_is_ok_when_every_job_stopped() {
    let rt = new_runtime(&options());
    let h = handle(rt).expect("live runtime");
    let job = h
        .spawn(|ctx| {
            while !ctx.is_cancelled() {
                std::thread::yield_now();
            }
            Ok(())
        })
        .unwrap();
    drop(h);
    // SAFETY: live handle, its main thread.
    let status = unsafe { hl_runtime_free(rt) };
    assert_eq!(status, HL_STATUS_OK, "{}", last_error());
    drop(job);
}

#[test]
fn a_runtime_whose_main_thread_exited_can_be_freed_from_another_thread() {
    // The runtime is made on a thread that then ends (a host's worker that set up a tool).
    let rt = std::thread::spawn(|| new_runtime(&options()) as usize)
        .join()
        .expect("the making thread") as *mut hl_runtime_t;
    let h = handle(rt).expect("live runtime");
    assert!(h.main_thread_exited());
    // Work still runs on the workers.
    assert_eq!(h.spawn(|_| Ok(5)).unwrap().wait_timeout(HANG).unwrap(), 5);
    drop(h);
    // SAFETY: a live handle; its main thread is gone and no other thread uses it.
    let status = unsafe { hl_runtime_free(rt) };
    assert_eq!(status, HL_STATUS_OK, "{}", last_error());
    assert!(handle(rt).is_none());
}

#[test]
fn a_runtime_whose_main_thread_lives_is_still_freed_only_there() {
    let rt = new_runtime(&options());
    let other = rt as usize;
    // SAFETY: a live handle; the call is refused before it touches anything.
    let status = std::thread::spawn(move || unsafe { hl_runtime_free(other as *mut hl_runtime_t) })
        .join()
        .unwrap();
    assert_eq!(status, HL_STATUS_WRONG_THREAD);
    assert!(!handle(rt).unwrap().main_thread_exited());
    // SAFETY: live handle, its main thread.
    assert_eq!(unsafe { hl_runtime_free(rt) }, HL_STATUS_OK);
}
