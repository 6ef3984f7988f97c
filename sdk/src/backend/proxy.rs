//! The proxy backend: a plugin's runtime, whose pool, main thread, sink and event hub are the
//! host's, reached through the `hl_plugin_services_t` table.
//!
//! Jobs keep all their state (result slot, cancel flag, progress, continuation) in the plugin's
//! memory, run by this copy of the crate. Only *where* they run is borrowed: a queued job
//! crosses as a (data, call, drop) triple whose `call` runs it on a host worker and whose `drop`
//! resolves it as cancelled; main-thread items cross the same way to the host's pump.

use crate::internal::panic::catch;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::abi::*;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::job::{JobRef, Lane, Priority};
use crate::main_thread::{Main, MainItem, MainTask};
use crate::shared::Shared;
use crate::sink::Message;

/// The host's services, as a plugin's runtime holds them.
pub(crate) struct Proxy {
    services: hl_plugin_services_t,
    /// The NUL-terminated topic of the message being emitted (main thread only).
    topic_buf: Mutex<Vec<u8>>,
    /// Main-thread items handed to the host that have not run (or been dropped) yet: this
    /// runtime's backlog, as its limit counts it.
    outstanding: AtomicUsize,
}

// SAFETY: the table is plain function pointers plus the host's opaque pointer; the header tags
// each function `[any-thread]` or `[main-thread]`, and this crate calls the main-thread ones
// (`emit`) only from main-thread code paths.
unsafe impl Send for Proxy {}
// SAFETY: as above.
unsafe impl Sync for Proxy {}

type QueuedJob = (Arc<Shared>, JobRef);
type QueuedMain = (Arc<Shared>, Option<MainItem>);

impl Proxy {
    /// Checks that the host's table has every function this crate calls, and copies it.
    ///
    /// # Safety
    ///
    /// `services` points to the host's table: at least its own `struct_size` bytes, which start
    /// with `struct_size` and `abi_version`.
    pub(crate) unsafe fn new(
        services: *const hl_plugin_services_t,
    ) -> std::result::Result<Proxy, String> {
        // SAFETY: every table starts with its u32 size (the caller's contract).
        let size = unsafe { *services.cast::<u32>() } as usize;
        let least = HL_PLUGIN_SERVICES_MIN_SIZE;
        if size < least {
            return Err(format!(
                "the host's services table is {size} bytes, this plugin needs at least {least}"
            ));
        }
        // A host of an older layout has no fields after its table's end: they stay NULL.
        let mut copy = std::mem::MaybeUninit::<hl_plugin_services_t>::zeroed();
        let have = size.min(std::mem::size_of::<hl_plugin_services_t>());
        // SAFETY: the host's table has `size >= have` bytes, `copy` room for `have`.
        unsafe {
            std::ptr::copy_nonoverlapping(services.cast::<u8>(), copy.as_mut_ptr().cast(), have)
        };
        // SAFETY: integers, a pointer and `Option`s of function pointers: all-zero is valid.
        let services = &unsafe { copy.assume_init() };
        if services.abi_version != HL_PLUGIN_ABI_VERSION {
            return Err(format!(
                "the host speaks plugin ABI {}, this plugin {HL_PLUGIN_ABI_VERSION}",
                services.abi_version
            ));
        }
        let s = services;
        if s.spawn.is_none()
            || s.post_main.is_none()
            || s.emit.is_none()
            || s.post_event.is_none()
            || s.is_main_thread.is_none()
            || s.is_worker_thread.is_none()
            || s.workers.is_none()
            || s.is_closing.is_none()
        {
            return Err("the host's services table has NULL functions".to_owned());
        }
        Ok(Proxy {
            services: *services,
            topic_buf: Mutex::new(Vec::new()),
            outstanding: AtomicUsize::new(0),
        })
    }

