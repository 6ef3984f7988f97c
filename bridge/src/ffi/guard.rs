//! The one boundary guard every export goes through: panics caught, NULLs checked, statuses
//! returned, the error message kept per thread for `hl_last_error`.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

use super::common::*;

/// Why a call failed: its status and a message for `hl_last_error`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: hl_status_t,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: hl_status_t, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<sdk::Error> for Failure {
    fn from(err: sdk::Error) -> Self {
        Failure::new(sdk::abi::status_of(&err), err.to_string())
    }
}

impl From<sdk::abi::AbiError> for Failure {
    fn from(err: sdk::abi::AbiError) -> Self {
        Failure::new(err.status, err.message)
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs would cut the message short; replace them rather than lose it.
    let clean = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = clean);
}

/// Empties the message, without allocating when it is empty already (the common case: most
/// calls succeed, and some — `hl_job_ctx_check` — sit in a job's inner loop).
fn clear_last_error() {
    LAST_ERROR.with(|e| {
        if !e.borrow().as_bytes().is_empty() {
            *e.borrow_mut() = CString::default();
        }
    });
}

/// Runs an export's body: `Ok` → `HL_STATUS_OK` (and clears the message), `Err` → its status
/// with the message kept, a panic → `HL_STATUS_PANIC` with the panic's message (and nothing
/// on the host's stderr: see the sdk's `internal/panic.rs`).
pub(crate) fn guard(name: &str, body: impl FnOnce() -> FfiResult) -> hl_status_t {
    match sdk::abi::catch_panic(body) {
        Ok(Ok(())) => {
            clear_last_error();
            HL_STATUS_OK
        }
        Ok(Err(failure)) => {
            set_last_error(&format!("{name}: {}", failure.message));
            failure.status
        }
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_owned()
            };
            set_last_error(&format!("{name}: panicked: {msg}"));
            HL_STATUS_PANIC
        }
    }
}

/// The message for `hl_last_error`: a pointer into this thread's buffer.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// `HL_STATUS_WRONG_THREAD` unless the caller is on `rt`'s main thread: the check every
/// `[main-thread]` function of the header starts with.
pub(crate) fn on_main_thread(rt: &sdk::Handle) -> FfiResult {
    if rt.is_main_thread() {
        Ok(())
    } else {
        Err(Failure::new(
            HL_STATUS_WRONG_THREAD,
            "[main-thread] function called from another thread",
        ))
    }
}

/// `ptr` as a reference, or NULL_ARG naming the parameter.
///
/// # Safety
///
/// A non-NULL `ptr` must point to a valid `T` for the duration of the call.
pub(crate) unsafe fn arg<'a, T>(ptr: *const T, name: &str) -> FfiResult<&'a T> {
    // SAFETY: the caller guarantees a non-NULL `ptr` is valid; NULL is turned into an error.
    unsafe { ptr.as_ref() }
        .ok_or_else(|| Failure::new(HL_STATUS_NULL_ARG, format!("{name} is NULL")))
}

/// `ptr` as a mutable reference, or NULL_ARG naming the parameter.
///
/// # Safety
///
/// A non-NULL `ptr` must point to a valid, exclusively accessible `T` during the call.
pub(crate) unsafe fn arg_mut<'a, T>(ptr: *mut T, name: &str) -> FfiResult<&'a mut T> {
    // SAFETY: as for `arg`, plus exclusivity, which the caller guarantees.
    unsafe { ptr.as_mut() }
        .ok_or_else(|| Failure::new(HL_STATUS_NULL_ARG, format!("{name} is NULL")))
}

/// A NUL-terminated C string as UTF-8: NULL_ARG or INVALID_UTF8 naming the parameter.
///
/// # Safety
///
/// A non-NULL `ptr` must point to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn utf8<'a>(ptr: *const c_char, name: &str) -> FfiResult<&'a str> {
    // SAFETY: per this function's contract.
    Ok(unsafe { sdk::abi::utf8(ptr, name) }?)
}

/// A copy of the `len` bytes at `ptr` (NULL allowed only with `len == 0`), allocated fallibly:
/// OUT_OF_MEMORY, before any byte is read, when no copy of `len` bytes can be made.
///
/// # Safety
///
/// A non-NULL `ptr` must point to `len` readable bytes during the call.
pub(crate) unsafe fn copy_bytes(ptr: *const u8, len: usize, name: &str) -> FfiResult<Vec<u8>> {
    // SAFETY: per this function's contract.
    Ok(unsafe { sdk::abi::copy_bytes(ptr, len, name) }?)
}

