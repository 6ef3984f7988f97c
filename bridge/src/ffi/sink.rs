//! `hostloop/sink.h`: the host sink and emitting to it.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

use super::common::*;
use super::guard::{arg, bytes, guard, utf8, Failure, FfiResult, UserData};
use super::runtime::{hl_runtime_t, live};

pub const HL_PAYLOAD_BYTES: u32 = 1;
pub const HL_PAYLOAD_ARRAY: u32 = 2;
pub const HL_ELEM_U8: u32 = 1;
pub const HL_ELEM_I32: u32 = 2;
pub const HL_ELEM_U32: u32 = 3;
pub const HL_ELEM_I64: u32 = 4;
pub const HL_ELEM_U64: u32 = 5;
pub const HL_ELEM_F32: u32 = 6;
pub const HL_ELEM_F64: u32 = 7;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_array_view_t {
    pub elem_type: u32,
    pub components: u32,
    pub count: u64,
    pub stride: u64,
    pub data: *const c_void,
    pub byte_len: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_message_t {
    pub struct_size: u32,
    pub payload_kind: u32,
    pub topic: *const c_char,
    pub topic_len: usize,
    pub bytes: *const u8,
    pub bytes_len: usize,
    pub array: hl_array_view_t,
}

pub type hl_sink_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, message: *const hl_message_t)>;

fn elem_type(code: u32) -> FfiResult<sdk::ElemType> {
    use sdk::ElemType::*;
    Ok(match code {
        HL_ELEM_U8 => U8,
        HL_ELEM_I32 => I32,
        HL_ELEM_U32 => U32,
        HL_ELEM_I64 => I64,
        HL_ELEM_U64 => U64,
        HL_ELEM_F32 => F32,
        HL_ELEM_F64 => F64,
        other => {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                format!("unknown element type {other}"),
            ))
        }
    })
}

/// Validates a C array view against its own byte length.
///
/// # Safety
///
/// `view.data` points to `view.byte_len` readable bytes (or is NULL with `count == 0`).
unsafe fn array_view<'a>(view: &hl_array_view_t) -> FfiResult<sdk::ArrayView<'a>> {
    let elem = elem_type(view.elem_type)?;
    let len = usize::try_from(view.byte_len)
        .map_err(|_| Failure::new(HL_STATUS_INVALID_ARG, "byte_len does not fit in memory"))?;
    let len = if view.count == 0 { 0 } else { len };
    // SAFETY: per this function's contract.
    let data = unsafe { bytes(view.data.cast(), len, "view->data") }?;
    let count = usize::try_from(view.count)
        .map_err(|_| Failure::new(HL_STATUS_INVALID_ARG, "count does not fit in memory"))?;
    let stride = usize::try_from(view.stride)
        .map_err(|_| Failure::new(HL_STATUS_INVALID_ARG, "stride does not fit in memory"))?;
    Ok(sdk::ArrayView::strided(
        elem,
        view.components as usize,
        count,
        stride,
        data,
    )?)
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
        if !state.rt.is_main_thread() {
            return Err(Failure::new(
                HL_STATUS_WRONG_THREAD,
                "[main-thread] function called from another thread",
            ));
        }
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
                topic_buf.clear();
                topic_buf.extend_from_slice(m.topic.as_bytes());
                topic_buf.push(0);
                let mut msg = hl_message_t {
                    struct_size: std::mem::size_of::<hl_message_t>() as u32,
                    payload_kind: HL_PAYLOAD_BYTES,
                    topic: topic_buf.as_ptr().cast(),
                    topic_len: m.topic.len(),
                    bytes: std::ptr::null(),
                    bytes_len: 0,
                    array: hl_array_view_t {
                        elem_type: 0,
                        components: 0,
                        count: 0,
                        stride: 0,
                        data: std::ptr::null(),
                        byte_len: 0,
                    },
                };
                match m.payload {
                    sdk::Payload::Bytes(b) => {
                        if !b.is_empty() {
                            msg.bytes = b.as_ptr();
                            msg.bytes_len = b.len();
                        }
                    }
                    sdk::Payload::Array(a) => {
                        msg.payload_kind = HL_PAYLOAD_ARRAY;
                        msg.array = hl_array_view_t {
                            elem_type: a.elem() as u32,
                            components: a.components() as u32,
                            count: a.count() as u64,
                            stride: a.stride() as u64,
                            data: a.bytes().as_ptr().cast(),
                            byte_len: a.bytes().len() as u64,
                        };
                    }
                }
                // SAFETY: the host registered `f` with this user_data; `msg` and what it points to
                // live until `f` returns, as the header promises.
                unsafe { f(ud.ptr(), &msg) };
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
        let data = unsafe { bytes(data.cast(), len, "bytes") }?;
        state
            .rt
            .emit(topic, sdk::OwnedPayload::Bytes(data.to_vec()))?;
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
        let mut packed = Vec::with_capacity(record * view.count());
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
