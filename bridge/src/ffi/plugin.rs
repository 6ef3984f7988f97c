//! `hostloop/plugin.h`: loading, unloading, reloading and describing plugins from C.
//!
//! The plugin ABI types themselves (`hostloop_plugin.h`) live in the SDK
//! (`sdk::abi`), which both sides of the boundary share; this module wraps the SDK's
//! loader ([`sdk::plugin::LoadedPlugin`]) in handles.

use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use sdk::abi::{
    hl_drop_fn, hl_main_task_fn, hl_plugin_descriptor_t, hl_plugin_entry_fn, hl_plugin_services_t,
    hl_task_ctx_t, hl_task_fn, hl_write_fn, HL_ISOLATION_IN_PROCESS, HL_ISOLATION_OWN_PROCESS,
    HL_ISOLATION_SHARED_PROCESS, HL_PLUGIN_ABI_VERSION, HL_PLUGIN_FLAG_RETAIN_IMAGE,
    HL_PLUGIN_LANE_BACKGROUND, HL_PLUGIN_LANE_HIGH, HL_PLUGIN_LANE_IO, HL_PLUGIN_LANE_LOW,
    HL_PLUGIN_LANE_NORMAL, HL_STEP_CONTINUE, HL_STEP_DONE,
};

use super::common::*;
use super::guard::{arg, check_size, guard, on_main_thread, utf8, write_sized, Failure};
use super::handles::Registry;
use super::runtime::{hl_runtime_t, live, RuntimeState, RUNTIMES};

/// The opaque plugin type of the header. Values of `*mut hl_plugin_t` are registry tokens.
#[derive(Debug)]
pub enum hl_plugin_t {}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_plugin_info_t {
    pub struct_size: u32,
    pub generation: u32,
    pub flags: u32,
    pub reserved: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub path: *const c_char,
    pub pending: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_plugin_load_options_t {
    pub struct_size: u32,
    pub isolation: u32,
    pub group: *const c_char,
    pub worker_program: *const c_char,
    pub heartbeat_ms: u32,
    pub checkpoint_interval_ms: u32,
    pub restart_limit: u32,
    pub restart_backoff_ms: u32,
    pub worker_threads: u32,
    pub echo_stderr: u32,
    pub timeout_ms: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_plugin_process_t {
    pub struct_size: u32,
    pub isolation: u32,
    pub pid: u32,
    pub restarts: u32,
    pub crashes: u32,
    pub down: u32,
    pub checkpoints: u64,
    pub last_crash: *const c_char,
    pub down_reason: *const c_char,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_unload_report_t {
    pub struct_size: u32,
    pub retired: u32,
    pub dropped: u64,
    pub stragglers: u64,
    pub elapsed_us: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_plugin_stats_t {
    pub struct_size: u32,
    pub reserved: u32,
    pub loaded: u64,
    pub loads: u64,
    pub unloads: u64,
    pub reloads: u64,
    pub failed_reloads: u64,
    pub images_retired: u64,
    pub images_closed: u64,
    pub stragglers: u64,
    pub images_retained: u64,
}

/// What a plugin handle stands for.
struct PluginState {
    plugin: Mutex<Option<sdk::plugin::LoadedPlugin>>,
    /// The strings `hl_plugin_info` hands out: valid until the next reload or unload.
    info: Mutex<[CString; 3]>,
    /// The strings `hl_plugin_process` hands out (last crash, down reason): valid until its
    /// next call or the unload.
    process: Mutex<[Option<CString>; 2]>,
    /// The runtime's state, whose list of plugins holds this handle.
    runtime: Arc<RuntimeState>,
}

static PLUGINS: Registry<PluginState> = Registry::new("hl_plugin_t");

impl From<sdk::plugin::PluginError> for Failure {
    fn from(e: sdk::plugin::PluginError) -> Self {
        Failure::new(e.status(), e.to_string())
    }
}

fn info_strings(p: &sdk::plugin::LoadedPlugin) -> [CString; 3] {
    let info = p.info();
    let c = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
    [
        c(&info.name),
        c(&info.version),
        c(&info.path.to_string_lossy()),
    ]
}

fn deadline(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// See `hl_plugin_load` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `path` is NULL or NUL-terminated; `plugin` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_load(
    rt: *mut hl_runtime_t,
    path: *const c_char,
    plugin: *mut *mut hl_plugin_t,
) -> hl_status_t {
    guard("hl_plugin_load", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let path = unsafe { utf8(path, "path") }?;
        if plugin.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, "plugin is NULL"));
        }
        on_main_thread(state.rt.handle())?;
        let loaded = state.rt.load_plugin(path)?;
        // SAFETY: non-NULL and writable per the contract.
        unsafe { register(&state, loaded, plugin) };
        Ok(())
    })
}

