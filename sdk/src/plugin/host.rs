//! The host side: loading plugin libraries, the services table they call, per-plugin accounting
//! of their work, safe unload and hot reload.
//!
//! # Per-plugin accounting (why no call into an unloaded plugin can happen)
//!
//! Every triple a plugin hands over is parked in *its instance's* queues — one per lane, plus
//! one for the main thread — and what goes into the runtime's own queues is a host-side wrapper
//! that holds only the instance (host memory) and pops one triple when it runs. So the plugin's
//! pending work is always in a place the instance owns, and unload can take it all:
//!
//! 1. The instance's gate (`crate::plugin::gate`, model-checked) is closed. A service call (`spawn`,
//!    `post_main`) passes the gate before it reads whether it is closing, and a wrapper passes
//!    it before it pops.
//! 2. The plugin's `unload` callback runs, then every parked triple is dropped (its `drop`
//!    called), then unload waits until no pass is under way (or the deadline), and drains again
//!    until it finds nothing parked.
//! 3. The gate's argument: a service call or wrapper either sees the gate closing (and only
//!    drops, never calls) or is waited for (and what it queued is drained). A wrapper that runs
//!    after unload finds the queues empty.
//!
//! Hence once unload returns with `running == 0`, no `call` or `drop` of the plugin can start.
//! If the deadline passes first (a job ignoring cancellation), the image is retired, never
//! unmapped, and the count of stragglers is reported.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::abi::*;
use crate::event::{EventFilter, Subscription};
use crate::plugin::gate::{Gate, Pass};
use crate::job::{Lane, Priority};
use crate::main_thread::{Main, Step};
use crate::runtime::Handle;
use crate::internal::sync::lock;

/// What went wrong loading, unloading or reloading a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PluginErrorKind {
    /// No file at the path.
    FileNotFound,
    /// The file is not a loadable shared library (the loader's message says why).
    NotALibrary,
    /// The library does not export `hostloop_plugin_entry`.
    NoEntrySymbol,
    /// Built for another plugin ABI version (older or newer).
    VersionMismatch,
    /// The descriptor is too small, or a required field is NULL or not UTF-8, or a reload
    /// found a different plugin.
    BadDescriptor,
    /// A plugin of that name is loaded in this runtime already.
    AlreadyLoaded,
    /// The plugin's `load` (or `restore_state`, `save_state`) panicked.
    Panicked,
    /// The plugin's `load`, `save_state` or `restore_state` returned an error.
    Failed,
    /// The old build's work did not finish within the reload deadline.
    Timeout,
    /// Called off the main thread.
    WrongThread,
    /// Called from inside the plugin's own main-thread code.
    Reentrant,
    /// The runtime is shut down.
    ShutDown,
    /// Copying the library for a reload failed.
    Io,
}

/// A plugin operation's failure: its kind, the path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    kind: PluginErrorKind,
    path: PathBuf,
    reason: String,
}

