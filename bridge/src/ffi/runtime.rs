//! `hostloop/runtime.h`: `hl_runtime_t` lifecycle, the doorbell, `request_pump`, `pump`,
//! shutdown and stats.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::common::*;
use super::guard::{
    arg, arg_mut, check_size, guard, on_main_thread, utf8, write_sized, Failure, FfiResult,
    UserData,
};
use super::handles::Registry;

/// The opaque runtime type of the header. Values of `*mut hl_runtime_t` are registry tokens.
#[derive(Debug)]
pub enum hl_runtime_t {}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_runtime_options_t {
    pub struct_size: u32,
    pub abi_version: u32,
    pub workers: u32,
    pub io_threads: u32,
    pub default_budget_us: u32,
    pub call_timeout_ms: u32,
    pub free_deadline_ms: u32,
    pub main_backlog_limit: u32,
    pub stack_size: u64,
    pub thread_name: *const c_char,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hl_shutdown_report_t {
    pub struct_size: u32,
    pub threads_joined: u32,
    pub cancelled_queued: u64,
    pub cancelled_running: u64,
    pub stragglers: u64,
    pub main_items_dropped: u64,
    pub elapsed_us: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hl_pump_report_t {
    pub struct_size: u32,
    pub reserved: u32,
    pub ran: u64,
    pub remaining: u64,
    pub elapsed_us: u64,
    pub overrun_us: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hl_run_report_t {
    pub struct_size: u32,
    pub reserved: u32,
    pub pumps: u64,
    pub ran: u64,
    pub elapsed_us: u64,
}

/// `hl_until_fn`: called on the main thread after each pump; non-zero stops the run.
pub type hl_until_fn = Option<unsafe extern "C" fn(user_data: *mut c_void) -> i32>;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hl_stats_t {
    pub struct_size: u32,
    pub workers: u32,
    pub jobs_spawned: u64,
    pub jobs_finished: u64,
    pub jobs_failed: u64,
    pub jobs_cancelled: u64,
    pub jobs_panicked: u64,
    pub queued_cpu: u64,
    pub queued_io: u64,
    pub queued_main: u64,
    pub pumps: u64,
    pub pump_p50_us: u64,
    pub pump_p99_us: u64,
    pub budget_overruns: u64,
    pub main_items_run: u64,
    pub main_items_panicked: u64,
    pub doorbell_rings: u64,
    pub sink_messages: u64,
    pub sink_dropped: u64,
    pub events_dropped: u64,
    pub workers_busy_us: u64,
    pub sleeping_workers: u64,
}

pub type hl_request_pump_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// What a runtime handle stands for.
pub(crate) struct RuntimeState {
    pub(crate) rt: sdk::Runtime,
    default_budget: Duration,
    free_deadline: Duration,
    /// The first shutdown's report and status, returned again by later calls.
    shutdown: Mutex<Option<(hl_shutdown_report_t, Option<String>)>>,
    /// Subscriptions made through `hl_runtime_subscribe`, by id.
    pub(crate) subscriptions: Mutex<std::collections::HashMap<u64, sdk::Subscription>>,
    /// Plugins loaded through `hl_plugin_load`, unloaded before the runtime shuts down.
    pub(crate) plugins: Mutex<Vec<usize>>,
}

impl RuntimeState {
    /// A pump budget from C: 0 means the options' `default_budget_us` — unlike the Rust API,
    /// where `pump(Duration::ZERO)` runs exactly one item (C has no "no budget given"); a C
    /// host passes 1 µs for one item. Documented at `hl_runtime_pump` in the header.
    fn budget(&self, us: u64) -> Duration {
        match us {
            0 => self.default_budget,
            us => Duration::from_micros(us),
        }
    }
}

pub(crate) static RUNTIMES: Registry<RuntimeState> = Registry::new("hl_runtime_t");

/// The runtime behind `rt`, refusing calls after shutdown.
pub(crate) fn live(rt: *const hl_runtime_t) -> FfiResult<Arc<RuntimeState>> {
    let state = RUNTIMES.get(rt, "rt")?;
    if state.rt.is_shut_down() {
        return Err(Failure::new(
            HL_STATUS_SHUT_DOWN,
            "the runtime is shut down",
        ));
    }
    Ok(state)
}

/// The Rust handle of a runtime made through `hl_runtime_new`, for Rust code that shares it
/// with C (plugins, tests). `None` for NULL, freed or foreign handles.
pub fn handle(rt: *const hl_runtime_t) -> Option<sdk::Handle> {
    RUNTIMES.get(rt, "rt").ok().map(|s| s.rt.handle().clone())
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// See `hl_runtime_options_init` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `options` is NULL or points to a writable `hl_runtime_options_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_options_init(
    options: *mut hl_runtime_options_t,
) -> hl_status_t {
    guard("hl_runtime_options_init", || {
        // SAFETY: per this function's contract.
        let options = unsafe { arg_mut(options, "options") }?;
        *options = hl_runtime_options_t {
            struct_size: std::mem::size_of::<hl_runtime_options_t>() as u32,
            abi_version: HL_ABI_VERSION,
            workers: 0,
            io_threads: 0,
            default_budget_us: 2_000,
            call_timeout_ms: 2_000,
            free_deadline_ms: 2_000,
            main_backlog_limit: 0,
            stack_size: 0,
            thread_name: std::ptr::null(),
        };
        Ok(())
    })
}

/// Checks a caller's options struct: its size and ABI version, and thread counts no higher than
/// `sdk::MAX_WORKERS`. Extra bytes of a newer, larger struct are accepted only when they are all
/// zero (nothing asked of us that we would ignore).
///
/// # Safety
///
/// `options` points to at least `options.struct_size` readable bytes.
unsafe fn check_options(options: &hl_runtime_options_t) -> FfiResult {
    let ours = std::mem::size_of::<hl_runtime_options_t>();
    let theirs = options.struct_size as usize;
    if theirs < ours {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!(
                "options->struct_size is {theirs}, expected {ours}: call hl_runtime_options_init"
            ),
        ));
    }
    if theirs > ours {
        // SAFETY: the caller's struct has `theirs` readable bytes.
        let extra = unsafe {
            std::slice::from_raw_parts((options as *const _ as *const u8).add(ours), theirs - ours)
        };
        if extra.iter().any(|&b| b != 0) {
            return Err(Failure::new(
                HL_STATUS_VERSION_MISMATCH,
                format!("options are {theirs} bytes with settings this library ({ours} bytes) does not know"),
            ));
        }
    }
    if options.abi_version != HL_ABI_VERSION {
        return Err(Failure::new(
            HL_STATUS_VERSION_MISMATCH,
            format!(
                "options are for ABI {}, this library speaks ABI {HL_ABI_VERSION}",
                options.abi_version
            ),
        ));
    }
    // A negative "all but N threads" setting cast to unsigned lands here as ~4 billion.
    for (name, n) in [
        ("workers", options.workers),
        ("io_threads", options.io_threads),
    ] {
        if n as usize > sdk::MAX_WORKERS {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                format!(
                    "options->{name} is {n}, the most hostloop starts is {}",
                    sdk::MAX_WORKERS
                ),
            ));
        }
    }
    Ok(())
}