/// Makes a handle for `loaded` and writes it to `*out`.
///
/// # Safety
///
/// `out` is non-NULL and writable.
unsafe fn register(
    state: &Arc<RuntimeState>,
    loaded: sdk::plugin::LoadedPlugin,
    out: *mut *mut hl_plugin_t,
) {
    let info = info_strings(&loaded);
    let handle: *mut hl_plugin_t = PLUGINS.insert(PluginState {
        plugin: Mutex::new(Some(loaded)),
        info: Mutex::new(info),
        process: Mutex::new([None, None]),
        runtime: state.clone(),
    });
    lock(&state.plugins).push(handle as usize);
    // SAFETY: per this function's contract.
    unsafe { *out = handle };
}

/// The defaults of `hl_plugin_load_options_t`, the same as `LoadOptions::new()`'s.
fn default_load_options() -> hl_plugin_load_options_t {
    let d = sdk::plugin::LoadOptions::new();
    let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
    hl_plugin_load_options_t {
        struct_size: std::mem::size_of::<hl_plugin_load_options_t>() as u32,
        isolation: HL_ISOLATION_IN_PROCESS,
        group: std::ptr::null(),
        worker_program: std::ptr::null(),
        heartbeat_ms: ms(d.heartbeat_deadline()),
        checkpoint_interval_ms: ms(d.checkpoint_interval()),
        restart_limit: d.restart_count_limit(),
        restart_backoff_ms: ms(d.first_restart_backoff()),
        worker_threads: 0,
        echo_stderr: 1,
        timeout_ms: ms(d.answer_timeout()),
        reserved: 0,
    }
}

/// See `hl_plugin_load_options_init` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `options` is NULL or points to a writable `hl_plugin_load_options_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_load_options_init(
    options: *mut hl_plugin_load_options_t,
) -> hl_status_t {
    guard("hl_plugin_load_options_init", || {
        if options.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, "options is NULL"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { options.write(default_load_options()) };
        Ok(())
    })
}

/// Reads C load options into the SDK's.
///
/// # Safety
///
/// `o` came from `hl_plugin_load_options_init` (its strings NULL or NUL-terminated).
pub(crate) unsafe fn load_options(
    o: &hl_plugin_load_options_t,
) -> Result<sdk::plugin::LoadOptions, Failure> {
    use sdk::plugin::{Isolation, LoadOptions};
    if o.reserved != 0 {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            "options->reserved must be 0",
        ));
    }
    let isolation = match o.isolation {
        HL_ISOLATION_IN_PROCESS => Isolation::InProcess,
        HL_ISOLATION_OWN_PROCESS => Isolation::OwnProcess,
        HL_ISOLATION_SHARED_PROCESS => {
            if o.group.is_null() {
                return Err(Failure::new(
                    HL_STATUS_INVALID_ARG,
                    "options->group is NULL: HL_ISOLATION_SHARED_PROCESS needs a group name",
                ));
            }
            // SAFETY: non-NULL, NUL-terminated per the contract.
            let group = unsafe { utf8(o.group, "options->group") }?;
            if group.is_empty() {
                return Err(Failure::new(
                    HL_STATUS_INVALID_ARG,
                    "options->group is empty: HL_ISOLATION_SHARED_PROCESS needs a group name",
                ));
            }
            Isolation::SharedProcess(group.to_owned())
        }
        other => {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                format!("options->isolation is {other}, not an HL_ISOLATION_* value"),
            ))
        }
    };
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    let mut opts = LoadOptions::new()
        .isolation(isolation)
        .heartbeat(ms(o.heartbeat_ms))
        .save_interval(ms(o.checkpoint_interval_ms))
        .restart_limit(o.restart_limit)
        .restart_backoff(ms(o.restart_backoff_ms))
        .echo_stderr(o.echo_stderr != 0)
        .timeout(ms(o.timeout_ms));
    if o.worker_threads > 0 {
        opts = opts.worker_threads(o.worker_threads as usize);
    }
    if !o.worker_program.is_null() {
        // SAFETY: non-NULL, NUL-terminated per the contract.
        let program = unsafe { utf8(o.worker_program, "options->worker_program") }?;
        opts = opts.worker_program(program);
    }
    Ok(opts)
}

/// See `hl_plugin_load_ex` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `path` is NULL or NUL-terminated; `options` is NULL or from `hl_plugin_load_options_init`;
/// `plugin` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_load_ex(
    rt: *mut hl_runtime_t,
    path: *const c_char,
    options: *const hl_plugin_load_options_t,
    plugin: *mut *mut hl_plugin_t,
) -> hl_status_t {
    guard("hl_plugin_load_ex", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let path = unsafe { utf8(path, "path") }?;
        // SAFETY: per this function's contract.
        let o = unsafe { arg(options, "options") }?;
        // SAFETY: non-NULL (checked); it starts with its `struct_size`.
        unsafe { check_size(options, "options") }?;
        if plugin.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, "plugin is NULL"));
        }
        // SAFETY: per this function's contract.
        let opts = unsafe { load_options(o) }?;
        on_main_thread(state.rt.handle())?;
        let loaded = state.rt.load_plugin_with(path, &opts)?;
        // SAFETY: non-NULL and writable per the contract.
        unsafe { register(&state, loaded, plugin) };
        Ok(())
    })
}