impl PluginError {
    fn new(kind: PluginErrorKind, path: &Path, reason: impl Into<String>) -> Self {
        PluginError {
            kind,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> PluginErrorKind {
        self.kind
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why, in words (the loader's or the plugin's message).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The `HL_STATUS_*` the C API returns for it.
    pub fn status(&self) -> hl_status_t {
        match self.kind {
            PluginErrorKind::FileNotFound => HL_STATUS_FILE_NOT_FOUND,
            PluginErrorKind::NotALibrary => HL_STATUS_NOT_A_LIBRARY,
            PluginErrorKind::NoEntrySymbol => HL_STATUS_NO_ENTRY_SYMBOL,
            PluginErrorKind::VersionMismatch => HL_STATUS_VERSION_MISMATCH,
            PluginErrorKind::BadDescriptor => HL_STATUS_BAD_DESCRIPTOR,
            PluginErrorKind::AlreadyLoaded => HL_STATUS_ALREADY_LOADED,
            PluginErrorKind::Panicked => HL_STATUS_PANIC,
            PluginErrorKind::Failed => HL_STATUS_FAILED,
            PluginErrorKind::Timeout => HL_STATUS_TIMEOUT,
            PluginErrorKind::WrongThread => HL_STATUS_WRONG_THREAD,
            PluginErrorKind::Reentrant => HL_STATUS_REENTRANT,
            PluginErrorKind::ShutDown => HL_STATUS_SHUT_DOWN,
            PluginErrorKind::Io => HL_STATUS_OS,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PluginError {}

/// Counters of one runtime's plugin activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginStats {
    /// Plugins loaded now.
    pub loaded: u64,
    /// Successful loads, reloads included.
    pub loads: u64,
    /// Unloads.
    pub unloads: u64,
    /// Successful hot reloads.
    pub reloads: u64,
    /// Reloads that failed (the old build kept running).
    pub failed_reloads: u64,
    /// Images kept mapped at unload instead of `dlclose`d (Rust plugins, or stragglers).
    pub images_retired: u64,
    /// Images really unmapped.
    pub images_closed: u64,
    /// Calls into plugins still running at an unload's deadline.
    pub stragglers: u64,
}

/// The plugin bookkeeping of one runtime.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    names: HashSet<String>,
    stats: PluginStats,
}

/// What an unload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnloadReport {
    /// The plugin's queued work that never ran (its `drop` was called).
    pub dropped: usize,
    /// Calls into the plugin still running at the deadline (0 unless a job ignored
    /// cancellation). With stragglers the image is retired, never unmapped.
    pub stragglers: usize,
    /// Whether the image was retired (kept mapped) rather than unmapped.
    pub retired: bool,
    /// How long the unload took.
    pub elapsed: Duration,
}

/// A description of a loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginInfo {
    /// The descriptor's name.
    pub name: String,
    /// The descriptor's version.
    pub version: String,
    /// The path it was (re)loaded from.
    pub path: PathBuf,
    /// 0 after load, +1 per successful reload.
    pub generation: u32,
    /// The descriptor's `HL_PLUGIN_FLAG_*`.
    pub flags: u32,
    /// The plugin's work queued or running on the host now.
    pub pending: usize,
}

/// A triple for a worker.
struct Foreign {
    data: *mut c_void,
    call: unsafe extern "C" fn(*mut c_void),
    drop: unsafe extern "C" fn(*mut c_void),
}

/// A triple for the main thread.
struct ForeignMain {
    data: *mut c_void,
    call: unsafe extern "C" fn(*mut c_void, u64) -> u32,
    drop: unsafe extern "C" fn(*mut c_void),
}

// SAFETY: the plugin ABI says a triple's functions may be called on any thread (`call` of a
// main-thread triple is only called on the main thread, which the pump guarantees); hostloop
// moves `data` between threads without touching it.
unsafe impl Send for Foreign {}
// SAFETY: as above.
unsafe impl Send for ForeignMain {}

impl Drop for Foreign {
    fn drop(&mut self) {
        // SAFETY: a `Foreign` that is dropped was never called: its `drop` releases `data`,
        // once. `call` paths `mem::forget` it after calling.
        unsafe { (self.drop)(self.data) };
    }
}

impl Drop for ForeignMain {
    fn drop(&mut self) {
        // SAFETY: as for `Foreign`.
        unsafe { (self.drop)(self.data) };
    }
}

const LANES: usize = 5;

fn lane_of(code: u32) -> Option<Lane> {
    Some(match code {
        HL_PLUGIN_LANE_HIGH => Lane::Cpu(Priority::High),
        HL_PLUGIN_LANE_NORMAL => Lane::Cpu(Priority::Normal),
        HL_PLUGIN_LANE_LOW => Lane::Cpu(Priority::Low),
        HL_PLUGIN_LANE_BACKGROUND => Lane::Cpu(Priority::Background),
        HL_PLUGIN_LANE_IO => Lane::Io,
        _ => return None,
    })
}

/// One instance of a loaded plugin, as the host accounts for it. Its address is the services
/// table's `host` pointer.
struct Instance {
    me: Weak<Instance>,
    /// The runtime, weakly: a retired instance outlives it (see `retire`).
    shared: Weak<crate::runtime::Shared>,
    desc: hl_plugin_descriptor_t,
    name: String,
    services: hl_plugin_services_t,
    /// The plugin's `void *instance`.
    instance: AtomicPtr<c_void>,
    /// Counts service calls and wrappers under way; closed at unload (see `crate::plugin::gate`).
    gate: Gate,
    lanes: [(Sender<Foreign>, Receiver<Foreign>); LANES],
    main_q: (Sender<ForeignMain>, Receiver<ForeignMain>),
    /// A main-thread triple that asked to continue.
    main_carry: Mutex<Option<ForeignMain>>,
    /// Depth of the plugin's main-thread code on the main thread's stack.
    in_main: AtomicUsize,
    subscription: Mutex<Option<Subscription>>,
}

// SAFETY: the raw pointers are the plugin's `instance` (passed back to its `[main-thread]`
// callbacks on the main thread only) and `services.host` (this instance's own address); the
// descriptor is static plugin data. Everything else is `Send + Sync`.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// Marks the plugin's main-thread code as on the stack (for reentrancy checks).
struct InMain<'a>(&'a Instance);

impl<'a> InMain<'a> {
    fn enter(inst: &'a Instance) -> Self {
        inst.in_main.fetch_add(1, Ordering::Relaxed);
        InMain(inst)
    }
}

impl Drop for InMain<'_> {
    fn drop(&mut self) {
        self.0.in_main.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A host-side wrapper queued on the runtime's pool: pops one of the plugin's triples.
struct Pop {
    inst: Arc<Instance>,
    lane: usize,
    done: bool,
}

impl Pop {
    fn run(mut self) {
        self.done = true;
        self.pop(true);
    }

    fn pop(&self, call: bool) {
        let inst = &*self.inst;
        let pass = inst.gate.enter();
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Ok(item) = inst.lanes[self.lane].1.try_recv() {
            if call && !pass.closing() {
                let item = std::mem::ManuallyDrop::new(item);
                // SAFETY: the plugin's `call` consumes `data`; `item` is not dropped after.
                unsafe { (item.call)(item.data) };
            } else {
                drop(item);
            }
        }
    }
}

impl Drop for Pop {
    fn drop(&mut self) {
        if !self.done {
            // Never run (the runtime shut down): the triple is dropped instead.
            self.pop(false);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The services table.

/// # Safety
///
/// `host` is the pointer of a services table made by `Instance::new`, whose instance is alive
/// (the host keeps it alive while plugin code can run: see `LoadedPlugin::release`).
unsafe fn instance<'a>(host: *mut c_void) -> &'a Instance {
    // SAFETY: per this function's contract.
    unsafe { &*host.cast::<Instance>() }
}

/// Runs a service body with panics caught (a panic becomes `HL_STATUS_PANIC`).
fn service(body: impl FnOnce() -> hl_status_t) -> hl_status_t {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(HL_STATUS_PANIC)
}

/// Parks a triple in one of the instance's queues, through the gate. Returns the pass (keep it
/// until the wrapper is queued), the runtime and the instance; a refused triple is dropped
/// (its `drop` called) and the status says why.
fn park<'a, T>(
    inst: &'a Instance,
    item: T,
    queue: &Sender<T>,
) -> Result<(Pass<'a>, Handle, Arc<Instance>), hl_status_t> {
    let pass = inst.gate.enter();
    let (Some(rt), Some(me)) = (inst.rt(), inst.me.upgrade()) else {
        return Err(HL_STATUS_SHUT_DOWN);
    };
    if pass.closing() || rt.is_shut_down() {
        return Err(HL_STATUS_SHUT_DOWN);
    }
    queue.send(item).map_err(|_| HL_STATUS_SHUT_DOWN)?;
    Ok((pass, rt, me))
}

unsafe extern "C" fn svc_spawn(
    host: *mut c_void,
    lane: u32,
    data: *mut c_void,
    call: hl_task_fn,
    drop_fn: hl_drop_fn,
) -> hl_status_t {
    service(|| {
        // SAFETY: `host` is ours, per the ABI.
        let inst = unsafe { instance(host) };
        let Some(drop_fn) = drop_fn else {
            return HL_STATUS_INVALID_ARG;
        };
        let (Some(call), Some(lane_kind)) = (call, lane_of(lane)) else {
            // SAFETY: the plugin's own drop for its own data, once.
            unsafe { drop_fn(data) };
            return HL_STATUS_INVALID_ARG;
        };
        let item = Foreign {
            data,
            call,
            drop: drop_fn,
        };
        let index = lane as usize;
        let (_pass, rt, me) = match park(inst, item, &inst.lanes[index].0) {
            Ok(admitted) => admitted,
            Err(status) => return status,
        };
        let pop = Pop {
            inst: me,
            lane: index,
            done: false,
        };
        // If the runtime is shutting down the wrapper is dropped unrun, which drops a triple.
        rt.shared().submit_internal(lane_kind, move || pop.run());
        HL_STATUS_OK
    })
}

unsafe extern "C" fn svc_post_main(
    host: *mut c_void,
    data: *mut c_void,
    call: hl_main_task_fn,
    drop_fn: hl_drop_fn,
) -> hl_status_t {
    service(|| {
        // SAFETY: `host` is ours, per the ABI.
        let inst = unsafe { instance(host) };
        let Some(drop_fn) = drop_fn else {
            return HL_STATUS_INVALID_ARG;
        };
        let Some(call) = call else {
            // SAFETY: the plugin's own drop for its own data, once.
            unsafe { drop_fn(data) };
            return HL_STATUS_INVALID_ARG;
        };
        let item = ForeignMain {
            data,
            call,
            drop: drop_fn,
        };
        let (_pass, rt, me) = match park(inst, item, &inst.main_q.0) {
            Ok(admitted) => admitted,
            Err(status) => return status,
        };
        // Refused only by a runtime shutting down: the triple stays parked and is dropped at
        // unload.
        let _ = rt.post_chunked(move |main| me.run_main_one(main));
        HL_STATUS_OK
    })
}

unsafe extern "C" fn svc_emit(
    host: *mut c_void,
    message: *const hl_message_t,
    delivered: *mut u32,
) -> hl_status_t {
    service(|| {
        // SAFETY: `host` is ours, per the ABI.
        let inst = unsafe { instance(host) };
        let Some(rt) = inst.rt() else {
            return HL_STATUS_SHUT_DOWN;
        };
        if !rt.is_main_thread() {
            return HL_STATUS_WRONG_THREAD;
        }
        if message.is_null() {
            return HL_STATUS_NULL_ARG;
        }
        // SAFETY: the plugin's message is valid for the call, per the ABI.
        let msg = match unsafe { message_from_c(&*message) } {
            Ok(m) => m,
            Err(e) => return e.status,
        };
        match rt.shared().deliver_to_sink(&msg) {
            Ok(took) => {
                if !delivered.is_null() {
                    // SAFETY: non-NULL and writable per the ABI.
                    unsafe { *delivered = u32::from(took) };
                }
                HL_STATUS_OK
            }
            Err(e) => status_of(&e),
        }
    })
}

unsafe extern "C" fn svc_post_event(host: *mut c_void, event: *const hl_event_t) -> hl_status_t {
    service(|| {
        // SAFETY: `host` is ours, per the ABI.
        let inst = unsafe { instance(host) };
        if event.is_null() {
            return HL_STATUS_NULL_ARG;
        }
        // SAFETY: the plugin's event is valid for the call, per the ABI.
        let event = match unsafe { event_from_c(&*event) } {
            Ok(e) => e,
            Err(e) => return e.status,
        };
        let Some(rt) = inst.rt() else {
            return HL_STATUS_SHUT_DOWN;
        };
        match rt.post_event(event) {
            Ok(()) => HL_STATUS_OK,
            Err(e) => status_of(&e),
        }
    })
}

unsafe extern "C" fn svc_is_main_thread(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    u32::from(inst.rt().is_some_and(|rt| rt.is_main_thread()))
}

unsafe extern "C" fn svc_is_worker_thread(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    u32::from(inst.rt().is_some_and(|rt| rt.is_worker_thread()))
}

unsafe extern "C" fn svc_workers(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    inst.rt()
        .map_or(1, |rt| u32::try_from(rt.workers()).unwrap_or(u32::MAX))
}

unsafe extern "C" fn svc_is_closing(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    u32::from(inst.gate.is_closing())
}

/// Collects `save_state`'s bytes.
unsafe extern "C" fn write_to_vec(out: *mut c_void, bytes_ptr: *const u8, len: usize) {
    if out.is_null() || (bytes_ptr.is_null() && len > 0) {
        return;
    }
    // SAFETY: `out` is the `Vec<u8>` `save` passed; the plugin's bytes are readable for `len`.
    unsafe {
        let v = &mut *out.cast::<Vec<u8>>();
        if len > 0 {
            v.extend_from_slice(std::slice::from_raw_parts(bytes_ptr, len));
        }
    }
}

const ERROR_LEN: usize = 1024;

fn c_error_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Instance {
    fn new(rt: &Handle, desc: hl_plugin_descriptor_t, name: String) -> Arc<Instance> {
        Arc::new_cyclic(|me: &Weak<Instance>| Instance {
            me: me.clone(),
            shared: Arc::downgrade(rt.shared()),
            desc,
            name,
            services: hl_plugin_services_t {
                struct_size: std::mem::size_of::<hl_plugin_services_t>() as u32,
                abi_version: HL_PLUGIN_ABI_VERSION,
                // The Arc's allocation: stable for the instance's life.
                host: me.as_ptr().cast_mut().cast(),
                spawn: Some(svc_spawn),
                post_main: Some(svc_post_main),
                emit: Some(svc_emit),
                post_event: Some(svc_post_event),
                is_main_thread: Some(svc_is_main_thread),
                is_worker_thread: Some(svc_is_worker_thread),
                workers: Some(svc_workers),
                is_closing: Some(svc_is_closing),
            },
            instance: AtomicPtr::new(std::ptr::null_mut()),
            gate: Gate::new(),
            lanes: std::array::from_fn(|_| crossbeam_channel::unbounded()),
            main_q: crossbeam_channel::unbounded(),
            main_carry: Mutex::new(None),
            in_main: AtomicUsize::new(0),
            subscription: Mutex::new(None),
        })
    }

    /// The runtime, unless it is gone (only a retired instance outlives it).
    fn rt(&self) -> Option<Handle> {
        self.shared.upgrade().map(Handle::from_shared)
    }

    fn ptr(&self) -> *mut c_void {
        self.instance.load(Ordering::Acquire)
    }

    /// Main thread, from the host's pump: runs one of the plugin's main-thread triples.
    fn run_main_one(&self, main: &mut Main<'_>) -> Step {
        let item = lock(&self.main_carry)
            .take()
            .or_else(|| self.main_q.1.try_recv().ok());
        let Some(item) = item else {
            return Step::Done;
        };
        if self.gate.is_closing() {
            drop(item);
            return Step::Done;
        }
        let budget = u64::try_from(main.time_left().as_nanos()).unwrap_or(u64::MAX);
        let step = {
            let _in = InMain::enter(self);
            // SAFETY: the plugin's main-thread `call`, on the main thread; `data` stays the
            // plugin's until it returns DONE.
            unsafe { (item.call)(item.data, budget) }
        };
        if step == HL_STEP_CONTINUE {
            *lock(&self.main_carry) = Some(item);
            Step::Continue
        } else {
            std::mem::forget(item);
            Step::Done
        }
    }

    /// Main thread: calls the plugin's `load`.
    fn load(&self, path: &Path) -> Result<(), PluginError> {
        let Some(load) = self.desc.load else {
            return Err(PluginError::new(
                PluginErrorKind::BadDescriptor,
                path,
                "load is NULL",
            ));
        };
        let mut out: *mut c_void = std::ptr::null_mut();
        let mut err = [0u8; ERROR_LEN];
        let status = {
            let _in = InMain::enter(self);
            // SAFETY: the plugin's `[main-thread]` load with our table (alive as long as the
            // instance) and writable out-parameters.
            unsafe { load(&self.services, &mut out, err.as_mut_ptr().cast(), err.len()) }
        };
        if status == HL_STATUS_OK {
            self.instance.store(out, Ordering::Release);
            return Ok(());
        }
        let kind = if status == HL_STATUS_PANIC {
            PluginErrorKind::Panicked
        } else {
            PluginErrorKind::Failed
        };
        let text = c_error_text(&err);
        Err(PluginError::new(
            kind,
            path,
            format!(
                "plugin {:?} failed to load ({}): {}",
                self.name,
                status_label(status),
                if text.is_empty() {
                    "no reason given"
                } else {
                    &text
                }
            ),
        ))
    }

    fn subscribe(self: &Arc<Self>, rt: &Handle) {
        let Some(event_fn) = self.desc.event else {
            return;
        };
        let me = self.clone();
        let sub = rt.subscribe(EventFilter::All, move |e, _main| {
            if me.gate.is_closing() {
                return;
            }
            let _in = InMain::enter(&me);
            let p = me.ptr();
            // SAFETY: the plugin's `[main-thread]` event callback with its own instance; the
            // event lives for the call.
            with_c_event(e, |c| unsafe { event_fn(p, c) });
        });
        *lock(&self.subscription) = Some(sub);
    }

    /// Main thread: `save_state` into bytes (`None` when the plugin saves no state).
    fn save(&self, path: &Path) -> Result<Option<Vec<u8>>, PluginError> {
        let Some(save) = self.desc.save_state else {
            return Ok(None);
        };
        let mut bytes: Vec<u8> = Vec::new();
        let status = {
            let _in = InMain::enter(self);
            // SAFETY: the plugin's `[main-thread]` save with its instance and our writer.
            unsafe {
                save(
                    self.ptr(),
                    (&mut bytes as *mut Vec<u8>).cast(),
                    Some(write_to_vec),
                )
            }
        };
        match status {
            HL_STATUS_OK => Ok(Some(bytes)),
            s => Err(PluginError::new(
                if s == HL_STATUS_PANIC {
                    PluginErrorKind::Panicked
                } else {
                    PluginErrorKind::Failed
                },
                path,
                format!(
                    "plugin {:?} could not save its state ({})",
                    self.name,
                    status_label(s)
                ),
            )),
        }
    }

    /// Main thread: `restore_state` with `bytes`.
    fn restore(&self, path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
        let Some(restore) = self.desc.restore_state else {
            return Ok(());
        };
        let mut err = [0u8; ERROR_LEN];
        let status = {
            let _in = InMain::enter(self);
            // SAFETY: the plugin's `[main-thread]` restore with its instance, readable bytes
            // and a writable error buffer.
            unsafe {
                restore(
                    self.ptr(),
                    bytes.as_ptr(),
                    bytes.len(),
                    err.as_mut_ptr().cast(),
                    err.len(),
                )
            }
        };
        if status == HL_STATUS_OK {
            return Ok(());
        }
        Err(PluginError::new(
            if status == HL_STATUS_PANIC {
                PluginErrorKind::Panicked
            } else {
                PluginErrorKind::Failed
            },
            path,
            format!(
                "plugin {:?} could not restore the state ({}): {}",
                self.name,
                status_label(status),
                c_error_text(&err)
            ),
        ))
    }

    /// Drops every parked triple; returns how many.
    fn drain(&self) -> usize {
        let mut n = 0;
        for (_, rx) in &self.lanes {
            n += rx.try_iter().map(drop).count();
        }
        n += lock(&self.main_carry).take().map(drop).into_iter().count();
        n += self.main_q.1.try_iter().map(drop).count();
        n
    }

    /// Stops intake and drops the parked work, then waits up to `deadline` for running calls
    /// (and drops what they queued meanwhile). Returns (dropped, still running at the deadline).
    fn quiesce(&self, deadline: Instant) -> (usize, usize) {
        self.gate.close();
        let mut dropped = 0;
        loop {
            dropped += self.drain();
            let running = self.gate.wait_idle(Some(deadline));
            if running > 0 {
                return (dropped + self.drain(), running);
            }
            // Idle with nothing parked: every call that could queue work has returned, and a
            // wrapper that starts from now on finds nothing to pop.
            if self.parked() == 0 {
                return (dropped, 0);
            }
        }
    }

    /// Triples parked in the instance's queues.
    fn parked(&self) -> usize {
        self.lanes.iter().map(|(_, rx)| rx.len()).sum::<usize>()
            + self.main_q.1.len()
            + usize::from(lock(&self.main_carry).is_some())
    }

    /// Main thread: the plugin's `unload`, then `quiesce`. Returns (dropped, still running).
    fn shut(&self, deadline: Instant, call_unload: bool) -> (usize, usize) {
        self.gate.close();
        if let (Some(sub), Some(rt)) = (lock(&self.subscription).take(), self.rt()) {
            rt.unsubscribe(sub);
        }
        let p = self.instance.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if call_unload {
            if let Some(unload) = self.desc.unload {
                let _in = InMain::enter(self);
                // SAFETY: the plugin's `[main-thread]` unload, once, with its own instance.
                unsafe { unload(p) };
            }
        }
        self.quiesce(deadline)
    }

    fn pending(&self) -> usize {
        self.parked() + self.gate.running()
    }
}

fn status_label(status: hl_status_t) -> String {
    match status {
        HL_STATUS_PANIC => "panicked".to_owned(),
        HL_STATUS_FAILED => "failed".to_owned(),
        other => format!("status {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Images.

/// What identifies a file's content well enough to tell a rebuilt library from the one mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Ok(FileId {
        dev,
        ino,
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// Libraries opened under their own path and never unmapped: the dynamic loader hands back the
/// mapped image for the same path, so a rebuilt file there must be loaded from a copy.
fn mapped_paths() -> &'static Mutex<HashMap<PathBuf, FileId>> {
    static MAPPED: OnceLock<Mutex<HashMap<PathBuf, FileId>>> = OnceLock::new();
    MAPPED.get_or_init(Default::default)
}

static COPIES: AtomicU64 = AtomicU64::new(0);

/// A loaded library and how it was opened.
struct Image {
    lib: Option<libloading::Library>,
    /// The path opened directly (not a copy): recorded in `mapped_paths` while mapped.
    direct: Option<(PathBuf, FileId)>,
}

impl Image {
    /// Releases the library: retired (kept mapped) or unmapped. Returns whether it was retired.
    fn release(mut self, retire: bool) -> bool {
        let Some(lib) = self.lib.take() else {
            return true;
        };
        if retire {
            std::mem::forget(lib);
            return true;
        }
        if let Some((path, id)) = self.direct.take() {
            let mut mapped = lock(mapped_paths());
            if mapped.get(&path) == Some(&id) {
                mapped.remove(&path);
            }
        }
        // A failed dlclose leaves the image mapped, which is harmless.
        let _ = lib.close();
        false
    }
}

/// Opens `path` (from a fresh copy when `copy`, or when a different file with that path is
/// mapped already) and reads its descriptor.
fn open(path: &Path, copy: bool) -> Result<(Image, hl_plugin_descriptor_t), PluginError> {
    let err = |kind, reason: String| PluginError::new(kind, path, reason);
    let id = match file_id(path) {
        Ok(id) => id,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                PluginErrorKind::FileNotFound,
                "no such file".to_owned(),
            ))
        }
        Err(e) => return Err(err(PluginErrorKind::NotALibrary, e.to_string())),
    };
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(err(
            PluginErrorKind::NotALibrary,
            "is a directory".to_owned(),
        ));
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stale = lock(mapped_paths())
        .get(&canonical)
        .is_some_and(|mapped| *mapped != id);
    let (opened, direct) = if copy || stale {
        let dir = std::env::temp_dir().join(format!("hostloop-plugins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            err(
                PluginErrorKind::Io,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("so");
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let copy_path = dir.join(format!("{stem}.{n}.{ext}"));
        std::fs::copy(path, &copy_path).map_err(|e| {
            err(
                PluginErrorKind::Io,
                format!("cannot copy to {}: {e}", copy_path.display()),
            )
        })?;
        (copy_path, None)
    } else {
        (canonical.clone(), Some((canonical, id)))
    };
    // SAFETY: loading a library runs its initialisers: plugins are trusted native code (see
    // the module docs).
    let lib = unsafe { libloading::Library::new(&opened) };
    if direct.is_none() {
        // The mapping outlives the file; nothing is left behind in the temporary directory.
        let _ = std::fs::remove_file(&opened);
    }
    let lib = lib.map_err(|e| err(PluginErrorKind::NotALibrary, e.to_string()))?;
    let image = Image {
        lib: Some(lib),
        direct,
    };
    let desc = read_descriptor(&image, path);
    match desc {
        Ok(desc) => {
            if let Some((p, id)) = &image.direct {
                lock(mapped_paths()).insert(p.clone(), *id);
            }
            Ok((image, desc))
        }
        Err(e) => {
            // No plugin code but initialisers ran: unmapping is safe.
            image.release(false);
            Err(e)
        }
    }
}

fn read_descriptor(image: &Image, path: &Path) -> Result<hl_plugin_descriptor_t, PluginError> {
    let err = |kind, reason: String| PluginError::new(kind, path, reason);
    let lib = image.lib.as_ref().expect("an open image");
    // SAFETY: the symbol's type is the ABI's `hl_plugin_entry_fn`; a library exporting the name
    // with another type is a broken plugin, which the descriptor checks below mostly catch.
    let entry =
        unsafe { lib.get::<hl_plugin_entry_fn>(HL_PLUGIN_ENTRY_SYMBOL.to_bytes_with_nul()) }
            .map_err(|e| {
                err(
                    PluginErrorKind::NoEntrySymbol,
                    format!("no `hostloop_plugin_entry` symbol: {e}"),
                )
            })?;
    let Some(entry) = *entry else {
        return Err(err(
            PluginErrorKind::NoEntrySymbol,
            "`hostloop_plugin_entry` is NULL".to_owned(),
        ));
    };
    // SAFETY: calling the plugin's entry, `[main-thread]`, no arguments.
    let ptr = unsafe { entry() };
    if ptr.is_null() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "hostloop_plugin_entry returned NULL".to_owned(),
        ));
    }
    // SAFETY: the descriptor starts with two u32s in every ABI version.
    let (size, abi) = unsafe { (*ptr.cast::<u32>(), *ptr.cast::<u32>().add(1)) };
    if abi != HL_PLUGIN_ABI_VERSION {
        let age = if abi < HL_PLUGIN_ABI_VERSION {
            "older"
        } else {
            "newer"
        };
        return Err(err(
            PluginErrorKind::VersionMismatch,
            format!(
                "built for plugin ABI {abi} ({age} than this runtime's {HL_PLUGIN_ABI_VERSION}): rebuild it against this hostloop"
            ),
        ));
    }
    let ours = std::mem::size_of::<hl_plugin_descriptor_t>();
    if (size as usize) < ours {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            format!("the descriptor is {size} bytes; plugin ABI {abi} needs at least {ours}"),
        ));
    }
    // SAFETY: at least `ours` bytes, as checked; the plugin keeps it static.
    let desc = unsafe { *ptr };
    let text = |p: *const c_char, field: &str| -> Result<String, PluginError> {
        // SAFETY: the ABI says both are NUL-terminated static strings (NULL is checked).
        unsafe { utf8(p, field) }
            .map(str::to_owned)
            .map_err(|e| err(PluginErrorKind::BadDescriptor, e.message))
    };
    let name = text(desc.name, "descriptor->name")?;
    text(desc.version, "descriptor->version")?;
    if name.is_empty() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "the name is empty".to_owned(),
        ));
    }
    if desc.load.is_none() || desc.unload.is_none() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "load and unload must not be NULL".to_owned(),
        ));
    }
    if desc.save_state.is_some() && desc.restore_state.is_none() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "save_state without restore_state".to_owned(),
        ));
    }
    Ok(desc)
}

