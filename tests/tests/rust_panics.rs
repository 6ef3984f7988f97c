//! No Rust panic crosses the C boundary: Rust tool code that panics while a C call runs it (a
//! posted main-thread item, a sink, an event subscriber, a job and its continuation, the
//! request-pump callback) is caught inside hostloop, the C call returns its normal status, and the
//! runtime lives on.
//!
//! These call the exported `hl_*` functions directly through the bridge's rlib. Rust code reaches
//! a C-made runtime through `bridge::ffi::runtime::handle`, as a plugin sharing the host's runtime
//! would. (A panic escaping an `extern "C"` function would abort this test binary, so "the test
//! ran to the end" is itself part of the assertion.)

use std::ffi::{c_void, CStr};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::ffi::common::*;
use bridge::ffi::event::{hl_event_t, hl_runtime_post_event};
use bridge::ffi::runtime::*;
use bridge::ffi::sink::hl_runtime_emit;
use bridge::sdk;

/// Only fires on failure.
const HANG_LIMIT: Duration = Duration::from_secs(60);

fn last_error() -> String {
    // SAFETY: hl_last_error always returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(hl_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn ok(status: hl_status_t) {
    assert_eq!(status, HL_STATUS_OK, "status {status}: {}", last_error());
}

fn new_runtime() -> *mut hl_runtime_t {
    let mut options = MaybeUninit::<hl_runtime_options_t>::uninit();
    // SAFETY: options points to writable memory for an hl_runtime_options_t.
    ok(unsafe { hl_runtime_options_init(options.as_mut_ptr()) });
    // SAFETY: hl_runtime_options_init filled every field.
    let mut options = unsafe { options.assume_init() };
    options.workers = 2;
    let mut rt = std::ptr::null_mut();
    // SAFETY: valid options and out-pointer.
    ok(unsafe { hl_runtime_new(&options, &mut rt) });
    rt
}

fn stats(rt: *mut hl_runtime_t) -> hl_stats_t {
    let mut s = hl_stats_t {
        struct_size: std::mem::size_of::<hl_stats_t>() as u32,
        ..Default::default()
    };
    // SAFETY: a live runtime and a stats struct with its size set.
    ok(unsafe { hl_runtime_stats(rt, &mut s) });
    s
}

/// Pumps through the C API until `done` holds; each pump must return OK.
fn pump_until(rt: *mut hl_runtime_t, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_LIMIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "nothing happened in {HANG_LIMIT:?}"
        );
        // SAFETY: a live runtime, on its main thread (this test's thread made it).
        ok(unsafe { hl_runtime_pump(rt, 0, std::ptr::null_mut()) });
        std::thread::yield_now();
    }
}

#[test]
fn panics_in_rust_code_run_by_c_calls_are_caught_and_counted() {
    let rt = new_runtime();
    let handle = handle(rt).expect("a live C runtime has a Rust handle");

    // A main-thread item that panics, followed by one that must still run in the same pump.
    let after = Arc::new(AtomicUsize::new(0));
    handle
        .post(|_| panic!("a tool bug in a main-thread item"))
        .unwrap();
    let a = after.clone();
    handle
        .post(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();

    // A Rust sink that panics, fed through hl_runtime_emit.
    handle.set_sink(Some(Box::new(|_m: &sdk::Message<'_>| {
        panic!("a tool bug in the sink")
    })));
    // SAFETY: a live runtime, a NUL-terminated topic, no bytes.
    ok(unsafe { hl_runtime_emit(rt, c"tool/topic".as_ptr(), std::ptr::null(), 0) });

    // A Rust event subscriber that panics, fed through hl_runtime_post_event.
    let _sub = handle.subscribe(sdk::EventFilter::All, |_e, _main| {
        panic!("a tool bug in an event subscriber")
    });
    let event = hl_event_t {
        struct_size: std::mem::size_of::<hl_event_t>() as u32,
        kind: sdk::EventKind::Custom as u32,
        frame: 0.0,
        path: std::ptr::null(),
        topic: c"tool/event".as_ptr(),
        bytes: std::ptr::null::<c_void>(),
        bytes_len: 0,
        coalesce: 0,
        reserved: 0,
    };
    // SAFETY: a live runtime and a valid custom event.
    ok(unsafe { hl_runtime_post_event(rt, &event) });

    // A job that panics: its continuation sees Panicked; a continuation that panics itself.
    let outcome = Arc::new(Mutex::new(None::<String>));
    let o = outcome.clone();
    handle
        .spawn(|_ctx| -> sdk::Result<u32> { panic!("a tool bug in a job") })
        .unwrap()
        .on_main(move |r, _main| {
            *o.lock().unwrap() = Some(format!("{r:?}"));
            panic!("a tool bug in a job's continuation")
        });

    pump_until(rt, || {
        outcome.lock().unwrap().is_some() && stats(rt).main_items_panicked >= 4
    });
    let s = stats(rt);
    assert_eq!(
        s.main_items_panicked, 4,
        "item, sink, subscriber, continuation"
    );
    assert_eq!(s.jobs_panicked, 1);
    assert_eq!(
        after.load(Ordering::SeqCst),
        1,
        "the pump went on after a panic"
    );
    let outcome = outcome.lock().unwrap().clone().unwrap();
    assert!(
        outcome.contains("Panicked") && outcome.contains("a tool bug in a job"),
        "the continuation got {outcome}"
    );

    // A request-pump callback that panics runs inside hl_runtime_emit (the emit rings the
    // doorbell on this thread): the emit still succeeds.
    let rang = Arc::new(AtomicUsize::new(0));
    let r = rang.clone();
    handle.set_request_pump(Some(Arc::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
        panic!("a tool bug in request_pump")
    })));
    // SAFETY: as above.
    ok(unsafe { hl_runtime_pump(rt, 0, std::ptr::null_mut()) });
    // SAFETY: as above.
    ok(unsafe { hl_runtime_emit(rt, c"tool/topic".as_ptr(), std::ptr::null(), 0) });
    assert_eq!(
        rang.load(Ordering::SeqCst),
        1,
        "the doorbell rang through the callback"
    );

    // The runtime lives on.
    handle.set_sink(None);
    handle.set_request_pump(None);
    pump_until(rt, || stats(rt).sink_dropped >= 1);
    let mut report = hl_shutdown_report_t {
        struct_size: std::mem::size_of::<hl_shutdown_report_t>() as u32,
        ..Default::default()
    };
    // SAFETY: a live runtime, on its main thread, with a sized report.
    ok(unsafe { hl_runtime_shutdown(rt, 1000, &mut report) });
    assert_eq!(report.stragglers, 0);
    drop(handle);
    // SAFETY: a live runtime, on its main thread, freed once.
    ok(unsafe { hl_runtime_free(rt) });
}
