//! `hl_runtime_new` and `hl_runtime_free` at their edges: thread counts no host should pass.

use std::ffi::CStr;

use hostloop::ffi::common::*;
use hostloop::ffi::runtime::*;

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