/// See `hl_runtime_new` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `options` is NULL or valid as the header describes; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_new(
    options: *const hl_runtime_options_t,
    out: *mut *mut hl_runtime_t,
) -> hl_status_t {
    guard("hl_runtime_new", || {
        // SAFETY: per this function's contract.
        let options = unsafe { arg(options, "options") }?;
        // SAFETY: per this function's contract.
        let out = unsafe { arg_mut(out, "out") }?;
        // SAFETY: `options` is readable for its declared size.
        unsafe { check_options(options) }?;
        let mut builder = sdk::Runtime::builder();
        if options.workers > 0 {
            builder = builder.workers(options.workers as usize);
        }
        if options.io_threads > 0 {
            builder = builder.io_threads(options.io_threads as usize);
        }
        if options.stack_size > 0 {
            builder = builder.stack_size(options.stack_size as usize);
        }
        if !options.thread_name.is_null() {
            // SAFETY: a non-NULL thread name is a NUL-terminated string per the header.
            builder =
                builder.thread_name(unsafe { utf8(options.thread_name, "options->thread_name") }?);
        }
        if options.main_backlog_limit > 0 {
            builder = builder.main_backlog_limit(options.main_backlog_limit as usize);
        }
        let free_deadline = Duration::from_millis(options.free_deadline_ms.into());
        builder = builder
            .call_on_main_timeout(Duration::from_millis(options.call_timeout_ms.into()))
            .drop_deadline(free_deadline);
        let rt = builder.build().map_err(|e| {
            let status = match e.kind() {
                std::io::ErrorKind::InvalidInput => HL_STATUS_INVALID_ARG,
                _ => HL_STATUS_OS,
            };
            Failure::new(status, format!("cannot start the runtime: {e}"))
        })?;
        let budget = match options.default_budget_us {
            0 => 2_000,
            us => us,
        };
        *out = RUNTIMES.insert(RuntimeState {
            rt,
            default_budget: Duration::from_micros(budget.into()),
            free_deadline,
            shutdown: Mutex::new(None),
            subscriptions: Mutex::default(),
            plugins: Mutex::default(),
        });
        Ok(())
    })
}

