//! `hostloop/sink.h`: the host sink and emitting to it.

use std::ffi::{c_char, c_void};

use super::common::*;
use super::guard::{arg, copy_bytes, guard, on_main_thread, utf8, Failure, FfiResult, UserData};
use super::runtime::{hl_runtime_t, live};

pub use sdk::abi::{
    hl_array_view_t, hl_lender_t, hl_message_t, HL_ELEM_F32, HL_ELEM_F64, HL_ELEM_I32, HL_ELEM_I64,
    HL_ELEM_U32, HL_ELEM_U64, HL_ELEM_U8, HL_PAYLOAD_ARRAY, HL_PAYLOAD_BYTES,
};

pub type hl_sink_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, message: *const hl_message_t)>;

/// Validates a C array view against its own byte length.
///
/// # Safety
///
/// `view.data` points to `view.byte_len` readable bytes (or is NULL with `count == 0`).
unsafe fn array_view<'a>(view: &hl_array_view_t) -> FfiResult<sdk::ArrayView<'a>> {
    // SAFETY: per this function's contract.
    Ok(unsafe { sdk::abi::array_view_from_c(view) }?)
}

/// See `hl_runtime_set_sink` in `hostloop/sink.h`.
///
/// # Safety
///
/// `f` and `finalize` are NULL or valid functions; `user_data` is what they expect.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_set_sink(
    rt: *mut hl_runtime_t,
    f: hl_sink_fn,
    user_data: *mut c_void,
    finalize: hl_finalizer_fn,
) -> hl_status_t {
    guard("hl_runtime_set_sink", || {
        let state = live(rt)?;
        on_main_thread(state.rt.handle())?;
        let ud = UserData::new(user_data, finalize);
        let Some(f) = f else {
            state.rt.set_sink(None);
            drop(ud);
            return Ok(());
        };
        // The topic is handed to C NUL-terminated; this buffer is reused across messages.
        let mut topic_buf: Vec<u8> = Vec::new();
        state
            .rt
            .set_sink(Some(Box::new(move |m: &sdk::Message<'_>| {
                sdk::abi::with_c_message(m, &mut topic_buf, |msg| {
                    // SAFETY: the host registered `f` with this user_data; `msg` and what it
                    // points to live until `f` returns, as the header promises.
                    unsafe { f(ud.ptr(), msg) }
                });
            })));
        Ok(())
    })
}

/// See `hl_runtime_emit` in `hostloop/sink.h`.
///
/// # Safety
///
/// `topic` is NULL or NUL-terminated; `data` is NULL or has `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_emit(
    rt: *mut hl_runtime_t,
    topic: *const c_char,
    data: *const c_void,
    len: usize,
) -> hl_status_t {
    guard("hl_runtime_emit", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let topic = unsafe { utf8(topic, "topic") }?;
        // SAFETY: per this function's contract.
        let data = unsafe { copy_bytes(data.cast(), len, "bytes") }?;
        state.rt.emit(topic, sdk::OwnedPayload::Bytes(data))?;
        Ok(())
    })
}

/// See `hl_runtime_emit_array` in `hostloop/sink.h`.
///
/// # Safety
///
/// `topic` is NULL or NUL-terminated; `view` is NULL or valid with readable data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_emit_array(
    rt: *mut hl_runtime_t,
    topic: *const c_char,
    view: *const hl_array_view_t,
) -> hl_status_t {
    guard("hl_runtime_emit_array", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let topic = unsafe { utf8(topic, "topic") }?;
        // SAFETY: per this function's contract.
        let view = unsafe { arg(view, "view") }?;
        // SAFETY: the view's data is readable for its byte_len, per the contract.
        let view = unsafe { array_view(view) }?;
        // Pack the records: the sink sees stride == record size.
        let record = view.components() * view.elem().size();
        let mut packed = sdk::abi::try_vec(record.saturating_mul(view.count()), "view->data")?;
        for i in 0..view.count() {
            let start = i * view.stride();
            packed.extend_from_slice(&view.bytes()[start..start + record]);
        }
        state.rt.emit(
            topic,
            sdk::OwnedPayload::Array {
                elem: view.elem(),
                components: view.components(),
                bytes: packed,
            },
        )?;
        Ok(())
    })
}

/// `hl_lease_t`: a token from a message's lender and the function that gives it back.
#[derive(Debug)]
pub struct hl_lease_t {
    release: unsafe extern "C" fn(token: *mut c_void),
    token: *mut c_void,
}

/// See `hl_message_lend` in `hostloop/sink.h`.
///
/// # Safety
///
/// `message` is NULL or the message of a sink call still under way.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_message_lend(message: *const hl_message_t) -> *mut hl_lease_t {
    let mut lease = std::ptr::null_mut();
    let _ = guard("hl_message_lend", || {
        // SAFETY: per this function's contract.
        let m = unsafe { arg(message, "message") }?;
        // SAFETY: a message of a sink call under way, per the contract.
        let Some(lender) = (unsafe { sdk::abi::lender_of(m) }) else {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                "this payload is borrowed for the sink call only: copy what you need",
            ));
        };
        // SAFETY: as above.
        let token = unsafe { sdk::abi::lender_retain(&lender) };
        let release = lender.release.filter(|_| !token.is_null()).ok_or_else(|| {
            Failure::new(
                HL_STATUS_INVALID_ARG,
                "the producer cannot lend this payload now",
            )
        })?;
        lease = Box::into_raw(Box::new(hl_lease_t { release, token }));
        Ok(())
    });
    lease
}

/// See `hl_lease_release` in `hostloop/sink.h`.
///
/// # Safety
///
/// `lease` is NULL or a lease from `hl_message_lend`, not released before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_lease_release(lease: *mut hl_lease_t) {
    if lease.is_null() {
        return;
    }
    let _ = guard("hl_lease_release", || {
        // SAFETY: per this function's contract: ours, released once.
        let lease = unsafe { Box::from_raw(lease) };
        // SAFETY: a token from the lender's `retain`, given back once.
        unsafe { (lease.release)(lease.token) };
        Ok(())
    });
}
