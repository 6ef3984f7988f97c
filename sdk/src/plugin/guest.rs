//! The plugin side of the boundary: the C entry points that
//! [`export_plugin!`](crate::export_plugin) exports for a [`Plugin`]. The runtime a plugin sees
//! is a [`Proxy`](crate::backend::Proxy) over the host's services table.

use crate::internal::panic::catch;
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Plugin, PluginContext};
use crate::abi::*;
use crate::backend::{Backend, Proxy};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::internal::doorbell::Doorbell;
use crate::main_thread::Main;
use crate::shared::Shared;
use crate::snapshot::{SnapshotReader, SnapshotWriter};

/// How long a plugin's unload waits for its simulation drivers to exit.
const SIM_EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// One loaded instance of a Rust plugin, behind the descriptor's `void *instance`.
///
/// Main-thread callbacks reach `plugin` through the cell (they are never concurrent); a pool
/// task (`run_task`, any thread) reads only `shared`, which never changes after `load`. So no
/// `&mut Instance` is ever made while another thread may hold a reference to it.
struct Instance<P> {
    plugin: std::cell::UnsafeCell<Option<P>>,
    shared: Arc<Shared>,
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    crate::error::panic_message(payload.as_ref())
}

/// `load`: builds the plugin's runtime over the host's services and calls [`Plugin::load`].
pub(super) unsafe extern "C" fn load<P: Plugin>(
    services: *const hl_plugin_services_t,
    instance: *mut *mut c_void,
    error: *mut c_char,
    error_len: usize,
) -> hl_status_t {
    let fail = |status: hl_status_t, msg: &str| {
        // SAFETY: the host passes `error_len` writable bytes at `error` (or NULL).
        unsafe { write_c_error(error, error_len, msg) };
        status
    };
    if services.is_null() || instance.is_null() {
        return fail(HL_STATUS_NULL_ARG, "services or instance is NULL");
    }
    // SAFETY: non-NULL; the host's table is valid for the duration of the load.
    let proxy = match unsafe { Proxy::new(services) } {
        Ok(r) => r,
        Err(msg) => return fail(HL_STATUS_VERSION_MISMATCH, &msg),
    };
    // Built on the host's main thread (plugins are loaded there). The doorbell is never rung:
    // main-thread work goes to the host's queue.
    let shared = match Doorbell::new() {
        Ok(bell) => Arc::new(Shared::new(
            Backend::Proxy(proxy),
            bell,
            Duration::from_secs(2),
        )),
        Err(e) => return fail(HL_STATUS_OS, &e.to_string()),
    };
    let ctx = PluginContext {
        handle: Handle::from_shared(shared.clone()),
    };
    match catch(|| P::load(&ctx)) {
        Ok(Ok(plugin)) => {
            let boxed = Box::new(Instance {
                plugin: std::cell::UnsafeCell::new(Some(plugin)),
                shared,
            });
            // SAFETY: `instance` is non-NULL and writable per the ABI.
            unsafe { *instance = Box::into_raw(boxed).cast() };
            HL_STATUS_OK
        }
        Ok(Err(e)) => {
            shared.shutdown_proxy(Instant::now() + SIM_EXIT_DEADLINE);
            fail(HL_STATUS_FAILED, &e.to_string())
        }
        Err(p) => {
            shared.shutdown_proxy(Instant::now() + SIM_EXIT_DEADLINE);
            fail(HL_STATUS_PANIC, &format!("panicked: {}", panic_text(p)))
        }
    }
}

/// `unload`: [`Plugin::unload`], then drops the plugin and shuts its runtime down (its jobs see
/// cancellation, its simulations stop and their threads are joined).
pub(super) unsafe extern "C" fn unload<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: made by `load` above; the host calls `unload` once, last.
    let mut inst = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    let shared = inst.shared.clone();
    // The flag first: jobs still running see cancellation while the plugin tears down.
    let _ = catch(|| {
        if let Some(p) = inst.plugin.get_mut().as_mut() {
            p.unload();
        }
        drop(inst.plugin.get_mut().take());
    });
    let _ = catch(|| drop(inst));
    shared.shutdown_proxy(Instant::now() + SIM_EXIT_DEADLINE);
}

/// `event`: [`Plugin::event`], then the plugin's own subscribers.
pub(super) unsafe extern "C" fn event<P: Plugin>(instance: *mut c_void, event: *const hl_event_t) {
    if instance.is_null() || event.is_null() {
        return;
    }
    // SAFETY: made by `load`; `[main-thread]` callbacks are never concurrent.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    // SAFETY: `[main-thread]` callbacks are never concurrent, and nothing else touches `plugin`.
    let plugin = unsafe { &mut *inst.plugin.get() };
    // SAFETY: the host's event is valid for the call.
    let Ok(event) = (unsafe { event_from_c(&*event) }) else {
        return;
    };
    let handle = Handle::from_shared(inst.shared.clone());
    let mut main = Main::new(&handle, Instant::now());
    if let Some(p) = plugin.as_mut() {
        if catch(|| p.event(&event, &mut main)).is_err() {
            inst.shared.stats.record_main_panic();
        }
    }
    crate::event::deliver_here(&inst.shared, &event, &mut main);
}

/// `save_state`: [`Plugin::save_state`] into a snapshot of kind [`Plugin::NAME`].
pub(super) unsafe extern "C" fn save_state<P: Plugin>(
    instance: *mut c_void,
    out: *mut c_void,
    write: hl_write_fn,
) -> hl_status_t {
    // SAFETY: the caller's contract, passed on.
    unsafe { save_with::<P>(instance, out, write, P::save_state) }
}

