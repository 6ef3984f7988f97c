//! `libhostloop`: the C ABI of hostloop, declared by `include/hostloop.h`.
//!
//! This crate is the only one that speaks C. It builds `libhostloop` as a shared and a static
//! library; host integrators use it through the headers in `include/` (and `hostloop.hpp` for
//! C++). Every export goes through one boundary guard (`ffi::guard`): panics are caught and
//! returned as `HL_STATUS_PANIC`, NULL pointers and stale handles are statuses, and the message
//! of the last failure is kept per thread for `hl_last_error`.
//!
//! The Rust types here mirror the header's structs (`#[repr(C)]`, same names); the tests in
//! `tests/` prove the header and this library agree.

#![expect(
    non_camel_case_types,
    reason = "the C ABI's types keep the header's names (`hl_runtime_t`, `hl_status_t`, ...)"
)]

pub mod ffi;

/// The Rust SDK this library wraps, for Rust code that shares a runtime with C callers.
pub use sdk;