/// See `hl_blob_create` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `name` is NULL or NUL-terminated; `data` is NULL or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_blob_create(
    rt: *mut hl_runtime_t,
    name: *const c_char,
    data: *const std::ffi::c_void,
    len: usize,
) -> hl_status_t {
    guard("hl_blob_create", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let name = unsafe { utf8(name, "name") }?;
        // SAFETY: per this function's contract.
        let bytes = unsafe { sdk::abi::bytes(data.cast(), len, "data") }?;
        state.rt.create_blob(name, bytes)?;
        Ok(())
    })
}

/// See `hl_blob_create_from_file` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `name` and `path` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_blob_create_from_file(
    rt: *mut hl_runtime_t,
    name: *const c_char,
    path: *const c_char,
) -> hl_status_t {
    guard("hl_blob_create_from_file", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let name = unsafe { utf8(name, "name") }?;
        // SAFETY: per this function's contract.
        let path = unsafe { utf8(path, "path") }?;
        state.rt.create_blob_from_file(name, path)?;
        Ok(())
    })
}

/// See `hl_plugin_process` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `process` is NULL or points to a writable `hl_plugin_process_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_process(
    plugin: *const hl_plugin_t,
    process: *mut hl_plugin_process_t,
) -> hl_status_t {
    guard("hl_plugin_process", || {
        let state = PLUGINS.get(plugin, "plugin")?;
        // SAFETY: per this function's contract.
        unsafe { arg(process, "process") }?;
        on_main_thread(state.runtime.rt.handle())?;
        let loaded = lock(&state.plugin);
        let Some(loaded) = loaded.as_ref() else {
            return Err(Failure::new(
                HL_STATUS_REENTRANT,
                "the plugin is being reloaded",
            ));
        };
        let i = loaded.info();
        let c =
            |s: Option<String>| s.map(|s| CString::new(s.replace('\0', "")).unwrap_or_default());
        let mut strings = lock(&state.process);
        *strings = [c(i.last_crash), c(i.down.clone())];
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let isolation = match i.isolation {
            sdk::plugin::Isolation::OwnProcess => HL_ISOLATION_OWN_PROCESS,
            sdk::plugin::Isolation::SharedProcess(_) => HL_ISOLATION_SHARED_PROCESS,
            _ => HL_ISOLATION_IN_PROCESS,
        };
        let out = hl_plugin_process_t {
            struct_size: std::mem::size_of::<hl_plugin_process_t>() as u32,
            isolation,
            pid: i.pid.unwrap_or(0),
            restarts: i.restarts,
            crashes: i.crashes,
            down: u32::from(i.down.is_some()),
            checkpoints: i.saves,
            last_crash: ptr(&strings[0]),
            down_reason: ptr(&strings[1]),
        };
        // SAFETY: non-NULL per the check above and sized per the contract.
        unsafe { write_sized(process, out, "process") }
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unloads the plugin behind a removed handle; returns its report.
fn unload_state(
    state: &PluginState,
    token: usize,
    ms: Duration,
) -> Option<sdk::plugin::UnloadReport> {
    lock(&state.runtime.plugins).retain(|&h| h != token);
    let loaded = lock(&state.plugin).take()?;
    Some(loaded.unload(ms))
}

/// See `hl_plugin_unload` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `report` is NULL or points to a writable `hl_unload_report_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_unload(
    plugin: *mut hl_plugin_t,
    deadline_ms: u32,
    report: *mut hl_unload_report_t,
) -> hl_status_t {
    guard("hl_plugin_unload", || {
        let state = PLUGINS.get(plugin, "plugin")?;
        on_main_thread(state.runtime.rt.handle())?;
        // SAFETY: per this function's contract (checked before any work is done).
        unsafe { super::guard::check_size(report, "report") }?;
        // From inside the plugin's own code (a sink call of its message, say) the plugin cannot
        // be waited for nor its `unload` run: refused, the handle stays valid.
        if lock(&state.plugin)
            .as_ref()
            .is_some_and(|p| p.in_callback())
        {
            return Err(Failure::new(
                HL_STATUS_REENTRANT,
                "a plugin cannot be unloaded from inside its own callbacks (such as the sink call of its own message); unload it after the callback returns",
            ));
        }
        let state = PLUGINS.remove(plugin, "plugin")?;
        let Some(r) = unload_state(&state, plugin as usize, deadline(deadline_ms)) else {
            return Ok(());
        };
        if !report.is_null() {
            let out = hl_unload_report_t {
                struct_size: std::mem::size_of::<hl_unload_report_t>() as u32,
                retired: u32::from(r.retired),
                dropped: r.dropped as u64,
                stragglers: r.stragglers as u64,
                elapsed_us: r.elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            };
            // SAFETY: non-NULL, sized as checked above.
            unsafe { write_sized(report, out, "report") }?;
        }
        if r.stragglers > 0 {
            return Err(Failure::new(
                HL_STATUS_TIMEOUT,
                format!(
                    "{} calls into the plugin were still running at the deadline; its image is retired, not unmapped",
                    r.stragglers
                ),
            ));
        }
        Ok(())
    })
}

/// See `hl_plugin_reload` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `path` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_reload(
    plugin: *mut hl_plugin_t,
    path: *const c_char,
    deadline_ms: u32,
) -> hl_status_t {
    guard("hl_plugin_reload", || {
        let state = PLUGINS.get(plugin, "plugin")?;
        // SAFETY: per this function's contract.
        let path = unsafe { utf8(path, "path") }?;
        on_main_thread(state.runtime.rt.handle())?;
        // Not held across the reload's plugin callbacks: a plugin asking for `hl_plugin_info`
        // of itself from `restore_state` must not deadlock.
        let mut loaded = lock(&state.plugin).take().ok_or_else(|| {
            Failure::new(
                HL_STATUS_REENTRANT,
                "the plugin is being reloaded or unloaded already",
            )
        })?;
        let result = loaded.reload(path, deadline(deadline_ms));
        if result.is_ok() {
            *lock(&state.info) = info_strings(&loaded);
        }
        *lock(&state.plugin) = Some(loaded);
        result?;
        Ok(())
    })
}

/// See `hl_plugin_info` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `info` is NULL or points to a writable `hl_plugin_info_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_plugin_info(
    plugin: *const hl_plugin_t,
    info: *mut hl_plugin_info_t,
) -> hl_status_t {
    guard("hl_plugin_info", || {
        let state = PLUGINS.get(plugin, "plugin")?;
        // SAFETY: per this function's contract.
        unsafe { arg(info, "info") }?;
        on_main_thread(state.runtime.rt.handle())?;
        let loaded = lock(&state.plugin);
        let Some(loaded) = loaded.as_ref() else {
            return Err(Failure::new(
                HL_STATUS_REENTRANT,
                "the plugin is being reloaded",
            ));
        };
        let i = loaded.info();
        let strings = lock(&state.info);
        let out = hl_plugin_info_t {
            struct_size: std::mem::size_of::<hl_plugin_info_t>() as u32,
            generation: i.generation,
            flags: i.flags,
            reserved: 0,
            name: strings[0].as_ptr(),
            version: strings[1].as_ptr(),
            path: strings[2].as_ptr(),
            pending: i.pending as u64,
        };
        // SAFETY: non-NULL per the check above and sized per the contract.
        unsafe { write_sized(info, out, "info") }
    })
}