/// What one call of `shutdown` found: the report, the stragglers' message, and whether this
/// call is the one that shut down (later calls get the first report again).
struct ShutdownOutcome {
    report: hl_shutdown_report_t,
    stragglers: Option<String>,
    first: bool,
}

/// Shuts `state` down once; later calls get the first report.
fn shutdown(state: &RuntimeState, deadline: Duration) -> ShutdownOutcome {
    let mut done = state.shutdown.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((report, stragglers)) = &*done {
        return ShutdownOutcome {
            report: *report,
            stragglers: stragglers.clone(),
            first: false,
        };
    }
    // Plugins go first, while the pool can still finish their work.
    super::plugin::unload_all(state, deadline);
    let r = state.rt.shutdown(deadline);
    let report = hl_shutdown_report_t {
        struct_size: std::mem::size_of::<hl_shutdown_report_t>() as u32,
        threads_joined: r.threads_joined as u32,
        cancelled_queued: r.cancelled_queued as u64,
        cancelled_running: r.cancelled_running as u64,
        stragglers: r.stragglers.len() as u64,
        main_items_dropped: r.main_items_dropped as u64,
        elapsed_us: micros(r.elapsed),
    };
    let stragglers = (!r.stragglers.is_empty()).then(|| {
        let names: Vec<String> = r
            .stragglers
            .iter()
            .map(|s| {
                format!(
                    "job {} '{}' running for {:.1?}",
                    s.id,
                    s.name.as_deref().unwrap_or("(unnamed)"),
                    s.age
                )
            })
            .collect();
        format!(
            "{} job(s) still running at the deadline, their threads detached: {}",
            names.len(),
            names.join(", ")
        )
    });
    *done = Some((report, stragglers.clone()));
    ShutdownOutcome {
        report,
        stragglers,
        first: true,
    }
}

/// See `hl_runtime_shutdown` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `report` is NULL or points to an `hl_shutdown_report_t` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_shutdown(
    rt: *mut hl_runtime_t,
    deadline_ms: u32,
    report: *mut hl_shutdown_report_t,
) -> hl_status_t {
    guard("hl_runtime_shutdown", || {
        let state = RUNTIMES.get(rt, "rt")?;
        on_main_thread(state.rt.handle())?;
        // SAFETY: non-NULL reports have `struct_size` set, per the contract.
        unsafe { check_size(report, "report") }?;
        let done = shutdown(&state, Duration::from_millis(deadline_ms.into()));
        if !report.is_null() {
            // SAFETY: non-NULL, with `struct_size` set, per the contract.
            unsafe { write_sized(report, done.report, "report") }?;
        }
        match done.stragglers {
            Some(msg) => Err(Failure::new(HL_STATUS_TIMEOUT, msg)),
            None => Ok(()),
        }
    })
}