    fn flag(&self, f: Option<unsafe extern "C" fn(*mut c_void) -> u32>) -> u32 {
        // SAFETY: `new` checked the function is present; the host keeps `host` valid while
        // the plugin is loaded, and these functions are `[any-thread]`.
        f.map_or(0, |f| unsafe { f(self.services.host) })
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.flag(self.services.is_closing) != 0
    }

    /// The host's blob `name`: a new fd of it and its length, or `None` if the host has no such
    /// blob (or is too old to share blobs).
    #[cfg(unix)]
    pub(crate) fn blob(&self, name: &str) -> Option<(std::os::fd::OwnedFd, u64)> {
        let get = self.services.blob?;
        let name = std::ffi::CString::new(name).ok()?;
        let (mut fd, mut len) = (-1i32, 0u64);
        // SAFETY: `[any-thread]`; the name lives for the call, the outputs are ours.
        let status = unsafe { get(self.services.host, name.as_ptr(), &mut fd, &mut len) };
        if status != HL_STATUS_OK || fd < 0 {
            return None;
        }
        // SAFETY: the host made this fd for us to own.
        Some((unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }, len))
    }

    pub(crate) fn is_main_thread(&self) -> bool {
        self.flag(self.services.is_main_thread) != 0
    }

    pub(crate) fn is_worker_thread(&self) -> bool {
        self.flag(self.services.is_worker_thread) != 0
    }

    pub(crate) fn workers(&self) -> usize {
        (self.flag(self.services.workers) as usize).max(1)
    }

    /// Queues `job` on the host's pool. If the host refuses, it calls `drop_job` at once,
    /// which resolves the job as cancelled — as a local runtime does at shutdown.
    pub(crate) fn spawn(&self, shared: &Arc<Shared>, job: JobRef) {
        let lane = match job.header().lane {
            Lane::Cpu(Priority::High) => HL_PLUGIN_LANE_HIGH,
            Lane::Cpu(Priority::Normal) => HL_PLUGIN_LANE_NORMAL,
            Lane::Cpu(Priority::Low) => HL_PLUGIN_LANE_LOW,
            Lane::Cpu(Priority::Background) => HL_PLUGIN_LANE_BACKGROUND,
            Lane::Io => HL_PLUGIN_LANE_IO,
        };
        let data = Box::into_raw(Box::new((shared.clone(), job) as QueuedJob));
        if let Some(spawn) = self.services.spawn {
            // SAFETY: `spawn` is the host's `[any-thread]` function; it calls exactly one of
            // `run_job`/`drop_job` exactly once with `data`, which owns the boxed pair.
            unsafe {
                spawn(
                    self.services.host,
                    lane,
                    data.cast(),
                    Some(run_job),
                    Some(drop_job),
                )
            };
        }
    }

    /// Items handed to the host not yet run or dropped.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub(crate) fn post_main(&self, shared: &Arc<Shared>, item: MainItem) -> Result<()> {
        let Some(post) = self.services.post_main else {
            return Err(Error::ShutDown);
        };
        // Counted before the host can run it (and uncount it): `run_main`/`drop_main` undo it.
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let data = Box::into_raw(Box::new((shared.clone(), Some(item)) as QueuedMain));
        // SAFETY: as for `spawn`: exactly one of `run_main` (until it returns DONE) and
        // `drop_main` consumes `data`.
        match unsafe {
            post(
                self.services.host,
                data.cast(),
                Some(run_main),
                Some(drop_main),
            )
        } {
            HL_STATUS_OK => Ok(()),
            _ => Err(Error::ShutDown),
        }
    }

    /// Main thread: hands `msg` to the host sink. Returns whether a sink took it.
    pub(crate) fn emit(&self, msg: &Message<'_>) -> Result<bool> {
        let Some(emit) = self.services.emit else {
            return Err(Error::ShutDown);
        };
        let mut buf = lock(&self.topic_buf);
        let mut delivered = 0u32;
        let status = with_c_message(msg, &mut buf, |m| {
            // SAFETY: `m` and what it points to live for the call; `emit` is `[main-thread]`,
            // and `Main::emit` (the only caller) runs on the main thread.
            unsafe { emit(self.services.host, m, &mut delivered) }
        });
        match status {
            HL_STATUS_OK => Ok(delivered != 0),
            HL_STATUS_REENTRANT => Err(Error::Reentrant),
            HL_STATUS_WRONG_THREAD => Err(Error::WrongThread),
            HL_STATUS_INVALID_ARG => Err(Error::InvalidArgument("the host refused the message")),
            _ => Err(Error::ShutDown),
        }
    }

    pub(crate) fn post_event(&self, event: &Event) -> Result<()> {
        let Some(post) = self.services.post_event else {
            return Err(Error::ShutDown);
        };
        // SAFETY: the event and its strings live for the call; `post_event` is `[any-thread]`
        // and copies what it keeps.
        match with_c_event(event, |e| unsafe { post(self.services.host, e) }) {
            HL_STATUS_OK => Ok(()),
            HL_STATUS_BACKLOG => Err(Error::Backlog),
            HL_STATUS_INVALID_ARG | HL_STATUS_INVALID_UTF8 => {
                Err(Error::InvalidArgument("the host refused the event"))
            }
            _ => Err(Error::ShutDown),
        }
    }
}

