//! The runtime: its [`Builder`], the [`Runtime`] that owns shutdown, and shutdown itself. The
//! top of the crate: nothing but `lib.rs` imports this file.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Local};
use crate::handle::Handle;
use crate::internal::doorbell::Doorbell;
use crate::internal::scheduler::Scheduler;
use crate::internal::sync::lock;
use crate::shared::Shared;

/// Configures and builds a [`Runtime`].
///
/// # Examples
///
/// ```
/// let rt = hostloop::Runtime::builder().workers(2).io_threads(1).build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a Builder does nothing until `build` is called"]
pub struct Builder {
    workers: Option<usize>,
    io_threads: usize,
    thread_name: String,
    stack_size: Option<usize>,
    call_timeout: Duration,
    drop_deadline: Duration,
    request_pump: Option<Arc<dyn Fn() + Send + Sync>>,
    backlog_items: usize,
    backlog_bytes: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("io_threads", &self.io_threads)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            workers: None,
            io_threads: 2,
            thread_name: "hostloop".to_owned(),
            stack_size: None,
            call_timeout: Duration::from_secs(2),
            drop_deadline: Duration::from_secs(2),
            request_pump: None,
            backlog_items: crate::main_thread::DEFAULT_MAIN_BACKLOG_LIMIT,
            backlog_bytes: crate::main_thread::DEFAULT_MAIN_BACKLOG_BYTES,
        }
    }
}

impl Builder {
    /// CPU worker threads. Default: available cores − 1 (the main thread keeps a core), at least
    /// 1. Hosts pass their own thread setting here (Maya `threadCount`, `HOUDINI_MAX_THREADS`).
    ///
    /// At most [`MAX_WORKERS`] (1024): a larger count is almost always a host setting gone wrong
    /// (a negative "all but N" count cast to unsigned), and [`build`](Builder::build) refuses it
    /// rather than trying to start millions of threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Threads of the IO lane, for blocking work (default 2, at least 1, at most
    /// [`MAX_WORKERS`]).
    pub fn io_threads(mut self, n: usize) -> Self {
        self.io_threads = n.max(1);
        self
    }

    /// Prefix of thread names: `<prefix>-worker-<i>`, `<prefix>-io-<i>` (default `hostloop`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Stack size of every runtime thread, in bytes (default: the platform's).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// How long [`Handle::call_on_main`] waits for a pump before
    /// [`Error::HostBusy`](crate::Error::HostBusy) (default 2 s).
    pub fn call_on_main_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The deadline `Drop` gives [`Runtime::shutdown`] (default 2 s).
    pub fn drop_deadline(mut self, deadline: Duration) -> Self {
        self.drop_deadline = deadline;
        self
    }

    /// The most main-thread items that may wait for a pump (default 1,048,576, at least 1):
    /// while the host does not pump (a modal dialog, a long save, a breakpoint), producers that
    /// can be told to wait — `post`, `post_chunked`, `call_on_main` from another thread,
    /// `post_event`, `emit` from another thread, `spawn` — get
    /// [`Error::Backlog`](crate::Error::Backlog) instead of growing memory without bound, and
    /// [`Stats::main_refused`](crate::Stats::main_refused) counts them. What the API already
    /// promised is never refused (the continuations of jobs already spawned, progress,
    /// simulation frames, stream items), so the backlog may pass the limit by the work already
    /// under way when it was reached. [`QueueDepths::main`](crate::QueueDepths::main) is the
    /// backlog, for a host to show "N results waiting".
    pub fn main_backlog_limit(mut self, items: usize) -> Self {
        self.backlog_items = items.max(1);
        self
    }

    /// The most bytes of payloads sent with [`Handle::emit`] (from another thread) that may wait
    /// for a pump (default 256 MiB, at least 1); past it `emit` returns
    /// [`Error::Backlog`](crate::Error::Backlog), as for
    /// [`main_backlog_limit`](Builder::main_backlog_limit).
    pub fn main_backlog_bytes(mut self, bytes: usize) -> Self {
        self.backlog_bytes = bytes.max(1);
        self
    }

    /// A callback asked to schedule a pump, for host loops without fd watching (Windows message
    /// loops, Blender timers). Called from any thread, coalesced exactly like the doorbell fd:
    /// once per empty → non-empty transition of the main queue.
    pub fn request_pump<F>(mut self, f: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.request_pump = Some(Arc::new(f));
        self
    }

    /// Starts the worker and IO threads. The calling thread becomes the runtime's main thread.
    ///
    /// # Errors
    ///
    /// An error of kind [`InvalidInput`](std::io::ErrorKind::InvalidInput) wrapping
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if
    /// [`workers`](Builder::workers) or [`io_threads`](Builder::io_threads) is above
    /// [`MAX_WORKERS`] (nothing is started); the OS error if the doorbell cannot be created or a
    /// thread cannot be spawned.
    ///
    /// ```
    /// let err = hostloop::Runtime::builder().workers(u32::MAX as usize).build().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn build(self) -> std::io::Result<Runtime> {
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1)
        });
        // Before any of the runtime's code can catch a panic (see `internal::panic`).
        crate::internal::panic::install();
        if workers > MAX_WORKERS {
            return Err(invalid(TOO_MANY_WORKERS));
        }
        if self.io_threads > MAX_WORKERS {
            return Err(invalid(TOO_MANY_IO_THREADS));
        }
        let (scheduler, deques) = Scheduler::new(workers, self.io_threads);
        let doorbell = Doorbell::new()?;
        doorbell.set_request_pump(self.request_pump.clone());
        let shared = Arc::new(Shared::new(
            Backend::Local(Local::new(scheduler)),
            doorbell,
            self.call_timeout,
        ));
        let limits = &shared.main.limits;
        limits
            .items
            .store(self.backlog_items, std::sync::atomic::Ordering::Relaxed);
        limits
            .bytes
            .store(self.backlog_bytes, std::sync::atomic::Ordering::Relaxed);
        let runtime = Runtime {
            handle: Handle::from_shared(shared.clone()),
            drop_deadline: self.drop_deadline,
            report: Mutex::new(None),
        };
        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            let mut b = std::thread::Builder::new().name(name);
            if let Some(size) = self.stack_size {
                b = b.stack_size(size);
            }
            b.spawn(body)
        };
        Local::start(&shared, deques, &self.thread_name, &spawn)?;
        // If a spawn above failed, dropping `runtime` shuts down the threads already started.
        Ok(runtime)
    }
}

