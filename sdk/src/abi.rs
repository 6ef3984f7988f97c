//! The C ABI shared by plugins and the runtime: `#[repr(C)]` mirrors of `include/hostloop_plugin.h`
//! (and of the event and sink structs it uses), with conversions to and from the crate's types.
//!
//! Plugin authors rarely need this module: [`export_plugin!`](crate::export_plugin) and
//! [`Plugin`](crate::plugin::Plugin) speak it for them. It is public for hosts and tools that build or
//! inspect descriptors by hand. The header is the contract; tests prove the two agree.

#![expect(
    non_camel_case_types,
    reason = "the C ABI's types keep the header's names (`hl_status_t`, `hl_event_t`, ...)"
)]

use std::ffi::{c_char, c_void, CStr, CString};

use crate::event::Event;
use crate::sink::{ArrayView, ElemType, Lend, Message, Payload};

/// Runs `f`, catching a panic as [`std::panic::catch_unwind`] does but without the panic
/// hook's report on stderr (unless `HOSTLOOP_PANIC_BACKTRACE=1`; see the crate docs on
/// panics): the boundary of the bridge's C exports.
#[doc(hidden)]
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    crate::internal::panic::catch(f)
}

/// `hl_status_t`.
pub type hl_status_t = u32;

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
pub const HL_STATUS_FILE_NOT_FOUND: hl_status_t = 16;
pub const HL_STATUS_NOT_A_LIBRARY: hl_status_t = 17;
pub const HL_STATUS_NO_ENTRY_SYMBOL: hl_status_t = 18;
pub const HL_STATUS_BAD_DESCRIPTOR: hl_status_t = 19;
pub const HL_STATUS_ALREADY_LOADED: hl_status_t = 20;
pub const HL_STATUS_WORKER: hl_status_t = 21;
pub const HL_STATUS_OUT_OF_MEMORY: hl_status_t = 22;
pub const HL_STATUS_BACKLOG: hl_status_t = 23;

pub const HL_EVENT_FRAME_CHANGED: u32 = 1;
pub const HL_EVENT_SELECTION_CHANGED: u32 = 2;
pub const HL_EVENT_SCENE_OPENED: u32 = 3;
pub const HL_EVENT_SCENE_SAVED: u32 = 4;
pub const HL_EVENT_PLAYBACK_STARTED: u32 = 5;
pub const HL_EVENT_PLAYBACK_STOPPED: u32 = 6;
pub const HL_EVENT_SHUTDOWN_REQUESTED: u32 = 7;
pub const HL_EVENT_CUSTOM: u32 = 8;

pub const HL_PAYLOAD_BYTES: u32 = 1;
pub const HL_PAYLOAD_ARRAY: u32 = 2;
pub const HL_ELEM_U8: u32 = 1;
pub const HL_ELEM_I32: u32 = 2;
pub const HL_ELEM_U32: u32 = 3;
pub const HL_ELEM_I64: u32 = 4;
pub const HL_ELEM_U64: u32 = 5;
pub const HL_ELEM_F32: u32 = 6;
pub const HL_ELEM_F64: u32 = 7;

pub const HL_PLUGIN_ABI_VERSION: u32 = 1;
/// The exported symbol's name, NUL-terminated (`HL_PLUGIN_ENTRY_SYMBOL`).
pub const HL_PLUGIN_ENTRY_SYMBOL: &CStr = c"hostloop_plugin_entry";
pub const HL_PLUGIN_LANE_HIGH: u32 = 0;
pub const HL_PLUGIN_LANE_NORMAL: u32 = 1;
pub const HL_PLUGIN_LANE_LOW: u32 = 2;
pub const HL_PLUGIN_LANE_BACKGROUND: u32 = 3;
pub const HL_PLUGIN_LANE_IO: u32 = 4;
pub const HL_STEP_DONE: u32 = 0;
pub const HL_STEP_CONTINUE: u32 = 1;
pub const HL_PLUGIN_FLAG_RETAIN_IMAGE: u32 = 1;
pub const HL_ISOLATION_IN_PROCESS: u32 = 0;
pub const HL_ISOLATION_OWN_PROCESS: u32 = 1;
pub const HL_ISOLATION_SHARED_PROCESS: u32 = 2;