fn descriptor_text(p: *const c_char) -> String {
    // SAFETY: validated by `read_descriptor`; static in the (still mapped) image.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// LoadedPlugin.

/// The default deadline of an unload made by `Drop`.
const DROP_DEADLINE: Duration = Duration::from_secs(2);

/// A plugin loaded into a runtime. Unload it with [`LoadedPlugin::unload`] (dropping it on the
/// main thread does the same with a 2 s deadline), replace its code with
/// [`LoadedPlugin::reload`].
///
/// # Thread safety
///
/// Every method is for the runtime's main thread (the plugin's callbacks run there).
pub struct LoadedPlugin {
    rt: Handle,
    inst: Arc<Instance>,
    image: Option<Image>,
    path: PathBuf,
    version: String,
    generation: u32,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.inst.name)
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Loads the plugin library at `path` and calls its `load`.
    ///
    /// At most one plugin of a name is loaded per runtime: loading it again returns
    /// [`PluginErrorKind::AlreadyLoaded`] (use [`LoadedPlugin::reload`] to replace its code).
    ///
    /// # Errors
    ///
    /// A [`PluginError`] whose kind says what failed: the file, the symbol, the ABI version,
    /// the descriptor, the name, or the plugin's own `load` (an error or a panic). Nothing of
    /// a plugin that failed to load stays behind.
    ///
    /// # Safety
    ///
    /// None required of the caller, but know that loading runs the library's code: only load
    /// plugins you trust, as with any native plugin.
    pub fn load_plugin(&self, path: impl AsRef<Path>) -> Result<LoadedPlugin, PluginError> {
        let path = path.as_ref();
        self.check_plugin_call(path)?;
        let (image, desc) = open(path, false)?;
        let name = descriptor_text(desc.name);
        let version = descriptor_text(desc.version);
        if !lock(&self.shared().plugins).names.insert(name.clone()) {
            let retire = desc.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE != 0;
            image.release(retire);
            return Err(PluginError::new(
                PluginErrorKind::AlreadyLoaded,
                path,
                format!(
                    "a plugin named {name:?} is loaded in this runtime already; reload it instead"
                ),
            ));
        }
        match instantiate(self, desc, &name, path) {
            Ok(inst) => {
                let mut reg = lock(&self.shared().plugins);
                reg.stats.loaded += 1;
                reg.stats.loads += 1;
                drop(reg);
                Ok(LoadedPlugin {
                    rt: self.clone(),
                    inst,
                    image: Some(image),
                    path: path.to_path_buf(),
                    version,
                    generation: 0,
                })
            }
            Err(e) => {
                lock(&self.shared().plugins).names.remove(&name);
                release(self, image, &desc, 0);
                Err(e)
            }
        }
    }

    /// Counters of this runtime's plugin activity.
    pub fn plugin_stats(&self) -> PluginStats {
        lock(&self.shared().plugins).stats
    }

    fn check_plugin_call(&self, path: &Path) -> Result<(), PluginError> {
        if self.is_shut_down() {
            return Err(PluginError::new(
                PluginErrorKind::ShutDown,
                path,
                "the runtime is shut down",
            ));
        }
        if !self.is_main_thread() {
            return Err(PluginError::new(
                PluginErrorKind::WrongThread,
                path,
                "plugins are loaded, unloaded and reloaded on the main thread",
            ));
        }
        Ok(())
    }
}