/// See `hl_runtime_free` in `hostloop/runtime.h`.
///
/// # Safety
///
/// No other thread uses `rt` during or after the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_free(rt: *mut hl_runtime_t) -> hl_status_t {
    guard("hl_runtime_free", || {
        let state = RUNTIMES.get(rt, "rt")?;
        // A runtime whose main thread has exited could otherwise never be freed.
        if !state.rt.main_thread_exited() {
            on_main_thread(state.rt.handle())?;
        }
        let state = RUNTIMES.remove(rt, "rt")?;
        let done = shutdown(&state, state.free_deadline);
        // Release the host's callbacks here, on the freeing thread, rather than whenever the
        // last detached straggler thread lets go of the runtime.
        state.rt.set_sink(None);
        state.rt.set_request_pump(None);
        super::event::drop_subscriptions(&state);
        drop(state);
        match done.stragglers {
            // Abandoned by this call: say so (a host that shut down first was told then).
            Some(msg) if done.first => Err(Failure::new(
                HL_STATUS_TIMEOUT,
                format!("the runtime is freed, but {msg}"),
            )),
            _ => Ok(()),
        }
    })
}

/// See `hl_runtime_wake_fd` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `fd` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_wake_fd(
    rt: *const hl_runtime_t,
    fd: *mut c_int,
) -> hl_status_t {
    guard("hl_runtime_wake_fd", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let fd = unsafe { arg_mut(fd, "fd") }?;
        on_main_thread(state.rt.handle())?;
        *fd = state.rt.doorbell_fd();
        Ok(())
    })
}

/// See `hl_runtime_set_request_pump` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `f` and `finalize` are NULL or valid functions; `user_data` is what they expect.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_set_request_pump(
    rt: *mut hl_runtime_t,
    f: hl_request_pump_fn,
    user_data: *mut c_void,
    finalize: hl_finalizer_fn,
) -> hl_status_t {
    guard("hl_runtime_set_request_pump", || {
        let state = live(rt)?;
        let ud = UserData::new(user_data, finalize);
        match f {
            None => {
                state.rt.set_request_pump(None);
                drop(ud);
            }
            Some(f) => state.rt.set_request_pump(Some(Arc::new(move || {
                // SAFETY: the host registered `f` with this user_data, callable from any thread.
                unsafe { f(ud.ptr()) }
            }))),
        }
        Ok(())
    })
}

/// See `hl_runtime_pump` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `report` is NULL or points to an `hl_pump_report_t` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_pump(
    rt: *mut hl_runtime_t,
    budget_us: u64,
    report: *mut hl_pump_report_t,
) -> hl_status_t {
    guard("hl_runtime_pump", || {
        let state = live(rt)?;
        // SAFETY: non-NULL reports have `struct_size` set, per the contract.
        unsafe { check_size(report, "report") }?;
        let budget = state.budget(budget_us);
        let r = state.rt.pump(budget)?;
        if !report.is_null() {
            let value = hl_pump_report_t {
                struct_size: 0,
                reserved: 0,
                ran: r.ran as u64,
                remaining: r.remaining as u64,
                elapsed_us: micros(r.elapsed),
                overrun_us: micros(r.overrun),
            };
            // SAFETY: non-NULL, with `struct_size` set, per the contract.
            unsafe { write_sized(report, value, "report") }?;
        }
        Ok(())
    })
}

