//! `hl_runtime_run_until`: batch mode through the C ABI.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;

use common::new_runtime;
use hostloop::ffi::common::*;
use hostloop::ffi::runtime::*;

fn free(rt: *mut hl_runtime_t) {
    // SAFETY: a live handle, on the thread that made it.
    let status = unsafe { hl_runtime_free(rt) };
    assert_eq!(status, HL_STATUS_OK);
}

fn report() -> hl_run_report_t {
    hl_run_report_t {
        struct_size: std::mem::size_of::<hl_run_report_t>() as u32,
        ..Default::default()
    }
}

/// The C condition: reads the flag behind `user_data`.
unsafe extern "C" fn flag_is_set(user_data: *mut c_void) -> i32 {
    // SAFETY: the tests pass a pointer to an `AtomicBool` that outlives the call.
    i32::from(unsafe { &*user_data.cast::<AtomicBool>() }.load(Ordering::SeqCst))
}

#[test]
fn run_until_pumps_until_the_condition_holds() {
    let rt = new_runtime();
    let h = handle(rt).expect("live runtime");
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    // The flag is set by a main-thread continuation: only a pump can set it.
    let _job = h
        .spawn(|_| Ok(7u32))
        .unwrap()
        .on_main(move |r, _| flag.store(r.is_ok(), Ordering::SeqCst));
    let mut r = report();
    // SAFETY: valid handle; the condition reads `done`, alive for the call; valid report.
    let status = unsafe {
        hl_runtime_run_until(
            rt,
            Some(flag_is_set),
            Arc::as_ptr(&done).cast_mut().cast(),
            2_000,
            60_000,
            &mut r,
        )
    };
    assert_eq!(status, HL_STATUS_OK);
    assert!(done.load(Ordering::SeqCst));
    assert!(
        r.pumps >= 1 && r.ran >= 1,
        "pumps {} ran {}",
        r.pumps,
        r.ran
    );
    drop(h);
    free(rt);
}

#[test]
fn run_until_without_a_condition_times_out_sleeping_on_the_doorbell() {
    let rt = new_runtime();
    let mut r = report();
    // SAFETY: valid handle and report; no condition.
    let status = unsafe { hl_runtime_run_until(rt, None, std::ptr::null_mut(), 0, 200, &mut r) };
    assert_eq!(status, HL_STATUS_TIMEOUT);
    assert!(
        r.elapsed_us >= 200_000,
        "returned early: {} us",
        r.elapsed_us
    );
    // Nothing arrived: it slept between pumps instead of spinning (a pump per 50 ms slice).
    assert!(r.pumps <= 20, "{} pumps in 200 ms: spinning", r.pumps);
    free(rt);
}

#[test]
fn run_until_off_the_main_thread_is_wrong_thread_and_bad_reports_are_refused() {
    let rt = new_runtime();
    let addr = rt as usize;
    let status = std::thread::spawn(move || {
        // SAFETY: a live handle; the call must refuse this thread without touching anything.
        unsafe {
            hl_runtime_run_until(
                addr as *mut hl_runtime_t,
                None,
                std::ptr::null_mut(),
                0,
                10,
                std::ptr::null_mut(),
            )
        }
    })
    .join()
    .unwrap();
    assert_eq!(status, HL_STATUS_WRONG_THREAD);
    let mut small = report();
    small.struct_size = 4;
    // SAFETY: valid handle; the report claims to be too small and must not be written.
    let status = unsafe { hl_runtime_run_until(rt, None, std::ptr::null_mut(), 0, 10, &mut small) };
    assert_eq!(status, HL_STATUS_INVALID_ARG);
    assert_eq!(small.pumps, 0);
    // SAFETY: NULL runtime.
    let status = unsafe {
        hl_runtime_run_until(
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut(),
            0,
            10,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, HL_STATUS_NULL_ARG);
    free(rt);
}

/// What `pump_inside_until` saw: the runtime to call, and the statuses it got.
struct Nested {
    rt: *mut hl_runtime_t,
    pump: Option<hl_status_t>,
    run_until: Option<hl_status_t>,
}

/// A condition that tries to pump and to start another run from inside `until`, once.
unsafe extern "C" fn pump_inside_until(user_data: *mut c_void) -> i32 {
    // SAFETY: the test passes a `Nested` that outlives the run and is used by nobody else.
    let nested = unsafe { &mut *user_data.cast::<Nested>() };
    if nested.pump.is_none() {
        // SAFETY: a live handle, on its main thread; NULL reports are allowed.
        nested.pump = Some(unsafe { hl_runtime_pump(nested.rt, 0, std::ptr::null_mut()) });
        // SAFETY: as above; no condition.
        nested.run_until = Some(unsafe {
            hl_runtime_run_until(
                nested.rt,
                None,
                std::ptr::null_mut(),
                0,
                1,
                std::ptr::null_mut(),
            )
        });
    }
    1
}

#[test]
fn pump_and_run_until_from_inside_until_return_reentrant() {
    let rt = new_runtime();
    let mut nested = Nested {
        rt,
        pump: None,
        run_until: None,
    };
    let mut r = report();
    // SAFETY: valid handle and report; `nested` outlives the call.
    let status = unsafe {
        hl_runtime_run_until(
            rt,
            Some(pump_inside_until),
            (&mut nested as *mut Nested).cast(),
            0,
            60_000,
            &mut r,
        )
    };
    assert_eq!(status, HL_STATUS_OK);
    assert_eq!(nested.pump, Some(HL_STATUS_REENTRANT));
    assert_eq!(nested.run_until, Some(HL_STATUS_REENTRANT));
    // SAFETY: a live handle, its main thread.
    let status = unsafe { hl_runtime_pump(rt, 0, std::ptr::null_mut()) };
    assert_eq!(status, HL_STATUS_OK, "pumping works again after the run");
    free(rt);
}
