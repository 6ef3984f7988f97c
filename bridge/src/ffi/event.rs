//! `hostloop/event.h`: posting host events and subscribing to them from C.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void, CString};

use super::common::*;
use super::guard::{arg, arg_mut, bytes, guard, utf8, Failure, FfiResult, UserData};
use super::runtime::{hl_runtime_t, live, RuntimeState};

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

pub const HL_EVENT_FRAME_CHANGED: u32 = 1;
pub const HL_EVENT_SELECTION_CHANGED: u32 = 2;
pub const HL_EVENT_SCENE_OPENED: u32 = 3;
pub const HL_EVENT_SCENE_SAVED: u32 = 4;
pub const HL_EVENT_PLAYBACK_STARTED: u32 = 5;
pub const HL_EVENT_PLAYBACK_STOPPED: u32 = 6;
pub const HL_EVENT_SHUTDOWN_REQUESTED: u32 = 7;
pub const HL_EVENT_CUSTOM: u32 = 8;

pub type hl_event_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const hl_event_t)>;

fn kind_filter(kind: u32) -> FfiResult<sdk::EventFilter> {
    use sdk::EventKind::*;
    let k = match kind {
        0 => return Ok(sdk::EventFilter::All),
        HL_EVENT_FRAME_CHANGED => FrameChanged,
        HL_EVENT_SELECTION_CHANGED => SelectionChanged,
        HL_EVENT_SCENE_OPENED => SceneOpened,
        HL_EVENT_SCENE_SAVED => SceneSaved,
        HL_EVENT_PLAYBACK_STARTED => PlaybackStarted,
        HL_EVENT_PLAYBACK_STOPPED => PlaybackStopped,
        HL_EVENT_SHUTDOWN_REQUESTED => ShutdownRequested,
        HL_EVENT_CUSTOM => Custom,
        other => {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                format!("unknown event kind {other}"),
            ))
        }
    };
    Ok(sdk::EventFilter::Kind(k))
}

/// Converts a C event to the runtime's.
///
/// # Safety
///
/// The event's pointers are valid as `hostloop/event.h` describes for its kind.
unsafe fn to_event(e: &hl_event_t) -> FfiResult<sdk::Event> {
    let ours = std::mem::size_of::<hl_event_t>();
    if (e.struct_size as usize) < ours {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!("event->struct_size is {}, expected {ours}", e.struct_size),
        ));
    }
    // SAFETY: the pointers a kind needs are valid per this function's contract.
    let path = || unsafe { utf8(e.path, "event->path") }.map(str::to_owned);
    Ok(match e.kind {
        HL_EVENT_FRAME_CHANGED => sdk::Event::FrameChanged { frame: e.frame },
        HL_EVENT_SELECTION_CHANGED => sdk::Event::SelectionChanged,
        HL_EVENT_SCENE_OPENED => sdk::Event::SceneOpened { path: path()? },
        HL_EVENT_SCENE_SAVED => sdk::Event::SceneSaved { path: path()? },
        HL_EVENT_PLAYBACK_STARTED => sdk::Event::PlaybackStarted,
        HL_EVENT_PLAYBACK_STOPPED => sdk::Event::PlaybackStopped,
        HL_EVENT_SHUTDOWN_REQUESTED => sdk::Event::ShutdownRequested,
        HL_EVENT_CUSTOM => {
            // SAFETY: as above, for the custom kind's topic and bytes.
            let (topic, data) = unsafe {
                (
                    utf8(e.topic, "event->topic")?,
                    bytes(e.bytes.cast(), e.bytes_len, "event->bytes")?,
                )
            };
            sdk::Event::Custom {
                topic: topic.to_owned(),
                bytes: data.to_vec(),
                coalesce: e.coalesce != 0,
            }
        }
        other => {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                format!("unknown event kind {other}"),
            ))
        }
    })
}

/// See `hl_runtime_post_event` in `hostloop/event.h`.
///
/// # Safety
///
/// `event` is NULL or valid as the header describes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_post_event(
    rt: *mut hl_runtime_t,
    event: *const hl_event_t,
) -> hl_status_t {
    guard("hl_runtime_post_event", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let event = unsafe { to_event(arg(event, "event")?) }?;
        state.rt.post_event(event)?;
        Ok(())
    })
}

/// See `hl_runtime_subscribe` in `hostloop/event.h`.
///
/// # Safety
///
/// `f`/`finalize` are NULL or valid functions for `user_data`; `subscription` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_subscribe(
    rt: *mut hl_runtime_t,
    kind: u32,
    f: hl_event_fn,
    user_data: *mut c_void,
    finalize: hl_finalizer_fn,
    subscription: *mut u64,
) -> hl_status_t {
    guard("hl_runtime_subscribe", || {
        let state = live(rt)?;
        let f = f.ok_or_else(|| Failure::new(HL_STATUS_NULL_ARG, "fn is NULL"))?;
        let filter = kind_filter(kind)?;
        let ud = UserData::new(user_data, finalize);
        let sub = state.rt.subscribe(filter, move |e, _main| {
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
            // Owned C strings for the duration of the call.
            let mut keep: Option<CString> = None;
            match e {
                sdk::Event::FrameChanged { frame } => c.frame = *frame,
                sdk::Event::SceneOpened { path } | sdk::Event::SceneSaved { path } => {
                    let s = keep.insert(CString::new(path.replace('\0', "")).unwrap_or_default());
                    c.path = s.as_ptr();
                }
                sdk::Event::Custom {
                    topic,
                    bytes,
                    coalesce,
                } => {
                    let s = keep.insert(CString::new(topic.replace('\0', "")).unwrap_or_default());
                    c.topic = s.as_ptr();
                    if !bytes.is_empty() {
                        c.bytes = bytes.as_ptr().cast();
                        c.bytes_len = bytes.len();
                    }
                    c.coalesce = u32::from(*coalesce);
                }
                _ => {}
            }
            // SAFETY: registered by the host with this user_data; `c` and its strings live
            // until the call returns.
            unsafe { f(ud.ptr(), &c) };
            drop(keep);
        });
        let id = sub.id();
        state
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, sub);
        if !subscription.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            *unsafe { arg_mut(subscription, "subscription") }? = id;
        }
        Ok(())
    })
}

/// See `hl_runtime_unsubscribe` in `hostloop/event.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_runtime_unsubscribe(rt: *mut hl_runtime_t, subscription: u64) -> hl_status_t {
    guard("hl_runtime_unsubscribe", || {
        let state = live(rt)?;
        let sub = state
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&subscription)
            .ok_or_else(|| {
                Failure::new(
                    HL_STATUS_INVALID_ARG,
                    format!("no subscription {subscription}"),
                )
            })?;
        state.rt.unsubscribe(sub);
        Ok(())
    })
}

/// Ends every C subscription of a runtime being freed (finalizing their user data).
pub(crate) fn drop_subscriptions(state: &RuntimeState) {
    let subs = std::mem::take(
        &mut *state
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for (_, sub) in subs {
        state.rt.unsubscribe(sub);
    }
}