/// `checkpoint_state`: [`Plugin::checkpoint_state`], in the same format as `save_state`.
pub(super) unsafe extern "C" fn checkpoint_state<P: Plugin>(
    instance: *mut c_void,
    out: *mut c_void,
    write: hl_write_fn,
) -> hl_status_t {
    // SAFETY: the caller's contract, passed on.
    unsafe { save_with::<P>(instance, out, write, P::checkpoint_state) }
}

unsafe fn save_with<P: Plugin>(
    instance: *mut c_void,
    out: *mut c_void,
    write: hl_write_fn,
    save: fn(&mut P, &mut SnapshotWriter) -> Result<()>,
) -> hl_status_t {
    let Some(write) = write else {
        return HL_STATUS_NULL_ARG;
    };
    if instance.is_null() {
        return HL_STATUS_NULL_ARG;
    }
    // SAFETY: made by `load`; main thread only.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    // SAFETY: `[main-thread]` callbacks are never concurrent, and nothing else touches `plugin`.
    let plugin = unsafe { &mut *inst.plugin.get() };
    let Some(p) = plugin.as_mut() else {
        return HL_STATUS_SHUT_DOWN;
    };
    let saved = catch(|| {
        let mut w = SnapshotWriter::new(P::NAME, P::STATE_VERSION);
        save(p, &mut w).map(|()| w.finish())
    });
    match saved {
        Ok(Ok(bytes)) => {
            // SAFETY: the host's writer, valid for this call.
            unsafe { write(out, bytes.as_ptr(), bytes.len()) };
            HL_STATUS_OK
        }
        Ok(Err(e)) => status_of(&e),
        Err(_) => HL_STATUS_PANIC,
    }
}

/// `run_task`: [`Plugin::task`] on a pool thread, with the plugin's runtime handle (for its
/// host's blobs) and the pool's cancel flag and progress.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn run_task<P: Plugin>(
    instance: *mut c_void,
    name: *const c_char,
    input: *const u8,
    input_len: usize,
    ctx: *const hl_task_ctx_t,
    out: *mut c_void,
    write: hl_write_fn,
    error: *mut c_char,
    error_len: usize,
) -> hl_status_t {
    let fail = |status: hl_status_t, msg: &str| {
        // SAFETY: the host passes `error_len` writable bytes at `error` (or NULL).
        unsafe { write_c_error(error, error_len, msg) };
        status
    };
    let Some(write) = write else {
        return fail(HL_STATUS_NULL_ARG, "write is NULL");
    };
    if instance.is_null() || ctx.is_null() {
        return fail(HL_STATUS_NULL_ARG, "instance or ctx is NULL");
    }
    // SAFETY: made by `load`; only `shared` is read (see `Instance`).
    let shared = unsafe { &*instance.cast::<Instance<P>>() }.shared.clone();
    // SAFETY: the host's strings and bytes live for the call.
    let (name, input) = match unsafe { (utf8(name, "name"), bytes(input, input_len, "input")) } {
        (Ok(n), Ok(i)) => (n, i),
        (Err(e), _) | (_, Err(e)) => return fail(e.status, &e.message),
    };
    let handle = Handle::from_shared(shared);
    // SAFETY: the host's context is non-NULL (checked) and lives for the call.
    let ctx = unsafe { &*ctx };
    let tc = super::TaskContext {
        handle: &handle,
        ctx,
    };
    match catch(|| P::task(&tc, name, input)) {
        Ok(Ok(bytes)) => {
            // SAFETY: the host's writer, valid for this call.
            unsafe { write(out, bytes.as_ptr(), bytes.len()) };
            HL_STATUS_OK
        }
        Ok(Err(e)) => fail(status_of(&e), &e.to_string()),
        Err(p) => fail(HL_STATUS_PANIC, &format!("panicked: {}", panic_text(p))),
    }
}

/// `restore_state`: opens the snapshot (kind [`Plugin::NAME`], version up to
/// [`Plugin::STATE_VERSION`]) and calls [`Plugin::restore_state`].
pub(super) unsafe extern "C" fn restore_state<P: Plugin>(
    instance: *mut c_void,
    bytes_ptr: *const u8,
    len: usize,
    error: *mut c_char,
    error_len: usize,
) -> hl_status_t {
    let fail = |status: hl_status_t, msg: &str| {
        // SAFETY: the host passes `error_len` writable bytes at `error` (or NULL).
        unsafe { write_c_error(error, error_len, msg) };
        status
    };
    if instance.is_null() {
        return fail(HL_STATUS_NULL_ARG, "instance is NULL");
    }
    // SAFETY: made by `load`; main thread only.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    // SAFETY: `[main-thread]` callbacks are never concurrent, and nothing else touches `plugin`.
    let plugin = unsafe { &mut *inst.plugin.get() };
    let Some(p) = plugin.as_mut() else {
        return fail(HL_STATUS_SHUT_DOWN, "the plugin is unloaded");
    };
    // SAFETY: the host's bytes are readable for the call.
    let data = match unsafe { bytes(bytes_ptr, len, "bytes") } {
        Ok(d) => d,
        Err(e) => return fail(e.status, &e.message),
    };
    let restored = catch(|| -> Result<()> {
        let mut r =
            SnapshotReader::open(data, P::NAME, 0..=P::STATE_VERSION).map_err(Error::failed)?;
        p.restore_state(&mut r)?;
        r.finish().map_err(Error::failed)
    });
    match restored {
        Ok(Ok(())) => HL_STATUS_OK,
        Ok(Err(e)) => fail(status_of(&e), &e.to_string()),
        Err(p) => fail(HL_STATUS_PANIC, &format!("panicked: {}", panic_text(p))),
    }
}