/// `hl_event_t` (`hostloop/event.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_event_t {
    pub struct_size: u32,
    pub kind: u32,
    pub frame: f64,
    pub path: *const c_char,
    pub topic: *const c_char,
    pub bytes: *const c_void,
    pub bytes_len: usize,
    pub coalesce: u32,
    pub reserved: u32,
}

/// `hl_array_view_t` (`hostloop/sink.h`).
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

/// `hl_message_t` (`hostloop/sink.h`).
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
    /// Added after the first layout: present when `struct_size` covers it; NULL when the
    /// payload is borrowed for the call only.
    pub lender: *const hl_lender_t,
}

/// `hl_lender_t` (`hostloop/sink.h`): keeps a message's payload alive past the sink call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_lender_t {
    pub data: *mut c_void,
    /// `[main-thread]`, only during the sink call: a token that keeps the payload's memory
    /// allocated and unwritten until `release(token)`; NULL if it cannot.
    pub retain: Option<unsafe extern "C" fn(data: *mut c_void) -> *mut c_void>,
    /// `[any-thread]`: gives a token back.
    pub release: Option<unsafe extern "C" fn(token: *mut c_void)>,
}

/// `sizeof(hl_message_t)` before `lender` was added: the smallest a message may be.
pub const HL_MESSAGE_MIN_SIZE: usize = std::mem::offset_of!(hl_message_t, lender);

/// The message's lender, if its `struct_size` covers the field and it is not NULL.
///
/// # Safety
///
/// `m` is a valid message; a non-NULL `lender` points to a valid `hl_lender_t` for the call.
pub unsafe fn lender_of(m: &hl_message_t) -> Option<hl_lender_t> {
    if (m.struct_size as usize) < std::mem::size_of::<hl_message_t>() || m.lender.is_null() {
        return None;
    }
    // SAFETY: per this function's contract.
    let l = unsafe { *m.lender };
    (l.retain.is_some() && l.release.is_some()).then_some(l)
}

/// Calls a lender's `retain`: the token, or NULL.
///
/// # Safety
///
/// `l` came from [`lender_of`] on the message of a sink call still under way.
pub unsafe fn lender_retain(l: &hl_lender_t) -> *mut c_void {
    match l.retain {
        // SAFETY: per this function's contract.
        Some(retain) => unsafe { retain(l.data) },
        None => std::ptr::null_mut(),
    }
}

/// `retain` of the lenders hostloop makes: `data` is a `*const &dyn Lend` on the emitter's
/// stack, valid during the sink call.
unsafe extern "C" fn lend_retain(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `&&dyn Lend` `with_c_message` put in the lender, and `retain` is
    // only called during the call that `with_c_message` wraps.
    let lender: &&dyn Lend = unsafe { &*data.cast::<&dyn Lend>() };
    match crate::internal::panic::catch(|| lender.lend()) {
        Ok(Some(guard)) => Box::into_raw(Box::new(guard)).cast(),
        _ => std::ptr::null_mut(),
    }
}

/// `release` of the lenders hostloop makes.
unsafe extern "C" fn lend_release(token: *mut c_void) {
    if token.is_null() {
        return;
    }
    // SAFETY: `token` came from `lend_retain` and is released once, per the ABI.
    let guard = unsafe { Box::from_raw(token.cast::<Box<dyn Send + Sync>>()) };
    let _ = crate::internal::panic::catch(move || drop(guard));
}

pub type hl_task_fn = Option<unsafe extern "C" fn(data: *mut c_void)>;
pub type hl_main_task_fn =
    Option<unsafe extern "C" fn(data: *mut c_void, budget_left_ns: u64) -> u32>;
pub type hl_drop_fn = Option<unsafe extern "C" fn(data: *mut c_void)>;
pub type hl_write_fn = Option<unsafe extern "C" fn(out: *mut c_void, bytes: *const u8, len: usize)>;

