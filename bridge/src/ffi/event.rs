//! `hostloop/event.h`: posting host events and subscribing to them from C.

use std::ffi::c_void;

use super::common::*;
use super::guard::{arg, arg_mut, guard, Failure, FfiResult, UserData};
use super::runtime::{hl_runtime_t, live, RuntimeState};

pub use sdk::abi::{
    hl_event_t, HL_EVENT_CUSTOM, HL_EVENT_FRAME_CHANGED, HL_EVENT_PLAYBACK_STARTED,
    HL_EVENT_PLAYBACK_STOPPED, HL_EVENT_SCENE_OPENED, HL_EVENT_SCENE_SAVED,
    HL_EVENT_SELECTION_CHANGED, HL_EVENT_SHUTDOWN_REQUESTED,
};

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
    // SAFETY: per this function's contract.
    Ok(unsafe { sdk::abi::event_from_c(e) }?)
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
            sdk::abi::with_c_event(e, |c| {
                // SAFETY: registered by the host with this user_data; `c` and its strings live
                // until the call returns.
                unsafe { f(ud.ptr(), c) }
            });
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
