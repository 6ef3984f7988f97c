//! Rust code running behind C calls (tools sharing a runtime made through the C API): its
//! panics never cross the boundary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::new_runtime;
use hostloop::ffi::common::*;
use hostloop::ffi::runtime::*;

fn stats(rt: *mut hl_runtime_t) -> hl_stats_t {
    let mut s = hl_stats_t {
        struct_size: std::mem::size_of::<hl_stats_t>() as u32,
        ..Default::default()
    };
    // SAFETY: valid handle and struct with its size set.
    let status = unsafe { hl_runtime_stats(rt, &mut s) };
    assert_eq!(status, HL_STATUS_OK);
    s
}

#[test]
fn panicking_rust_callbacks_behind_hl_runtime_pump_are_contained() {
    let rt = new_runtime();
    let h = handle(rt).expect("live runtime");
    let later = Arc::new(AtomicBool::new(false));
    h.post(|_| panic!("tool bug on the main thread")).unwrap();
    let job = h
        .spawn(|_| -> hostloop::sdk::Result<()> { panic!("tool bug on a worker") })
        .unwrap()
        .on_main(|r, _| assert!(r.is_err()));
    {
        let later = later.clone();
        h.post(move |_| later.store(true, Ordering::SeqCst))
            .unwrap();
    }
    let start = Instant::now();
    while !(later.load(Ordering::SeqCst) && job.is_finished() && stats(rt).queued_main == 0) {
        let mut report = hl_pump_report_t {
            struct_size: std::mem::size_of::<hl_pump_report_t>() as u32,
            ..Default::default()
        };
        // SAFETY: valid handle and report.
        let status = unsafe { hl_runtime_pump(rt, 10_000, &mut report) };
        assert_eq!(status, HL_STATUS_OK);
        assert!(start.elapsed() < Duration::from_secs(20), "hang");
        std::thread::yield_now();
    }
    let s = stats(rt);
    assert_eq!(s.main_items_panicked, 1);
    assert_eq!(s.jobs_panicked, 1);
    drop(h);
    // SAFETY: valid handle, main thread.
    let status = unsafe { hl_runtime_free(rt) };
    assert_eq!(status, HL_STATUS_OK);
    assert!(handle(rt).is_none(), "a freed runtime lends no handle");
}