/// `hl_plugin_services_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_plugin_services_t {
    pub struct_size: u32,
    pub abi_version: u32,
    pub host: *mut c_void,
    pub spawn: Option<
        unsafe extern "C" fn(
            host: *mut c_void,
            lane: u32,
            data: *mut c_void,
            call: hl_task_fn,
            drop: hl_drop_fn,
        ) -> hl_status_t,
    >,
    pub post_main: Option<
        unsafe extern "C" fn(
            host: *mut c_void,
            data: *mut c_void,
            call: hl_main_task_fn,
            drop: hl_drop_fn,
        ) -> hl_status_t,
    >,
    pub emit: Option<
        unsafe extern "C" fn(
            host: *mut c_void,
            message: *const hl_message_t,
            delivered: *mut u32,
        ) -> hl_status_t,
    >,
    pub post_event:
        Option<unsafe extern "C" fn(host: *mut c_void, event: *const hl_event_t) -> hl_status_t>,
    pub is_main_thread: Option<unsafe extern "C" fn(host: *mut c_void) -> u32>,
    pub is_worker_thread: Option<unsafe extern "C" fn(host: *mut c_void) -> u32>,
    pub workers: Option<unsafe extern "C" fn(host: *mut c_void) -> u32>,
    pub is_closing: Option<unsafe extern "C" fn(host: *mut c_void) -> u32>,
    /// Added after the first table layout: present when `struct_size` covers it.
    pub blob: Option<
        unsafe extern "C" fn(
            host: *mut c_void,
            name: *const c_char,
            fd: *mut i32,
            len: *mut u64,
        ) -> hl_status_t,
    >,
}

/// `hl_plugin_descriptor_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_plugin_descriptor_t {
    pub struct_size: u32,
    pub abi_version: u32,
    pub flags: u32,
    pub reserved: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub load: Option<
        unsafe extern "C" fn(
            services: *const hl_plugin_services_t,
            instance: *mut *mut c_void,
            error: *mut c_char,
            error_len: usize,
        ) -> hl_status_t,
    >,
    pub unload: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    pub event: Option<unsafe extern "C" fn(instance: *mut c_void, event: *const hl_event_t)>,
    pub save_state: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            out: *mut c_void,
            write: hl_write_fn,
        ) -> hl_status_t,
    >,
    pub restore_state: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            bytes: *const u8,
            len: usize,
            error: *mut c_char,
            error_len: usize,
        ) -> hl_status_t,
    >,
    /// Added after the first descriptor layout: read only when `struct_size` covers it.
    pub checkpoint_state: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            out: *mut c_void,
            write: hl_write_fn,
        ) -> hl_status_t,
    >,
    /// Added after `checkpoint_state`: read only when `struct_size` covers it.
    pub run_task: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            name: *const c_char,
            input: *const u8,
            input_len: usize,
            ctx: *const hl_task_ctx_t,
            out: *mut c_void,
            write: hl_write_fn,
            error: *mut c_char,
            error_len: usize,
        ) -> hl_status_t,
    >,
}

/// `hl_task_ctx_t`: what a running task may ask of the pool.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_task_ctx_t {
    pub struct_size: u32,
    pub reserved: u32,
    pub ctx: *mut c_void,
    pub cancelled: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u32>,
    pub progress: Option<unsafe extern "C" fn(ctx: *mut c_void, fraction: f32)>,
}

/// The size of the first `hl_plugin_services_t` layout (up to `is_closing`): the least a host's
/// table may be.
pub const HL_PLUGIN_SERVICES_MIN_SIZE: usize = std::mem::offset_of!(hl_plugin_services_t, blob);

/// The size of the first `hl_plugin_descriptor_t` layout (up to `restore_state`): the least a
/// plugin's descriptor may be. Fields after it are optional, read only when `struct_size`
/// covers them.
pub const HL_PLUGIN_DESCRIPTOR_MIN_SIZE: usize =
    std::mem::offset_of!(hl_plugin_descriptor_t, checkpoint_state);

// SAFETY: a descriptor is immutable static data (strings and function pointers) that plugins
// export for any thread to read; the functions' own thread tags govern calling them.
unsafe impl Sync for hl_plugin_descriptor_t {}
// SAFETY: as above.
unsafe impl Send for hl_plugin_descriptor_t {}

