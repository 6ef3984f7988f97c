//! What the bridge's tests share: a runtime made through the C API.

use hostloop::ffi::common::*;
use hostloop::ffi::runtime::*;

/// A runtime with one worker, made with `hl_runtime_new` on the calling (main) thread.
pub fn new_runtime() -> *mut hl_runtime_t {
    let mut opts = std::mem::MaybeUninit::<hl_runtime_options_t>::uninit();
    // SAFETY: `opts` is writable; init fills every field.
    let status = unsafe { hl_runtime_options_init(opts.as_mut_ptr()) };
    assert_eq!(status, HL_STATUS_OK);
    // SAFETY: initialised by the call above.
    let mut opts = unsafe { opts.assume_init() };
    opts.workers = 1;
    let mut rt = std::ptr::null_mut();
    // SAFETY: valid options and out-pointer.
    let status = unsafe { hl_runtime_new(&opts, &mut rt) };
    assert_eq!(status, HL_STATUS_OK);
    rt
}