/// See `hl_runtime_plugin_stats` in `hostloop/plugin.h`.
///
/// # Safety
///
/// `stats` is NULL or points to a writable `hl_plugin_stats_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_plugin_stats(
    rt: *const hl_runtime_t,
    stats: *mut hl_plugin_stats_t,
) -> hl_status_t {
    guard("hl_runtime_plugin_stats", || {
        let state = RUNTIMES.get(rt, "rt")?;
        // SAFETY: per this function's contract.
        unsafe { arg(stats, "stats") }?;
        let s = state.rt.plugin_stats();
        let out = hl_plugin_stats_t {
            struct_size: std::mem::size_of::<hl_plugin_stats_t>() as u32,
            reserved: 0,
            loaded: s.loaded,
            loads: s.loads,
            unloads: s.unloads,
            reloads: s.reloads,
            failed_reloads: s.failed_reloads,
            images_retired: s.images_retired,
            images_closed: s.images_closed,
            stragglers: s.stragglers,
            images_retained: s.images_retained,
        };
        // SAFETY: non-NULL per the check above and sized per the contract.
        unsafe { write_sized(stats, out, "stats") }
    })
}

/// Unloads every plugin of a runtime that is shutting down (their handles become invalid).
pub(crate) fn unload_all(state: &RuntimeState, deadline: Duration) {
    let handles = std::mem::take(&mut *lock(&state.plugins));
    for h in handles {
        if let Ok(p) = PLUGINS.remove(h as *mut hl_plugin_t, "plugin") {
            if let Some(loaded) = lock(&p.plugin).take() {
                loaded.unload(deadline);
            }
        }
    }
}
