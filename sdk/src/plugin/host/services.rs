//! The services table a plugin calls (`hl_plugin_services_t`) and the host-side [`Instance`]
//! behind it: the per-plugin queues that account for every triple the plugin hands over, the
//! gate that closes them at unload, and the calls into the plugin's descriptor.

use crate::internal::panic::catch;
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::error::{PluginError, PluginErrorKind};
use crate::abi::*;
use crate::event::{EventFilter, Subscription};
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::job::{Lane, Priority};
use crate::main_thread::{Main, Step};
use crate::plugin::gate::{Gate, Pass};

/// A triple for a worker.
pub(super) struct Foreign {
    pub(super) data: *mut c_void,
    pub(super) call: unsafe extern "C" fn(*mut c_void),
    pub(super) drop: unsafe extern "C" fn(*mut c_void),
}

/// A triple for the main thread.
pub(super) struct ForeignMain {
    pub(super) data: *mut c_void,
    pub(super) call: unsafe extern "C" fn(*mut c_void, u64) -> u32,
    pub(super) drop: unsafe extern "C" fn(*mut c_void),
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

pub(super) const LANES: usize = 5;

pub(super) fn lane_of(code: u32) -> Option<Lane> {
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
pub(super) struct Instance {
    pub(super) me: Weak<Instance>,
    /// The runtime, weakly: a retired instance outlives it (see `retire`).
    pub(super) shared: Weak<crate::shared::Shared>,
    pub(super) desc: hl_plugin_descriptor_t,
    pub(super) name: String,
    pub(super) services: hl_plugin_services_t,
    /// The plugin's `void *instance`.
    pub(super) instance: AtomicPtr<c_void>,
    /// Counts service calls and wrappers under way; closed at unload (see `crate::plugin::gate`).
    pub(super) gate: Gate,
    pub(super) lanes: [(Sender<Foreign>, Receiver<Foreign>); LANES],
    pub(super) main_q: (Sender<ForeignMain>, Receiver<ForeignMain>),
    /// A main-thread triple that asked to continue.
    pub(super) main_carry: Mutex<Option<ForeignMain>>,
    /// Depth of the plugin's main-thread code on the main thread's stack.
    pub(super) in_main: AtomicUsize,
    pub(super) subscription: Mutex<Option<Subscription>>,
    /// Leases the host holds on the plugin's frames ([`PluginLease`]): while any is held at
    /// unload or reload, the image stays mapped for good.
    pub(super) leases: AtomicUsize,
}

// SAFETY: the raw pointers are the plugin's `instance` (passed back to its `[main-thread]`
// callbacks on the main thread only) and `services.host` (this instance's own address); the
// descriptor is static plugin data. Everything else is `Send + Sync`.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// Marks the plugin's main-thread code as on the stack (for reentrancy checks).
pub(super) struct InMain<'a>(&'a Instance);

impl<'a> InMain<'a> {
    pub(super) fn enter(inst: &'a Instance) -> Self {
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
pub(super) struct Pop {
    pub(super) inst: Arc<Instance>,
    pub(super) lane: usize,
    pub(super) done: bool,
}

impl Pop {
    pub(super) fn run(mut self) {
        self.done = true;
        self.pop(true);
    }

    pub(super) fn pop(&self, call: bool) {
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
pub(super) unsafe fn instance<'a>(host: *mut c_void) -> &'a Instance {
    // SAFETY: per this function's contract.
    unsafe { &*host.cast::<Instance>() }
}

/// Runs a service body with panics caught (a panic becomes `HL_STATUS_PANIC`).
pub(super) fn service(body: impl FnOnce() -> hl_status_t) -> hl_status_t {
    catch(body).unwrap_or(HL_STATUS_PANIC)
}

/// Parks a triple in one of the instance's queues, through the gate. Returns the pass (keep it
/// until the wrapper is queued), the runtime and the instance; a refused triple is dropped
/// (its `drop` called) and the status says why.
pub(super) fn park<'a, T>(
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

pub(super) unsafe extern "C" fn svc_spawn(
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

pub(super) unsafe extern "C" fn svc_post_main(
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
        // unload. (The plugin's runtime applies the backlog limit to what it posts: this is
        // its delivery, and may hold a job's continuation, which is never refused.)
        let _ = crate::main_thread::post_task(
            rt.shared(),
            crate::main_thread::MainTask::Chunked(Box::new(move |main| me.run_main_one(main))),
        );
        HL_STATUS_OK
    })
}

pub(super) unsafe extern "C" fn svc_emit(
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
        let mut msg = match unsafe { message_from_c(&*message) } {
            Ok(m) => m,
            Err(e) => return e.status,
        };
        // SAFETY: as above; its lender too.
        let lender = unsafe { crate::abi::lender_of(&*message) }.and_then(|l| {
            Some(PluginLender {
                lender: l,
                inst: inst.me.upgrade()?,
            })
        });
        msg.lender = lender.as_ref().map(|l| l as &dyn crate::sink::Lend);
        match rt.shared().backend.emit(rt.shared(), &msg) {
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

pub(super) unsafe extern "C" fn svc_post_event(
    host: *mut c_void,
    event: *const hl_event_t,
) -> hl_status_t {
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

pub(super) unsafe extern "C" fn svc_is_main_thread(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    u32::from(inst.rt().is_some_and(|rt| rt.is_main_thread()))
}

pub(super) unsafe extern "C" fn svc_is_worker_thread(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    u32::from(inst.rt().is_some_and(|rt| rt.is_worker_thread()))
}

pub(super) unsafe extern "C" fn svc_workers(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    inst.rt()
        .map_or(1, |rt| u32::try_from(rt.workers()).unwrap_or(u32::MAX))
}

pub(super) unsafe extern "C" fn svc_blob(
    host: *mut c_void,
    name: *const std::ffi::c_char,
    fd: *mut i32,
    len: *mut u64,
) -> hl_status_t {
    service(|| {
        if fd.is_null() || len.is_null() {
            return HL_STATUS_NULL_ARG;
        }
        // SAFETY: the plugin passes a NUL-terminated name or NULL (checked by `utf8`).
        let name = match unsafe { utf8(name, "name") } {
            Ok(n) => n,
            Err(e) => return e.status,
        };
        // SAFETY: `host` is the instance of this table, alive while the plugin can call it.
        let inst = unsafe { instance(host) };
        let Some(blob) = inst.rt().and_then(|rt| rt.blob(name)) else {
            return HL_STATUS_INVALID_ARG;
        };
        #[cfg(unix)]
        match blob.dup_fd() {
            Ok(owned) => {
                // SAFETY: both outputs are non-NULL (checked) and the plugin's to write.
                unsafe {
                    *fd = std::os::fd::IntoRawFd::into_raw_fd(owned);
                    *len = blob.len() as u64;
                }
                HL_STATUS_OK
            }
            Err(_) => HL_STATUS_OS,
        }
        #[cfg(not(unix))]
        HL_STATUS_INVALID_ARG
    })
}

pub(super) unsafe extern "C" fn svc_is_closing(host: *mut c_void) -> u32 {
    // SAFETY: `host` is ours, per the ABI.
    let inst = unsafe { instance(host) };
    u32::from(inst.gate.is_closing())
}

/// Collects `save_state`'s bytes.
pub(super) unsafe extern "C" fn write_to_vec(out: *mut c_void, bytes_ptr: *const u8, len: usize) {
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

pub(super) const ERROR_LEN: usize = 1024;

pub(super) fn c_error_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Instance {
    pub(super) fn new(rt: &Handle, desc: hl_plugin_descriptor_t, name: String) -> Arc<Instance> {
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
                blob: Some(svc_blob),
            },
            instance: AtomicPtr::new(std::ptr::null_mut()),
            gate: Gate::new(),
            lanes: std::array::from_fn(|_| crossbeam_channel::unbounded()),
            main_q: crossbeam_channel::unbounded(),
            main_carry: Mutex::new(None),
            in_main: AtomicUsize::new(0),
            subscription: Mutex::new(None),
            leases: AtomicUsize::new(0),
        })
    }

    /// The runtime, unless it is gone (only a retired instance outlives it).
    pub(super) fn rt(&self) -> Option<Handle> {
        self.shared.upgrade().map(Handle::from_shared)
    }

    pub(super) fn ptr(&self) -> *mut c_void {
        self.instance.load(Ordering::Acquire)
    }

    /// Main thread, from the host's pump: runs one of the plugin's main-thread triples.
    pub(super) fn run_main_one(&self, main: &mut Main<'_>) -> Step {
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
    pub(super) fn load(&self, path: &Path) -> Result<(), PluginError> {
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

    pub(super) fn subscribe(self: &Arc<Self>, rt: &Handle) {
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
    pub(super) fn save(&self, path: &Path) -> Result<Option<Vec<u8>>, PluginError> {
        self.save_with(path, self.desc.save_state)
    }

    /// Main thread: `checkpoint_state` (a save that does not suspend the plugin) into bytes, or
    /// `save_state` for a plugin built before checkpoints existed.
    #[cfg(unix)]
    pub(super) fn checkpoint(&self, path: &Path) -> Result<Option<Vec<u8>>, PluginError> {
        self.save_with(path, self.desc.checkpoint_state.or(self.desc.save_state))
    }

    fn save_with(
        &self,
        path: &Path,
        save: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, hl_write_fn) -> hl_status_t>,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let Some(save) = save else {
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
    pub(super) fn restore(&self, path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
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
    pub(super) fn drain(&self) -> usize {
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
    pub(super) fn quiesce(&self, deadline: Instant) -> (usize, usize) {
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
    pub(super) fn parked(&self) -> usize {
        self.lanes.iter().map(|(_, rx)| rx.len()).sum::<usize>()
            + self.main_q.1.len()
            + usize::from(lock(&self.main_carry).is_some())
    }

    /// Main thread: the plugin's `unload`, then `quiesce`. Returns (dropped, still running).
    pub(super) fn shut(&self, deadline: Instant, call_unload: bool) -> (usize, usize) {
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

    pub(super) fn pending(&self) -> usize {
        self.parked() + self.gate.running()
    }
}

pub(super) fn status_label(status: hl_status_t) -> String {
    match status {
        HL_STATUS_PANIC => "panicked".to_owned(),
        HL_STATUS_FAILED => "failed".to_owned(),
        other => format!("status {other}"),
    }
}

/// A loaded plugin's `run_task`, callable from any thread (a worker process's task threads).
/// It keeps the instance's bookkeeping alive; the caller keeps the plugin loaded while it runs.
#[cfg(unix)]
pub(crate) struct TaskRunner {
    run: RunTaskFn,
    inst: Arc<Instance>,
}

#[cfg(unix)]
type RunTaskFn = unsafe extern "C" fn(
    *mut c_void,
    *const std::ffi::c_char,
    *const u8,
    usize,
    *const hl_task_ctx_t,
    *mut c_void,
    hl_write_fn,
    *mut std::ffi::c_char,
    usize,
) -> hl_status_t;

// SAFETY: `run_task` is `[any-thread]` by the ABI; the instance pointer is only passed to it.
#[cfg(unix)]
unsafe impl Send for TaskRunner {}

#[cfg(unix)]
struct TaskCtx<'a> {
    cancelled: &'a std::sync::atomic::AtomicBool,
    progress: &'a mut dyn FnMut(f32),
}

#[cfg(unix)]
unsafe extern "C" fn task_cancelled(ctx: *mut c_void) -> u32 {
    // SAFETY: the `TaskCtx` of the running `TaskRunner::run`.
    let ctx = unsafe { &*ctx.cast::<TaskCtx<'_>>() };
    u32::from(ctx.cancelled.load(Ordering::Acquire))
}

#[cfg(unix)]
unsafe extern "C" fn task_progress(ctx: *mut c_void, fraction: f32) {
    // SAFETY: as above; the plugin calls it from the task's own thread.
    let ctx = unsafe { &mut *ctx.cast::<TaskCtx<'_>>() };
    let _ = catch(|| (ctx.progress)(fraction));
}

#[cfg(unix)]
impl TaskRunner {
    pub(super) fn new(inst: &Arc<Instance>) -> Option<TaskRunner> {
        Some(TaskRunner {
            run: inst.desc.run_task?,
            inst: inst.clone(),
        })
    }

    /// Runs task `name`; `Err((status, reason))` when it failed.
    pub(crate) fn run(
        &self,
        name: &str,
        input: &[u8],
        cancelled: &std::sync::atomic::AtomicBool,
        progress: &mut dyn FnMut(f32),
    ) -> Result<Vec<u8>, (hl_status_t, String)> {
        let name = std::ffi::CString::new(name).map_err(|_| {
            (
                HL_STATUS_INVALID_ARG,
                "a task name with a NUL byte".to_owned(),
            )
        })?;
        let mut ctx = TaskCtx {
            cancelled,
            progress,
        };
        let c = hl_task_ctx_t {
            struct_size: std::mem::size_of::<hl_task_ctx_t>() as u32,
            reserved: 0,
            ctx: (&mut ctx as *mut TaskCtx<'_>).cast(),
            cancelled: Some(task_cancelled),
            progress: Some(task_progress),
        };
        let mut out: Vec<u8> = Vec::new();
        let mut err = [0u8; ERROR_LEN];
        // SAFETY: the plugin's `[any-thread]` `run_task` with its instance; every pointer lives
        // for the call.
        let status = unsafe {
            (self.run)(
                self.inst.ptr(),
                name.as_ptr(),
                input.as_ptr(),
                input.len(),
                &c,
                (&mut out as *mut Vec<u8>).cast(),
                Some(write_to_vec),
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        match status {
            HL_STATUS_OK => Ok(out),
            s => Err((s, c_error_text(&err))),
        }
    }
}

/// A plugin's lender, seen from the host: a lease keeps the plugin's memory through its
/// `retain`/`release` and is counted in the instance's `leases`: an unload or reload does not
/// wait for it, but a library still lent out then stays mapped (its `release` is its code).
struct PluginLender {
    lender: crate::abi::hl_lender_t,
    inst: Arc<Instance>,
}

// SAFETY: `retain` is only called during the sink call on the main thread (where `lend` runs);
// the ABI makes `release` callable from any thread.
unsafe impl Sync for PluginLender {}

impl crate::sink::Lend for PluginLender {
    fn lend(&self) -> Option<Box<dyn Send + Sync>> {
        let release = self.lender.release?;
        let pass = self.inst.gate.enter();
        if pass.closing() {
            // Unloading: do not hold it up; the sink copies instead.
            return None;
        }
        // SAFETY: called during the sink call of the message this lender came with.
        let token = unsafe { crate::abi::lender_retain(&self.lender) };
        if token.is_null() {
            return None;
        }
        // Counted before the pass leaves, so an unload (which closes the gate, then waits for
        // passes) sees every lease made before its close.
        self.inst.leases.fetch_add(1, Ordering::AcqRel);
        drop(pass);
        Some(Box::new(PluginLease {
            release,
            token,
            inst: self.inst.clone(),
        }))
    }
}

/// A token from a plugin's `retain`, released (and the gate left) when dropped.
struct PluginLease {
    release: unsafe extern "C" fn(token: *mut c_void),
    token: *mut c_void,
    inst: Arc<Instance>,
}

// SAFETY: the token is only handed back to `release`, which the ABI makes `[any-thread]`.
unsafe impl Send for PluginLease {}
// SAFETY: as above; nothing is reachable through `&PluginLease`.
unsafe impl Sync for PluginLease {}

impl Drop for PluginLease {
    fn drop(&mut self) {
        let (release, token) = (self.release, self.token);
        // SAFETY: a token from `retain`, released once; a library with leases out is never
        // unmapped (`release_shut`), so `release` is still its code.
        let _ = crate::internal::panic::catch(|| unsafe { release(token) });
        self.inst.leases.fetch_sub(1, Ordering::AcqRel);
    }
}