unsafe extern "C" fn run_job(data: *mut c_void) {
    // SAFETY: `data` is the box made by `Proxy::spawn`, handed back exactly once.
    let queued = unsafe { Box::from_raw(data.cast::<QueuedJob>()) };
    // `run` catches the job's panics; this guards the bookkeeping around it.
    let _ = catch(move || {
        let (shared, job) = *queued;
        job.run(&job, &shared);
    });
}

unsafe extern "C" fn drop_job(data: *mut c_void) {
    // SAFETY: as for `run_job`.
    let queued = unsafe { Box::from_raw(data.cast::<QueuedJob>()) };
    let _ = catch(move || {
        let (shared, job) = *queued;
        job.abandon(&shared);
    });
}

unsafe extern "C" fn run_main(data: *mut c_void, budget_left_ns: u64) -> u32 {
    let slot = data.cast::<QueuedMain>();
    // SAFETY: `data` is the box made by `Proxy::post_main`; the host calls `run_main` on the
    // main thread only, never concurrently with itself or `drop_main` for the same data.
    let (shared, item) = unsafe { &mut *slot };
    let deadline = Instant::now() + Duration::from_nanos(budget_left_ns);
    let handle = Handle::from_shared(shared.clone());
    let next = match item.take() {
        Some(item) => catch(|| {
            let mut main = Main::new(&handle, deadline);
            match item {
                MainItem::Task(task) => task.run(&mut main).map(MainItem::Task),
                MainItem::Progress(job) => {
                    job.deliver_progress(&mut main);
                    None
                }
            }
        })
        .unwrap_or_else(|_| {
            shared.stats.record_main_panic();
            None
        }),
        None => None,
    };
    match next {
        Some(more) => {
            *item = Some(more);
            HL_STEP_CONTINUE
        }
        None => {
            uncount(shared);
            // SAFETY: done: the box is consumed here, once.
            let queued = unsafe { Box::from_raw(slot) };
            let _ = catch(move || drop(queued));
            HL_STEP_DONE
        }
    }
}

/// One of this runtime's main-thread items is done with.
fn uncount(shared: &Shared) {
    if let Backend::Proxy(p) = &shared.backend {
        p.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn drop_main(data: *mut c_void) {
    // SAFETY: as for `run_main`; `drop_main` is the last use of `data`.
    let queued = unsafe { Box::from_raw(data.cast::<QueuedMain>()) };
    let _ = catch(move || {
        let (shared, item) = *queued;
        uncount(&shared);
        match item {
            // The job outlives this item: release its callbacks now, as a local shutdown does.
            Some(MainItem::Task(MainTask::Deliver(job))) | Some(MainItem::Progress(job)) => {
                job.release_callbacks()
            }
            other => drop(other),
        }
    });
}
