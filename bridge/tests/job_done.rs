//! The `done` callback of a C job: the status and code the header promises.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::new_runtime;
use hostloop::ffi::common::*;
use hostloop::ffi::job::*;
use hostloop::ffi::runtime::*;

/// What `record` was called with.
type Outcome = Mutex<Option<(hl_status_t, i32)>>;

unsafe extern "C" fn return_seven(_user_data: *mut c_void, _ctx: *mut hl_job_ctx_t) -> i32 {
    7
}

unsafe extern "C" fn record(user_data: *mut c_void, status: hl_status_t, code: i32) {
    // SAFETY: the tests pass an `Outcome` that outlives the runtime.
    let outcome = unsafe { &*user_data.cast::<Outcome>() };
    *outcome.lock().unwrap() = Some((status, code));
}

fn spawn(rt: *mut hl_runtime_t, outcome: &Outcome) -> *mut hl_job_t {
    let desc = hl_job_desc_t {
        struct_size: std::mem::size_of::<hl_job_desc_t>() as u32,
        priority: HL_PRIORITY_NORMAL,
        lane: HL_LANE_CPU,
        reserved: 0,
        name: std::ptr::null(),
        run: Some(return_seven),
        done: Some(record),
        user_data: (outcome as *const Outcome).cast_mut().cast(),
        finalize: None,
        progress: None,
    };
    let mut job = std::ptr::null_mut();
    // SAFETY: a live runtime, a valid description whose user data outlives the job.
    let status = unsafe { hl_job_spawn(rt, &desc, &mut job) };
    assert_eq!(status, HL_STATUS_OK);
    job
}

fn pump_until_done(rt: *mut hl_runtime_t, outcome: &Outcome) -> (hl_status_t, i32) {
    let start = Instant::now();
    loop {
        if let Some(o) = *outcome.lock().unwrap() {
            return o;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "done never ran");
        // SAFETY: a live handle, its main thread.
        let status = unsafe { hl_runtime_pump(rt, 1_000, std::ptr::null_mut()) };
        assert_eq!(status, HL_STATUS_OK);
        std::thread::yield_now();
    }
}

#[test]
fn a_cancelled_job_reports_code_zero_and_a_failed_one_its_own_code() {
    let rt = new_runtime();
    let h = handle(rt).expect("live runtime");
    // The only worker is held, so the job below is still queued when it is cancelled.
    let (started, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let blocker = {
        let (started, release) = (started.clone(), release.clone());
        h.spawn(move |_| {
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
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "blocker never started"
        );
        std::thread::yield_now();
    }
    let cancelled = Outcome::default();
    let job = spawn(rt, &cancelled);
    assert_eq!(hl_job_cancel(job), HL_STATUS_OK);
    release.store(true, Ordering::SeqCst);
    assert_eq!(pump_until_done(rt, &cancelled), (HL_STATUS_CANCELLED, 0));
    assert_eq!(hl_job_free(job), HL_STATUS_OK);

    let failed = Outcome::default();
    let job = spawn(rt, &failed);
    assert_eq!(pump_until_done(rt, &failed), (HL_STATUS_FAILED, 7));
    assert_eq!(hl_job_free(job), HL_STATUS_OK);
    drop((blocker, h));
    // SAFETY: a live handle, its main thread.
    assert_eq!(unsafe { hl_runtime_free(rt) }, HL_STATUS_OK);
}