/// Refuses an output struct (NULL allowed) whose `struct_size` is too small, before any work is
/// done on the caller's behalf.
///
/// # Safety
///
/// A non-NULL `out` points to a struct whose first field is a `u32 struct_size`.
pub(crate) unsafe fn check_size<T>(out: *const T, name: &str) -> FfiResult {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: per this function's contract.
    let declared = unsafe { *(out as *const u32) } as usize;
    let ours = std::mem::size_of::<T>();
    if declared < ours {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!("{name}->struct_size is {declared}, at least {ours} is required"),
        ));
    }
    Ok(())
}

/// Writes `value` to the caller's struct whose first field is `struct_size`, copying no more
/// than the caller's size.
///
/// # Safety
///
/// `out` must point to at least `(*out).struct_size` writable bytes (the caller set that field
/// to the `sizeof` it was compiled with).
pub(crate) unsafe fn write_sized<T: Copy>(out: *mut T, value: T, name: &str) -> FfiResult {
    // SAFETY: `out` is non-NULL (checked by the caller) and starts with a u32 `struct_size`.
    unsafe { check_size(out, name) }?;
    // SAFETY: the caller's struct has at least `size_of::<T>()` bytes (checked above); `T` is
    // plain data.
    unsafe {
        out.write(value);
        *(out as *mut u32) = std::mem::size_of::<T>() as u32;
    }
    Ok(())
}

/// A `user_data` pointer with its finalizer, called exactly once when this is dropped.
pub(crate) struct UserData {
    ptr: *mut std::ffi::c_void,
    finalize: hl_finalizer_fn,
}

// SAFETY: the C contract of every callback that carries a user_data says on which threads it
// and its finalizer may run ([any-thread] callbacks require thread-safe user data); hostloop
// only moves the pointer, it never dereferences it.
unsafe impl Send for UserData {}
// SAFETY: as above: shared access only passes the pointer value to C callbacks.
unsafe impl Sync for UserData {}

impl UserData {
    pub(crate) fn new(ptr: *mut std::ffi::c_void, finalize: hl_finalizer_fn) -> Self {
        UserData { ptr, finalize }
    }

    pub(crate) fn ptr(&self) -> *mut std::ffi::c_void {
        self.ptr
    }
}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(f) = self.finalize {
            // SAFETY: the host registered `f` for exactly this pointer, to be called once.
            unsafe { f(self.ptr) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: `last_error_ptr` always points to a NUL-terminated string.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_inside_an_export_becomes_a_status_and_a_message() {
        let status = guard("hl_test", || panic!("boom {}", 42));
        assert_eq!(status, HL_STATUS_PANIC);
        assert_eq!(last_error(), "hl_test: panicked: boom 42");
    }

    #[test]
    fn success_clears_the_last_error_and_failures_name_the_function() {
        let status = guard("hl_a", || Err(Failure::new(HL_STATUS_INVALID_ARG, "bad")));
        assert_eq!(status, HL_STATUS_INVALID_ARG);
        assert_eq!(last_error(), "hl_a: bad");
        assert_eq!(guard("hl_b", || Ok(())), HL_STATUS_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn messages_with_interior_nuls_survive() {
        guard("hl_c", || Err(Failure::new(HL_STATUS_FAILED, "a\0b")));
        assert_eq!(last_error(), "hl_c: a\\0b");
    }

    #[test]
    fn null_arguments_are_statuses() {
        // SAFETY: NULL is always allowed by these helpers.
        let r = unsafe { arg::<u32>(std::ptr::null(), "x") };
        assert_eq!(r.unwrap_err().status, HL_STATUS_NULL_ARG);
        // SAFETY: as above.
        let r = unsafe { utf8(std::ptr::null(), "topic") };
        assert_eq!(r.unwrap_err().status, HL_STATUS_NULL_ARG);
        // SAFETY: a NUL-terminated buffer with invalid UTF-8.
        let r = unsafe { utf8(c"\xff\xfe".as_ptr(), "topic") };
        assert_eq!(r.unwrap_err().status, HL_STATUS_INVALID_UTF8);
    }
}