/// `hl_plugin_entry_fn`.
pub type hl_plugin_entry_fn = Option<unsafe extern "C" fn() -> *const hl_plugin_descriptor_t>;

/// Why a C value could not be read: a status and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiError {
    /// An `HL_STATUS_*` code.
    pub status: hl_status_t,
    /// What was wrong, naming the parameter or field.
    pub message: String,
}

impl AbiError {
    /// An error with `status` and `message`.
    pub fn new(status: hl_status_t, message: impl Into<String>) -> Self {
        AbiError {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AbiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AbiError {}

/// The status for a crate error, as the C ABI reports it.
pub fn status_of(err: &crate::Error) -> hl_status_t {
    use crate::Error;
    match err {
        Error::Cancelled => HL_STATUS_CANCELLED,
        Error::Panicked(_) => HL_STATUS_PANIC,
        Error::Failed(_) => HL_STATUS_FAILED,
        Error::WrongThread => HL_STATUS_WRONG_THREAD,
        Error::Reentrant => HL_STATUS_REENTRANT,
        Error::HostBusy => HL_STATUS_HOST_BUSY,
        Error::Backlog => HL_STATUS_BACKLOG,
        Error::ShutDown => HL_STATUS_SHUT_DOWN,
        Error::Timeout => HL_STATUS_TIMEOUT,
        Error::InvalidArgument(_) => HL_STATUS_INVALID_ARG,
        Error::ResultTaken => HL_STATUS_FAILED,
    }
}

impl From<crate::Error> for AbiError {
    fn from(err: crate::Error) -> Self {
        AbiError::new(status_of(&err), err.to_string())
    }
}

/// A NUL-terminated C string as UTF-8: NULL_ARG or INVALID_UTF8 naming the parameter.
///
/// # Safety
///
/// A non-NULL `ptr` must point to a NUL-terminated string that stays valid for `'a`.
pub unsafe fn utf8<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, AbiError> {
    if ptr.is_null() {
        return Err(AbiError::new(HL_STATUS_NULL_ARG, format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map_err(|e| AbiError::new(HL_STATUS_INVALID_UTF8, format!("{name} is not UTF-8: {e}")))
}

/// `len` bytes at `ptr` (NULL allowed only with `len == 0`).
///
/// # Safety
///
/// A non-NULL `ptr` must point to `len` readable bytes for `'a`.
pub unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], AbiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(AbiError::new(
            HL_STATUS_NULL_ARG,
            format!("{name} is NULL but its length is {len}"),
        ));
    }
    if len > isize::MAX as usize {
        // No object is that large: the length is wrong, and a slice of it would be unsound.
        return Err(AbiError::new(
            HL_STATUS_INVALID_ARG,
            format!("{name} has length {len}, larger than any object can be"),
        ));
    }
    // SAFETY: `len` readable bytes at non-NULL `ptr`, per the caller's contract; `len` is at
    // most `isize::MAX`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A copy of the `len` bytes at `ptr` (NULL allowed only with `len == 0`), allocated fallibly:
/// OUT_OF_MEMORY, before any byte is read, when the allocator cannot provide `len` bytes (a
/// bogus length such as `SIZE_MAX` included), instead of aborting the host.
///
/// # Safety
///
/// A non-NULL `ptr` must point to `len` readable bytes.
pub unsafe fn copy_bytes(ptr: *const u8, len: usize, name: &str) -> Result<Vec<u8>, AbiError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(AbiError::new(
            HL_STATUS_NULL_ARG,
            format!("{name} is NULL but its length is {len}"),
        ));
    }
    let mut copy = try_vec(len, name)?;
    // SAFETY: per this function's contract; the reservation succeeded, so `len` is at most
    // `isize::MAX`.
    copy.extend_from_slice(unsafe { bytes(ptr, len, name) }?);
    Ok(copy)
}

/// An empty vector with room for `len` bytes, or OUT_OF_MEMORY naming `name`.
pub fn try_vec(len: usize, name: &str) -> Result<Vec<u8>, AbiError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| {
        AbiError::new(
            HL_STATUS_OUT_OF_MEMORY,
            format!("no memory for a copy of {name} ({len} bytes): {e}"),
        )
    })?;
    Ok(v)
}

