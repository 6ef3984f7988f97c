//! A payload the allocator cannot copy is refused with HL_STATUS_OUT_OF_MEMORY, before any of
//! it is read, instead of aborting the host.

mod common;

use common::new_runtime;
use hostloop::ffi::common::*;
use hostloop::ffi::event::*;
use hostloop::ffi::runtime::*;
use hostloop::ffi::sink::*;

/// Lengths no allocation can satisfy; the buffer behind them is 4 bytes, so reading past them
/// would be out of bounds: the length is checked against the allocation first.
const HUGE: [usize; 2] = [isize::MAX as usize, usize::MAX];

fn last_error() -> String {
    // SAFETY: hl_last_error never returns NULL and its string is valid until the next call.
    unsafe { std::ffi::CStr::from_ptr(hl_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn emit_of_a_payload_that_cannot_be_copied_is_out_of_memory() {
    let rt = new_runtime();
    let small = [1u8, 2, 3, 4];
    for len in HUGE {
        // SAFETY: valid handle and topic; the length is a lie the call must catch unread.
        let status = unsafe { hl_runtime_emit(rt, c"t".as_ptr(), small.as_ptr().cast(), len) };
        assert_eq!(
            status,
            HL_STATUS_OUT_OF_MEMORY,
            "len {len}: {}",
            last_error()
        );
        assert!(last_error().contains("memory"), "{}", last_error());
    }
    // SAFETY: as above, with the real length.
    let status = unsafe { hl_runtime_emit(rt, c"t".as_ptr(), small.as_ptr().cast(), 4) };
    assert_eq!(status, HL_STATUS_OK);
    // SAFETY: valid handle, main thread.
    assert_eq!(unsafe { hl_runtime_free(rt) }, HL_STATUS_OK);
}

#[test]
fn post_event_with_bytes_that_cannot_be_copied_is_out_of_memory() {
    let rt = new_runtime();
    let small = [1u8, 2, 3, 4];
    let mut event = hl_event_t {
        struct_size: std::mem::size_of::<hl_event_t>() as u32,
        kind: HL_EVENT_CUSTOM,
        frame: 0.0,
        path: std::ptr::null(),
        topic: c"t".as_ptr(),
        bytes: small.as_ptr().cast(),
        bytes_len: 0,
        coalesce: 0,
        reserved: 0,
    };
    for len in HUGE {
        event.bytes_len = len;
        // SAFETY: valid handle and event; its length is a lie the call must catch unread.
        let status = unsafe { hl_runtime_post_event(rt, &event) };
        assert_eq!(
            status,
            HL_STATUS_OUT_OF_MEMORY,
            "len {len}: {}",
            last_error()
        );
    }
    event.bytes_len = small.len();
    // SAFETY: as above, with the real length.
    assert_eq!(unsafe { hl_runtime_post_event(rt, &event) }, HL_STATUS_OK);
    // SAFETY: valid handle, main thread.
    assert_eq!(unsafe { hl_runtime_free(rt) }, HL_STATUS_OK);
}