/// Creates an instance from a descriptor and runs its `load`; on failure nothing is left.
fn instantiate(
    rt: &Handle,
    desc: hl_plugin_descriptor_t,
    name: &str,
    path: &Path,
) -> Result<Arc<Instance>, PluginError> {
    let inst = Instance::new(rt, desc, name.to_owned());
    match inst.load(path) {
        Ok(()) => {
            inst.subscribe(rt);
            Ok(inst)
        }
        Err(e) => {
            // `unload` is not called for a failed load; its queued work is dropped.
            inst.shut(Instant::now() + DROP_DEADLINE, false);
            Err(e)
        }
    }
}

/// Releases an image after its instance was shut: retired when the plugin asks for it or when
/// calls into it may still be running. Keeps the instance's memory alive for retired images
/// (a straggler may still call its services).
fn release(rt: &Handle, image: Image, desc: &hl_plugin_descriptor_t, stragglers: usize) -> bool {
    let retire = stragglers > 0 || desc.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE != 0;
    let retired = image.release(retire);
    let mut reg = lock(&rt.shared().plugins);
    if retired {
        reg.stats.images_retired += 1;
    } else {
        reg.stats.images_closed += 1;
    }
    reg.stats.stragglers += stragglers as u64;
    retired
}

/// Keeps a retired image's instance alive for good: code of that image may still run (a
/// straggler, a thread the plugin started) and call its services table, whose `host` pointer is
/// the instance. It holds the runtime only weakly, so it does not keep a freed runtime (its
/// threads and doorbell) alive; its services then answer SHUT_DOWN. A few hundred bytes each.
fn retire(inst: &Arc<Instance>) {
    static RETIRED: Mutex<Vec<Arc<Instance>>> = Mutex::new(Vec::new());
    lock(&RETIRED).push(inst.clone());
}

