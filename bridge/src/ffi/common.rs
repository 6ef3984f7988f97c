//! `hostloop/common.h`: status codes, versions, `hl_last_error`.

use std::ffi::{c_char, c_void};

/// `hl_status_t`.
pub use sdk::abi::hl_status_t;
/// `hl_finalizer_fn` (NULL is `None`).
pub type hl_finalizer_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

pub const HL_VERSION_MAJOR: u32 = 0;
pub const HL_VERSION_MINOR: u32 = 1;
pub const HL_VERSION_PATCH: u32 = 0;
pub const HL_ABI_VERSION: u32 = 1;

pub use sdk::abi::{
    HL_STATUS_ALREADY_LOADED, HL_STATUS_BACKLOG, HL_STATUS_BAD_DESCRIPTOR, HL_STATUS_CANCELLED,
    HL_STATUS_FAILED, HL_STATUS_FILE_NOT_FOUND, HL_STATUS_HOST_BUSY, HL_STATUS_INVALID_ARG,
    HL_STATUS_INVALID_HANDLE, HL_STATUS_INVALID_UTF8, HL_STATUS_NOT_A_LIBRARY,
    HL_STATUS_NO_ENTRY_SYMBOL, HL_STATUS_NULL_ARG, HL_STATUS_OK, HL_STATUS_OS,
    HL_STATUS_OUT_OF_MEMORY, HL_STATUS_PANIC, HL_STATUS_PENDING, HL_STATUS_REENTRANT,
    HL_STATUS_SHUT_DOWN, HL_STATUS_TIMEOUT, HL_STATUS_VERSION_MISMATCH, HL_STATUS_WORKER,
    HL_STATUS_WRONG_THREAD,
};

const STATUS_NAMES: [&std::ffi::CStr; 24] = [
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
    c"HL_STATUS_FILE_NOT_FOUND",
    c"HL_STATUS_NOT_A_LIBRARY",
    c"HL_STATUS_NO_ENTRY_SYMBOL",
    c"HL_STATUS_BAD_DESCRIPTOR",
    c"HL_STATUS_ALREADY_LOADED",
    c"HL_STATUS_WORKER",
    c"HL_STATUS_OUT_OF_MEMORY",
    c"HL_STATUS_BACKLOG",
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
