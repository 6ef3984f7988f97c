//! `hostloop/common.h`: status codes, versions, `hl_last_error`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// `hl_status_t`.
pub type hl_status_t = u32;
/// `hl_finalizer_fn` (NULL is `None`).
pub type hl_finalizer_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

pub const HL_VERSION_MAJOR: u32 = 0;
pub const HL_VERSION_MINOR: u32 = 1;
pub const HL_VERSION_PATCH: u32 = 0;
pub const HL_ABI_VERSION: u32 = 1;

pub const HL_STATUS_OK: hl_status_t = 0;
pub const HL_STATUS_NULL_ARG: hl_status_t = 1;
pub const HL_STATUS_INVALID_ARG: hl_status_t = 2;
pub const HL_STATUS_WRONG_THREAD: hl_status_t = 3;
pub const HL_STATUS_REENTRANT: hl_status_t = 4;
pub const HL_STATUS_HOST_BUSY: hl_status_t = 5;
pub const HL_STATUS_SHUT_DOWN: hl_status_t = 6;
pub const HL_STATUS_VERSION_MISMATCH: hl_status_t = 7;
pub const HL_STATUS_PANIC: hl_status_t = 8;
pub const HL_STATUS_INVALID_HANDLE: hl_status_t = 9;
pub const HL_STATUS_CANCELLED: hl_status_t = 10;
pub const HL_STATUS_TIMEOUT: hl_status_t = 11;
pub const HL_STATUS_FAILED: hl_status_t = 12;
pub const HL_STATUS_PENDING: hl_status_t = 13;
pub const HL_STATUS_INVALID_UTF8: hl_status_t = 14;
pub const HL_STATUS_OS: hl_status_t = 15;

const STATUS_NAMES: [&std::ffi::CStr; 16] = [
    c"HL_STATUS_OK",
    c"HL_STATUS_NULL_ARG",
    c"HL_STATUS_INVALID_ARG",
    c"HL_STATUS_WRONG_THREAD",
    c"HL_STATUS_REENTRANT",
    c"HL_STATUS_HOST_BUSY",
    c"HL_STATUS_SHUT_DOWN",
    c"HL_STATUS_VERSION_MISMATCH",
    c"HL_STATUS_PANIC",
    c"HL_STATUS_INVALID_HANDLE",
    c"HL_STATUS_CANCELLED",
    c"HL_STATUS_TIMEOUT",
    c"HL_STATUS_FAILED",
    c"HL_STATUS_PENDING",
    c"HL_STATUS_INVALID_UTF8",
    c"HL_STATUS_OS",
];

/// See `hl_last_error` in `hostloop/common.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_last_error() -> *const c_char {
    super::guard::last_error_ptr()
}

/// See `hl_status_name` in `hostloop/common.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_status_name(status: hl_status_t) -> *const c_char {
    STATUS_NAMES
        .get(status as usize)
        .copied()
        .unwrap_or(c"HL_STATUS_UNKNOWN")
        .as_ptr()
}

/// See `hl_version` in `hostloop/common.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_version() -> u32 {
    (HL_VERSION_MAJOR << 16) | (HL_VERSION_MINOR << 8) | HL_VERSION_PATCH
}

/// See `hl_abi_version` in `hostloop/common.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_abi_version() -> u32 {
    HL_ABI_VERSION
}