/// The element type for an `HL_ELEM_*` code.
pub fn elem_type(code: u32) -> Result<ElemType, AbiError> {
    Ok(match code {
        HL_ELEM_U8 => ElemType::U8,
        HL_ELEM_I32 => ElemType::I32,
        HL_ELEM_U32 => ElemType::U32,
        HL_ELEM_I64 => ElemType::I64,
        HL_ELEM_U64 => ElemType::U64,
        HL_ELEM_F32 => ElemType::F32,
        HL_ELEM_F64 => ElemType::F64,
        other => {
            return Err(AbiError::new(
                HL_STATUS_INVALID_ARG,
                format!("unknown element type {other}"),
            ))
        }
    })
}

/// Reads and validates a C array view against its own byte length.
///
/// # Safety
///
/// `view.data` points to `view.byte_len` readable bytes for `'a` (or `count` is 0).
pub unsafe fn array_view_from_c<'a>(view: &hl_array_view_t) -> Result<ArrayView<'a>, AbiError> {
    let elem = elem_type(view.elem_type)?;
    let too_big = |what: &str| {
        AbiError::new(
            HL_STATUS_INVALID_ARG,
            format!("{what} does not fit in memory"),
        )
    };
    let len = usize::try_from(view.byte_len).map_err(|_| too_big("byte_len"))?;
    let len = if view.count == 0 { 0 } else { len };
    // SAFETY: per this function's contract.
    let data = unsafe { bytes(view.data.cast(), len, "view->data") }?;
    let count = usize::try_from(view.count).map_err(|_| too_big("count"))?;
    let stride = usize::try_from(view.stride).map_err(|_| too_big("stride"))?;
    Ok(ArrayView::strided(
        elem,
        view.components as usize,
        count,
        stride,
        data,
    )?)
}

/// The C view of an array (borrowing its bytes).
pub fn array_view_to_c(a: &ArrayView<'_>) -> hl_array_view_t {
    hl_array_view_t {
        elem_type: a.elem() as u32,
        components: a.components() as u32,
        count: a.count() as u64,
        stride: a.stride() as u64,
        data: a.bytes().as_ptr().cast(),
        byte_len: a.bytes().len() as u64,
    }
}

/// Reads a C message (topic and payload, borrowed).
///
/// # Safety
///
/// `m` and everything it points to are valid for `'a`, as `hostloop/sink.h` describes.
pub unsafe fn message_from_c<'a>(m: &hl_message_t) -> Result<Message<'a>, AbiError> {
    if (m.struct_size as usize) < HL_MESSAGE_MIN_SIZE {
        return Err(AbiError::new(
            HL_STATUS_INVALID_ARG,
            format!(
                "message->struct_size is {}, expected at least {HL_MESSAGE_MIN_SIZE}",
                m.struct_size
            ),
        ));
    }
    // SAFETY: per this function's contract.
    let topic = unsafe { utf8(m.topic, "message->topic") }?;
    let payload = match m.payload_kind {
        HL_PAYLOAD_BYTES => {
            // SAFETY: per this function's contract.
            Payload::Bytes(unsafe { bytes(m.bytes, m.bytes_len, "message->bytes") }?)
        }
        // SAFETY: per this function's contract.
        HL_PAYLOAD_ARRAY => Payload::Array(unsafe { array_view_from_c(&m.array) }?),
        other => {
            return Err(AbiError::new(
                HL_STATUS_INVALID_ARG,
                format!("unknown payload kind {other}"),
            ))
        }
    };
    Ok(Message::new(topic, payload))
}

/// Calls `f` with the C form of `m`. `topic_buf` holds the NUL-terminated topic (reused
/// across calls to save an allocation per message).
pub fn with_c_message<R>(
    m: &Message<'_>,
    topic_buf: &mut Vec<u8>,
    f: impl FnOnce(&hl_message_t) -> R,
) -> R {
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
        lender: std::ptr::null(),
    };
    // The lender's `data` points at `m.lender` itself, valid for the call.
    let lend: Option<&dyn Lend> = m.lender;
    let lender = lend.as_ref().map(|l| hl_lender_t {
        data: (l as *const &dyn Lend).cast_mut().cast(),
        retain: Some(lend_retain),
        release: Some(lend_release),
    });
    if let Some(l) = &lender {
        msg.lender = l;
    }
    match m.payload {
        Payload::Bytes(b) => {
            if !b.is_empty() {
                msg.bytes = b.as_ptr();
                msg.bytes_len = b.len();
            }
        }
        Payload::Array(a) => {
            msg.payload_kind = HL_PAYLOAD_ARRAY;
            msg.array = array_view_to_c(&a);
        }
    }
    f(&msg)
}