/// The most CPU workers (and, separately, IO threads) a runtime starts: 1024.
///
/// One rule on every machine, so that a host setting is accepted or refused the same way
/// everywhere: 1024 is 4 threads per core up to 256 cores, beyond which more threads only cost
/// memory and start-up time. [`Builder::build`] (and `hl_runtime_new` in C) refuses larger counts
/// with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
pub const MAX_WORKERS: usize = crate::internal::scheduler::MAX_WORKERS;

const TOO_MANY_WORKERS: &str = "workers must be at most 1024 (hostloop::MAX_WORKERS)";
const TOO_MANY_IO_THREADS: &str = "io_threads must be at most 1024 (hostloop::MAX_WORKERS)";

/// `what` as the I/O error `build` returns for a bad setting.
fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        crate::Error::InvalidArgument(what),
    )
}

/// A job still running when the shutdown deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Straggler {
    pub id: u64,
    pub name: Option<String>,
    /// How long it had been running at the deadline.
    pub age: Duration,
}

/// What [`Runtime::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Queued jobs that were cancelled without running.
    pub cancelled_queued: usize,
    /// Jobs that were running when shutdown began (asked to cancel).
    pub cancelled_running: usize,
    /// Jobs still running at the deadline. Their threads are detached, not joined.
    pub stragglers: Vec<Straggler>,
    /// Runtime threads that exited and were joined.
    pub threads_joined: usize,
    /// Main-thread items dropped without running.
    pub main_items_dropped: usize,
    /// How long shutdown took.
    pub elapsed: Duration,
}

/// The hostloop runtime: a worker pool, an IO lane, and a main-thread queue drained by `pump`.
///
/// The thread that builds it is the main thread. A `Runtime` does everything a [`Handle`] does
/// (it dereferences to one) and also owns shutdown: dropping it shuts down with the builder's
/// drop deadline.
pub struct Runtime {
    handle: Handle,
    drop_deadline: Duration,
    report: Mutex<Option<ShutdownReport>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Runtime {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Runtime {
    /// A [`Builder`] with default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A runtime with default settings.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> std::io::Result<Runtime> {
        Builder::default().build()
    }

    /// A cloneable handle to this runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Shuts down within `deadline`: stops intake (later spawns and posts return
    /// [`Error::ShutDown`](crate::Error::ShutDown)), cancels every job (queued ones never run), drops queued main-thread
    /// items, and joins the runtime's threads. Threads still running a job at the deadline — a
    /// job that ignores cancellation — are detached and reported as stragglers, so shutdown
    /// never hangs the host.
    ///
    /// Calling it again returns the first call's report.
    pub fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let mut done = lock(&self.report);
        if let Some(report) = &*done {
            return report.clone();
        }
        let report = shutdown(self.handle.shared(), deadline);
        *done = Some(report.clone());
        report
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(self.drop_deadline);
    }
}

fn shutdown(shared: &Arc<Shared>, deadline: Duration) -> ShutdownReport {
    let start = Instant::now();
    let until = start + deadline;
    shared.life.begin();
    // Worker processes end within the deadline (asked to quit, terminated, then killed),
    // while this process's threads stop; their end is waited for last.
    #[cfg(unix)]
    let workers = shared.workers.begin_shutdown(shared, until);
    let mut report = ShutdownReport::default();
    if let Some(local) = shared.backend.local() {
        let sched = &local.scheduler;
        report.cancelled_running = sched
            .slots
            .iter()
            .filter(|s| s.with_current(sched.epoch, |_, _| ()).is_some())
            .count();
        // Cancel what never ran, on this thread, while the workers do the same (both count).
        local.abandon_queued(shared);
        sched.terminate();
        sched.wait_exited(until);
        report.cancelled_queued = shared.life.cancelled_count();
        for (i, h) in local.take_threads().into_iter().enumerate() {
            if sched.slots[i]
                .exited
                .load(std::sync::atomic::Ordering::Acquire)
            {
                if h.join().is_ok() {
                    report.threads_joined += 1;
                }
            } else {
                let straggler = sched.slots[i].with_current(sched.epoch, |h, age| Straggler {
                    id: h.id,
                    name: h.name.as_deref().map(str::to_owned),
                    age,
                });
                report.stragglers.extend(straggler);
                // Dropping the JoinHandle detaches the thread; it exits when its job returns.
            }
        }
    }
    // A captured value's `Drop` may panic; the host still gets its report (each is caught).
    report.main_items_dropped += shared.main.release_all();
    shared.latest.clear();
    if report.main_items_dropped >= crate::main_thread::TRIM_AFTER {
        // A large backlog was dropped: its memory goes back to the system, not at the next
        // runtime's mercy.
        crate::main_thread::trim();
    }
    #[cfg(unix)]
    if let Some(w) = workers {
        w.wait(until);
    }
    report.elapsed = start.elapsed();
    report
}