/// See `hl_runtime_run_until` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `until` is NULL or callable with `user_data` on this thread; `report` is NULL or points to an
/// `hl_run_report_t` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_run_until(
    rt: *mut hl_runtime_t,
    until: hl_until_fn,
    user_data: *mut c_void,
    pump_budget_us: u64,
    timeout_ms: u32,
    report: *mut hl_run_report_t,
) -> hl_status_t {
    guard("hl_runtime_run_until", || {
        let state = live(rt)?;
        // SAFETY: non-NULL reports have `struct_size` set, per the contract.
        unsafe { check_size(report, "report") }?;
        let budget = state.budget(pump_budget_us);
        let until = || match until {
            // SAFETY: the caller passes a function callable with `user_data` on this thread.
            Some(f) => (unsafe { f(user_data) }) != 0,
            None => false,
        };
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let r = state.rt.run_until(until, budget, timeout)?;
        if !report.is_null() {
            let value = hl_run_report_t {
                struct_size: 0,
                reserved: 0,
                pumps: r.pumps,
                ran: r.ran,
                elapsed_us: micros(r.elapsed),
            };
            // SAFETY: non-NULL, with `struct_size` set, per the contract.
            unsafe { write_sized(report, value, "report") }?;
        }
        if r.finished {
            Ok(())
        } else {
            Err(Failure::new(
                HL_STATUS_TIMEOUT,
                format!("hl_runtime_run_until: not done after {timeout_ms} ms"),
            ))
        }
    })
}

/// See `hl_runtime_stats` in `hostloop/runtime.h`.
///
/// # Safety
///
/// `stats` is NULL or points to an `hl_stats_t` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_stats(
    rt: *const hl_runtime_t,
    stats: *mut hl_stats_t,
) -> hl_status_t {
    guard("hl_runtime_stats", || {
        let state = RUNTIMES.get(rt, "rt")?;
        if stats.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, "stats is NULL"));
        }
        let s = state.rt.stats();
        let q = s.queued;
        let value = hl_stats_t {
            struct_size: 0,
            workers: state.rt.workers() as u32,
            jobs_spawned: s.jobs_spawned,
            jobs_finished: s.jobs_finished,
            jobs_failed: s.jobs_failed,
            jobs_cancelled: s.jobs_cancelled,
            jobs_panicked: s.jobs_panicked,
            queued_cpu: (q.high + q.normal + q.low + q.background) as u64,
            queued_io: q.io as u64,
            queued_main: q.main as u64,
            pumps: s.pumps,
            pump_p50_us: micros(s.pump_p50),
            pump_p99_us: micros(s.pump_p99),
            budget_overruns: s.budget_overruns,
            main_items_run: s.main_items_run,
            main_items_panicked: s.main_items_panicked,
            doorbell_rings: s.doorbell_rings,
            sink_messages: s.sink_messages,
            sink_dropped: s.sink_dropped,
            events_dropped: s.events_dropped,
            workers_busy_us: s.workers.iter().map(|w| micros(w.busy)).sum(),
            sleeping_workers: s.sleeping_workers as u64,
        };
        // SAFETY: non-NULL, with `struct_size` set, per the contract.
        unsafe { write_sized(stats, value, "stats") }
    })
}

/// See `hl_runtime_backlog` in `hostloop/runtime.h`.
///
/// # Safety
///
/// Each output is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_runtime_backlog(
    rt: *const hl_runtime_t,
    queued: *mut u64,
    limit: *mut u64,
    refused: *mut u64,
) -> hl_status_t {
    guard("hl_runtime_backlog", || {
        let state = RUNTIMES.get(rt, "rt")?;
        let s = state.rt.stats();
        for (out, value) in [
            (queued, s.queued.main as u64),
            (limit, s.main_backlog_limit as u64),
            (refused, s.main_refused),
        ] {
            if !out.is_null() {
                // SAFETY: non-NULL outputs are writable, per the contract.
                unsafe { out.write(value) };
            }
        }
        Ok(())
    })
}