impl LoadedPlugin {
    /// What is loaded.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.inst.name.clone(),
            version: self.version.clone(),
            path: self.path.clone(),
            generation: self.generation,
            flags: self.inst.desc.flags,
            pending: self.inst.pending(),
        }
    }

    /// Unloads the plugin: calls its `unload` (a Rust plugin's jobs see cancellation, its
    /// simulations stop), drops its queued work unrun, waits up to `deadline` for its running
    /// calls, then releases the library. No call into the plugin can start after this returns.
    ///
    /// Off the main thread — or from inside the plugin's own main-thread code — the plugin is
    /// closed (its work dropped) but its `unload` is not called and its image is retired.
    pub fn unload(mut self, deadline: Duration) -> UnloadReport {
        self.unload_inner(deadline)
    }

    fn unload_inner(&mut self, deadline: Duration) -> UnloadReport {
        let start = Instant::now();
        let Some(image) = self.image.take() else {
            return UnloadReport::default();
        };
        let inst = self.inst.clone();
        let on_main = self.rt.is_main_thread() && inst.in_main.load(Ordering::Relaxed) == 0;
        let (dropped, stragglers) = inst.shut(start + deadline, on_main);
        let stragglers = if on_main {
            stragglers
        } else {
            stragglers.max(1)
        };
        let retired = release(&self.rt, image, &inst.desc, stragglers);
        if retired {
            retire(&inst);
        }
        let mut reg = lock(&self.rt.shared().plugins);
        reg.names.remove(&inst.name);
        reg.stats.loaded = reg.stats.loaded.saturating_sub(1);
        reg.stats.unloads += 1;
        UnloadReport {
            dropped,
            stragglers,
            retired,
            elapsed: start.elapsed(),
        }
    }

    /// Hot-reloads the plugin from `path` (usually a rebuilt library): loads the new build
    /// from a fresh copy, asks the running instance to save its state, lets its work finish or
    /// cancels it (waiting up to `deadline`), creates the new instance and restores the state
    /// into it, then unloads the old build. The plugin keeps its name and handle.
    ///
    /// # Errors
    ///
    /// If the new build cannot be loaded or cannot restore the state, or the old build's work
    /// did not stop in time, the old build keeps running (its state given back through its
    /// `restore_state`) and the error says why.
    pub fn reload(
        &mut self,
        path: impl AsRef<Path>,
        deadline: Duration,
    ) -> Result<(), PluginError> {
        let path = path.as_ref();
        self.rt.check_plugin_call(path)?;
        let old = self.inst.clone();
        if old.in_main.load(Ordering::Relaxed) > 0 || self.image.is_none() {
            return Err(PluginError::new(
                PluginErrorKind::Reentrant,
                path,
                "a plugin cannot be reloaded from inside its own callbacks",
            ));
        }
        let result = self.reload_inner(path, deadline);
        let mut reg = lock(&self.rt.shared().plugins);
        match &result {
            Ok(()) => {
                reg.stats.reloads += 1;
                reg.stats.loads += 1;
            }
            Err(_) => reg.stats.failed_reloads += 1,
        }
        result
    }

    fn reload_inner(&mut self, path: &Path, deadline: Duration) -> Result<(), PluginError> {
        let start = Instant::now();
        let old = self.inst.clone();
        let (image, desc) = open(path, true)?;
        let name = descriptor_text(desc.name);
        let version = descriptor_text(desc.version);
        if name != old.name {
            release(&self.rt, image, &desc, 0);
            return Err(PluginError::new(
                PluginErrorKind::BadDescriptor,
                path,
                format!("expected plugin {:?}, the library is {name:?}", old.name),
            ));
        }
        let state = match old.save(path) {
            Ok(s) => s,
            Err(e) => {
                release(&self.rt, image, &desc, 0);
                return Err(e);
            }
        };
        // Gives the old build back its state and intake after a failure.
        let revert = |e: PluginError| -> PluginError {
            old.gate.reopen();
            match state.as_deref().map(|s| old.restore(&self.path, s)) {
                Some(Err(again)) => PluginError::new(
                    e.kind,
                    &e.path,
                    format!(
                        "{}; and the old build could not resume: {}",
                        e.reason, again.reason
                    ),
                ),
                _ => e,
            }
        };
        let (_, running) = old.quiesce(start + deadline);
        if running > 0 {
            release(&self.rt, image, &desc, 0);
            return Err(revert(PluginError::new(
                PluginErrorKind::Timeout,
                path,
                format!("{running} calls of the old build were still running at the deadline"),
            )));
        }
        let new = match instantiate(&self.rt, desc, &name, path) {
            Ok(inst) => inst,
            Err(e) => {
                release(&self.rt, image, &desc, 0);
                return Err(revert(e));
            }
        };
        if let Some(bytes) = &state {
            if let Err(e) = new.restore(path, bytes) {
                let (_, stragglers) = new.shut(start + deadline, true);
                release(&self.rt, image, &desc, stragglers);
                return Err(revert(e));
            }
        }
        // Commit: the old build goes, the new one takes its place.
        let (_, stragglers) = old.shut(start + deadline, true);
        if let Some(old_image) = self.image.replace(image) {
            if release(&self.rt, old_image, &old.desc, stragglers) {
                retire(&old);
            }
        }
        self.inst = new;
        self.path = path.to_path_buf();
        self.version = version;
        self.generation += 1;
        Ok(())
    }
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        self.unload_inner(DROP_DEADLINE);
    }
}