/// Reads a C event (copying its strings and bytes).
///
/// # Safety
///
/// The event's pointers are valid as `hostloop/event.h` describes for its kind.
pub unsafe fn event_from_c(e: &hl_event_t) -> Result<Event, AbiError> {
    let ours = std::mem::size_of::<hl_event_t>();
    if (e.struct_size as usize) < ours {
        return Err(AbiError::new(
            HL_STATUS_INVALID_ARG,
            format!("event->struct_size is {}, expected {ours}", e.struct_size),
        ));
    }
    // SAFETY: the pointers a kind needs are valid per this function's contract.
    let path = || unsafe { utf8(e.path, "event->path") }.map(str::to_owned);
    Ok(match e.kind {
        HL_EVENT_FRAME_CHANGED => Event::FrameChanged { frame: e.frame },
        HL_EVENT_SELECTION_CHANGED => Event::SelectionChanged,
        HL_EVENT_SCENE_OPENED => Event::SceneOpened { path: path()? },
        HL_EVENT_SCENE_SAVED => Event::SceneSaved { path: path()? },
        HL_EVENT_PLAYBACK_STARTED => Event::PlaybackStarted,
        HL_EVENT_PLAYBACK_STOPPED => Event::PlaybackStopped,
        HL_EVENT_SHUTDOWN_REQUESTED => Event::ShutdownRequested,
        HL_EVENT_CUSTOM => {
            // SAFETY: as above, for the custom kind's topic and bytes.
            let (topic, data) = unsafe {
                (
                    utf8(e.topic, "event->topic")?,
                    copy_bytes(e.bytes.cast(), e.bytes_len, "event->bytes")?,
                )
            };
            Event::Custom {
                topic: topic.to_owned(),
                bytes: data,
                coalesce: e.coalesce != 0,
            }
        }
        other => {
            return Err(AbiError::new(
                HL_STATUS_INVALID_ARG,
                format!("unknown event kind {other}"),
            ))
        }
    })
}

/// Calls `f` with the C form of `e` (its strings NUL-terminated for the call's duration;
/// interior NULs are removed).
pub fn with_c_event<R>(e: &Event, f: impl FnOnce(&hl_event_t) -> R) -> R {
    let mut c = hl_event_t {
        struct_size: std::mem::size_of::<hl_event_t>() as u32,
        kind: e.kind() as u32,
        frame: 0.0,
        path: std::ptr::null(),
        topic: std::ptr::null(),
        bytes: std::ptr::null(),
        bytes_len: 0,
        coalesce: 0,
        reserved: 0,
    };
    let c_string = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
    let mut keep: Option<CString> = None;
    match e {
        Event::FrameChanged { frame } => c.frame = *frame,
        Event::SceneOpened { path } | Event::SceneSaved { path } => {
            c.path = keep.insert(c_string(path)).as_ptr();
        }
        Event::Custom {
            topic,
            bytes,
            coalesce,
        } => {
            c.topic = keep.insert(c_string(topic)).as_ptr();
            if !bytes.is_empty() {
                c.bytes = bytes.as_ptr().cast();
                c.bytes_len = bytes.len();
            }
            c.coalesce = u32::from(*coalesce);
        }
        _ => {}
    }
    let r = f(&c);
    drop(keep);
    r
}

/// Writes `msg` NUL-terminated into a C buffer of `len` bytes, truncating on a UTF-8 boundary.
///
/// # Safety
///
/// A non-NULL `buf` points to `len` writable bytes.
pub unsafe fn write_c_error(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = msg.len().min(len - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `n + 1 <= len` bytes are writable at `buf` per the contract.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}
