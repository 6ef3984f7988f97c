//! `hostloop/pool.h`: process pools of plugin tasks from C.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use super::common::*;
use super::guard::{arg_mut, guard, on_main_thread, utf8, Failure, UserData};
use super::handles::Registry;
use super::plugin::{hl_plugin_load_options_t, load_options};
use super::runtime::{hl_runtime_t, live};

/// The opaque pool type of the header.
#[derive(Debug)]
pub enum hl_task_pool_t {}
/// The opaque task type of the header.
#[derive(Debug)]
pub enum hl_task_t {}

/// `hl_task_done_fn` (NULL is `None`).
pub type hl_task_done_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, status: hl_status_t, bytes: *const u8, len: usize),
>;

struct PoolState {
    pool: std::sync::Mutex<Option<sdk::plugin::TaskPool>>,
    rt: sdk::Handle,
}

struct TaskState {
    task: sdk::plugin::Task,
}

static POOLS: Registry<PoolState> = Registry::new("hl_task_pool_t");
static TASKS: Registry<TaskState> = Registry::new("hl_task_t");

/// See `hl_task_pool_new` in `hostloop/pool.h`.
///
/// # Safety
///
/// `path` is NULL or NUL-terminated; `options` is NULL or from `hl_plugin_load_options_init`;
/// `pool` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_task_pool_new(
    rt: *mut hl_runtime_t,
    path: *const c_char,
    size: u32,
    options: *const hl_plugin_load_options_t,
    pool: *mut *mut hl_task_pool_t,
) -> hl_status_t {
    guard("hl_task_pool_new", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let path = unsafe { utf8(path, "path") }?;
        if pool.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, "pool is NULL"));
        }
        let opts = if options.is_null() {
            sdk::plugin::LoadOptions::new()
        } else {
            // SAFETY: non-NULL, from `hl_plugin_load_options_init` per the contract.
            unsafe { super::guard::check_size(options, "options") }?;
            // SAFETY: as above.
            unsafe { load_options(&*options) }?
        };
        on_main_thread(state.rt.handle())?;
        let p = state.rt.task_pool(path, size as usize, &opts)?;
        let handle: *mut hl_task_pool_t = POOLS.insert(PoolState {
            pool: std::sync::Mutex::new(Some(p)),
            rt: state.rt.handle().clone(),
        });
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *pool = handle };
        Ok(())
    })
}

/// See `hl_task_pool_free` in `hostloop/pool.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_task_pool_free(pool: *mut hl_task_pool_t, deadline_ms: u32) -> hl_status_t {
    guard("hl_task_pool_free", || {
        let state = POOLS.get(pool, "pool")?;
        on_main_thread(&state.rt)?;
        let state = POOLS.remove(pool, "pool")?;
        let p = state.pool.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = p {
            p.stop(Duration::from_millis(u64::from(deadline_ms)));
        }
        Ok(())
    })
}

/// See `hl_task_submit` in `hostloop/pool.h`.
///
/// # Safety
///
/// `name` is NULL or NUL-terminated; `input` is NULL or points to `len` readable bytes;
/// `task` is NULL or writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hl_task_submit(
    pool: *mut hl_task_pool_t,
    name: *const c_char,
    input: *const c_void,
    len: usize,
    done: hl_task_done_fn,
    user_data: *mut c_void,
    finalize: hl_finalizer_fn,
    task: *mut *mut hl_task_t,
) -> hl_status_t {
    guard("hl_task_submit", || {
        let state = POOLS.get(pool, "pool")?;
        // SAFETY: per this function's contract.
        let name = unsafe { utf8(name, "name") }?;
        // SAFETY: per this function's contract.
        let input = unsafe { super::guard::copy_bytes(input.cast(), len, "input") }?;
        let guard = state.pool.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.as_ref() else {
            return Err(Failure::new(HL_STATUS_SHUT_DOWN, "the pool is stopped"));
        };
        // From here on hostloop owns user_data: finalized after `done` ran (or was dropped).
        let ud = Arc::new(UserData::new(user_data, finalize));
        let t = p.submit(name, input);
        drop(guard);
        if let Some(done) = done {
            let ud = ud.clone();
            t.on_main(move |r, _main| {
                let (status, bytes): (hl_status_t, Vec<u8>) = match r {
                    Ok(b) => (HL_STATUS_OK, b),
                    Err(sdk::plugin::TaskError::Failed(why)) => {
                        (HL_STATUS_FAILED, why.into_bytes())
                    }
                    Err(sdk::plugin::TaskError::Cancelled) => (HL_STATUS_CANCELLED, Vec::new()),
                    Err(sdk::plugin::TaskError::Poisoned(why)) => {
                        (HL_STATUS_WORKER, why.into_bytes())
                    }
                    Err(_) => (HL_STATUS_SHUT_DOWN, Vec::new()),
                };
                // SAFETY: the host registered `done` for this user_data, on the main thread;
                // the bytes live for the call.
                unsafe { done(ud.ptr(), status, bytes.as_ptr(), bytes.len()) };
            });
        }
        drop(ud);
        if !task.is_null() {
            let handle = TASKS.insert(TaskState { task: t });
            // SAFETY: non-NULL and writable per the contract.
            *unsafe { arg_mut(task, "task") }? = handle;
        }
        Ok(())
    })
}

/// See `hl_task_cancel` in `hostloop/pool.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_task_cancel(task: *const hl_task_t) -> hl_status_t {
    guard("hl_task_cancel", || {
        TASKS.get(task, "task")?.task.cancel();
        Ok(())
    })
}

/// See `hl_task_progress` in `hostloop/pool.h`.
///
/// # Safety
///
/// `progress` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_task_progress(
    task: *const hl_task_t,
    progress: *mut f32,
) -> hl_status_t {
    guard("hl_task_progress", || {
        let state = TASKS.get(task, "task")?;
        // SAFETY: per this function's contract.
        *unsafe { arg_mut(progress, "progress") }? = state.task.progress();
        Ok(())
    })
}

/// See `hl_task_free` in `hostloop/pool.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_task_free(task: *mut hl_task_t) -> hl_status_t {
    guard("hl_task_free", || {
        TASKS.remove(task, "task")?;
        Ok(())
    })
}
