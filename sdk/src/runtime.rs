//! The runtime: its builder, the shared state, the cloneable [`Handle`], and shutdown.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::internal::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::job::{Job, JobBuilder, JobContext, JobGroup, JobHeader, JobRef, Priority};
use crate::main_thread::{Main, MainTask, PumpState};
use crate::internal::scheduler::{self, Scheduler};
use crate::internal::stats::{QueueDepths, Stats, StatsCore, WorkerStats};
use crate::stream::StreamSender;
use crate::internal::sync::lock;

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
        }
    }
}

impl Builder {
    /// CPU worker threads. Default: available cores − 1 (the main thread keeps a core), at least
    /// 1. Hosts pass their own thread setting here (Maya `threadCount`, `HOUDINI_MAX_THREADS`).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Threads of the IO lane, for blocking work (default 2, at least 1).
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

    /// How long [`Handle::call_on_main`] waits for a pump before [`Error::HostBusy`]
    /// (default 2 s).
    pub fn call_on_main_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The deadline `Drop` gives [`Runtime::shutdown`] (default 2 s).
    pub fn drop_deadline(mut self, deadline: Duration) -> Self {
        self.drop_deadline = deadline;
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
    /// The OS error if the doorbell cannot be created or a thread cannot be spawned.
    pub fn build(self) -> std::io::Result<Runtime> {
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1)
        });
        let io_threads = self.io_threads;
        let (scheduler, deques) = Scheduler::new(workers, io_threads);
        let doorbell = Doorbell::new()?;
        doorbell.set_request_pump(self.request_pump.clone());
        let shared = Arc::new(Shared::new(
            scheduler,
            doorbell,
            std::thread::current().id(),
            io_threads,
            self.call_timeout,
            None,
        ));
        let runtime = Runtime {
            handle: Handle {
                shared: shared.clone(),
            },
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
        for (index, deque) in deques.into_iter().enumerate() {
            let s = shared.clone();
            let h = spawn(
                format!("{}-worker-{index}", self.thread_name),
                Box::new(move || scheduler::worker_main(s, index, deque)),
            )?;
            lock(&shared.threads).push(h);
        }
        for i in 0..io_threads {
            let s = shared.clone();
            let index = workers + i;
            let h = spawn(
                format!("{}-io-{i}", self.thread_name),
                Box::new(move || scheduler::io_main(s, index)),
            )?;
            lock(&shared.threads).push(h);
        }
        // If a spawn above failed, dropping `runtime` shuts down the threads already started.
        Ok(runtime)
    }
}

/// State shared by the runtime, its handles, its threads and its jobs.
pub(crate) struct Shared {
    pub(crate) scheduler: Scheduler,
    main_tx: Sender<MainTask>,
    pub(crate) main_rx: Receiver<MainTask>,
    progress_tx: Sender<JobRef>,
    pub(crate) progress_rx: Receiver<JobRef>,
    pub(crate) doorbell: Doorbell,
    main_thread: ThreadId,
    pub(crate) in_pump: AtomicBool,
    pub(crate) pump_state: Mutex<PumpState>,
    shutting_down: AtomicBool,
    /// Queued jobs resolved as cancelled without running because of shutdown, by whichever
    /// thread took them (the shutting-down thread's sweep, a worker, a racing spawn).
    pub(crate) cancelled_at_shutdown: AtomicUsize,
    /// Dropped at shutdown, which disconnects `shutdown_signal` and wakes blocked senders.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    pub(crate) shutdown_signal: Receiver<()>,
    latest: Mutex<HashMap<String, std::sync::Weak<dyn crate::job::JobCore>>>,
    pub(crate) stats: StatsCore,
    exited: Mutex<usize>,
    exited_cv: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    io_threads: usize,
    pub(crate) call_timeout: Duration,
    /// When the runtime was built: the zero of the threads' busy-time clocks.
    pub(crate) epoch: Instant,
    pub(crate) sink: Mutex<Option<crate::sink::Sink>>,
    /// Bumped by every `set_sink`, so a sink replaced while it runs is not put back.
    pub(crate) sink_generation: std::sync::atomic::AtomicU64,
    in_sink: AtomicBool,
    pub(crate) events: crate::event::Events,
    /// Inside a plugin: the host's runtime, reached through its services table. Jobs, main
    /// thread items, the sink and host events go there; this runtime has no threads of its own.
    pub(crate) remote: Option<crate::plugin::guest::Remote>,
    /// Simulation driver threads hold a clone; all gone = every driver has exited. Used by a
    /// plugin's shutdown, which must not return while a driver still runs the plugin's code.
    sim_exit_tx: Mutex<Option<Sender<()>>>,
    sim_exit_rx: Receiver<()>,
    sim_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Plugins loaded into this runtime (host side).
    pub(crate) plugins: Mutex<crate::plugin::host::Registry>,
}

impl Shared {
    fn new(
        scheduler: Scheduler,
        doorbell: Doorbell,
        main_thread: ThreadId,
        io_threads: usize,
        call_timeout: Duration,
        remote: Option<crate::plugin::guest::Remote>,
    ) -> Shared {
        let (main_tx, main_rx) = crossbeam_channel::unbounded();
        let (progress_tx, progress_rx) = crossbeam_channel::unbounded();
        let (shutdown_tx, shutdown_signal) = crossbeam_channel::bounded(0);
        let (sim_exit_tx, sim_exit_rx) = crossbeam_channel::bounded(0);
        Shared {
            scheduler,
            main_tx,
            main_rx,
            progress_tx,
            progress_rx,
            doorbell,
            main_thread,
            in_pump: AtomicBool::new(false),
            pump_state: Mutex::new(PumpState::default()),
            shutting_down: AtomicBool::new(false),
            cancelled_at_shutdown: AtomicUsize::new(0),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            shutdown_signal,
            latest: Mutex::new(HashMap::new()),
            stats: StatsCore::new(),
            exited: Mutex::new(0),
            exited_cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            io_threads,
            call_timeout,
            epoch: Instant::now(),
            sink: Mutex::new(None),
            sink_generation: Default::default(),
            in_sink: AtomicBool::new(false),
            events: Default::default(),
            remote,
            sim_exit_tx: Mutex::new(Some(sim_exit_tx)),
            sim_exit_rx,
            sim_threads: Mutex::new(Vec::new()),
            plugins: Mutex::new(Default::default()),
        }
    }

    /// The runtime a plugin sees: no threads, everything routed to the host through `remote`.
    /// Built on the host's main thread (plugins are loaded there).
    pub(crate) fn new_remote(remote: crate::plugin::guest::Remote) -> std::io::Result<Arc<Shared>> {
        let (scheduler, _deques) = Scheduler::new(1, 0);
        Ok(Arc::new(Shared::new(
            scheduler,
            Doorbell::new()?,
            std::thread::current().id(),
            0,
            Duration::from_secs(2),
            Some(remote),
        )))
    }

    /// A simulation driver thread: `tx` is dropped when the driver ends; a plugin's runtime
    /// keeps the thread to join it at unload.
    pub(crate) fn sim_exit_token(&self) -> Option<Sender<()>> {
        lock(&self.sim_exit_tx).clone()
    }

    pub(crate) fn keep_sim_thread(&self, thread: JoinHandle<()>) {
        if self.remote.is_some() {
            let mut threads = lock(&self.sim_threads);
            threads.retain(|t| !t.is_finished());
            threads.push(thread);
        }
    }

    /// Shuts down a plugin's runtime (at unload): later spawns and posts fail, running jobs see
    /// cancellation, blocked stream senders wake, and simulation drivers exit; waits for them
    /// until `deadline` and returns how many were still running then.
    pub(crate) fn shutdown_remote(&self, deadline: Instant) -> usize {
        self.shutting_down.store(true, Ordering::Release);
        drop(lock(&self.shutdown_tx).take());
        drop(lock(&self.sim_exit_tx).take());
        // Disconnected once every driver's token is dropped, i.e. every driver has returned
        // from its loop (what is left of its thread is the exit path: joined below).
        let all_returned = matches!(
            self.sim_exit_rx.recv_deadline(deadline),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        let threads = std::mem::take(&mut *lock(&self.sim_threads));
        let mut running = 0;
        for t in threads {
            if all_returned || t.is_finished() {
                let _ = t.join();
            } else {
                running += 1;
            }
        }
        lock(&self.latest).clear();
        running
    }

    pub(crate) fn is_worker_thread(&self) -> bool {
        match &self.remote {
            Some(r) => r.is_worker_thread(),
            None => self.scheduler.is_own_worker(),
        }
    }

    pub(crate) fn workers(&self) -> usize {
        match &self.remote {
            Some(r) => r.workers(),
            None => self.scheduler.workers,
        }
    }
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
            || self.remote.as_ref().is_some_and(|r| r.is_closing())
    }

    pub(crate) fn is_main_thread(&self) -> bool {
        match &self.remote {
            Some(r) => r.is_main_thread(),
            None => std::thread::current().id() == self.main_thread,
        }
    }

    pub(crate) fn main_thread(&self) -> ThreadId {
        self.main_thread
    }

    pub(crate) fn submit(self: &Arc<Self>, job: JobRef) {
        if let Some(remote) = &self.remote {
            remote.spawn(self, job);
            return;
        }
        self.scheduler.submit(job);
        // A spawn racing with shutdown: either shutdown's sweep (after its flag store and
        // fence) sees this job, or this load sees the flag and the sweep is done here, so a
        // job never sits forever in a queue no thread will ever read again.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.shutting_down.load(Ordering::Relaxed) {
            self.abandon_queued();
        }
    }

    /// Resolves every queued job as cancelled, on the calling thread (counted in
    /// `cancelled_at_shutdown`).
    pub(crate) fn abandon_queued(self: &Arc<Self>) {
        while let Some(job) = self
            .scheduler
            .steal_any()
            .or_else(|| self.scheduler.steal_io())
        {
            job.abandon(self);
            self.cancelled_at_shutdown.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an internal task (see `job::Task`).
    pub(crate) fn submit_internal<F>(self: &Arc<Self>, lane: crate::job::Lane, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        if !self.is_shutting_down() {
            self.submit(Arc::new(crate::job::Task::new(lane, f)));
        }
    }

    /// Queues main-thread work and rings the doorbell on the empty → non-empty transition.
    pub(crate) fn post_task(self: &Arc<Self>, task: MainTask) -> Result<()> {
        if self.is_shutting_down() {
            return Err(Error::ShutDown);
        }
        if let Some(remote) = &self.remote {
            return remote.post_main(self, crate::plugin::guest::RemoteItem::Task(task));
        }
        self.main_tx.send(task).map_err(|_| Error::ShutDown)?;
        self.doorbell.notify();
        Ok(())
    }

    /// Queues a job whose progress listener must run at the next pump (once per pump at most:
    /// the job's slot holds at most one entry here at a time).
    pub(crate) fn post_progress(self: &Arc<Self>, job: JobRef) -> Result<()> {
        if self.is_shutting_down() {
            return Err(Error::ShutDown);
        }
        if let Some(remote) = &self.remote {
            return remote.post_main(self, crate::plugin::guest::RemoteItem::Progress(job));
        }
        self.progress_tx.send(job).map_err(|_| Error::ShutDown)?;
        self.doorbell.notify();
        Ok(())
    }

    /// Makes `job` the current job for `key`, superseding the previous one. The map holds weak
    /// references: a job that finished and was delivered (or dropped) costs nothing here.
    pub(crate) fn register_latest(&self, key: String, job: &JobRef) {
        let mut map = lock(&self.latest);
        if let Some(old) = map
            .insert(key, Arc::downgrade(job))
            .and_then(|w| w.upgrade())
        {
            old.header().supersede();
        }
        // Keys that are never reused would otherwise pile up as dead entries.
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
    }

    /// Main thread, after delivering `header`'s continuation: drops the key if it still names
    /// that job.
    pub(crate) fn forget_latest(&self, key: &str, header: &JobHeader) {
        let mut map = lock(&self.latest);
        let current = map.get(key).and_then(std::sync::Weak::upgrade);
        if current.is_some_and(|j| std::ptr::eq(j.header(), header)) {
            map.remove(key);
        }
    }

    /// Main thread: hands `msg` to the host sink. Returns whether a sink took it.
    pub(crate) fn deliver_to_sink(&self, msg: &crate::sink::Message<'_>) -> Result<bool> {
        if let Some(remote) = &self.remote {
            return remote.emit(msg);
        }
        if self.in_sink.swap(true, Ordering::Acquire) {
            return Err(Error::Reentrant);
        }
        // Take the sink out while it runs, so it may call `set_sink` itself; it goes back only
        // if nobody replaced or removed it meanwhile (else it is dropped after it returned).
        let generation = self.sink_generation.load(Ordering::Acquire);
        let taken = lock(&self.sink).take();
        let delivered = match taken {
            None => {
                self.stats.record_sink(false);
                false
            }
            Some(mut sink) => {
                if catch_unwind(AssertUnwindSafe(|| sink(msg))).is_err() {
                    self.stats.record_main_panic();
                }
                let mut slot = lock(&self.sink);
                if slot.is_none() && self.sink_generation.load(Ordering::Acquire) == generation {
                    *slot = Some(sink);
                }
                drop(slot);
                self.stats.record_sink(true);
                true
            }
        };
        self.in_sink.store(false, Ordering::Release);
        Ok(delivered)
    }

    pub(crate) fn thread_exited(&self, index: usize) {
        self.scheduler.slots[index]
            .exited
            .store(true, Ordering::Release);
        *lock(&self.exited) += 1;
        self.exited_cv.notify_all();
    }

    fn total_threads(&self) -> usize {
        self.scheduler.workers + self.io_threads
    }
}

/// A cheap, cloneable, `Send + Sync` reference to a runtime: spawn jobs, post to the main thread
/// and read stats from anywhere. Main-thread-only calls ([`pump`](Handle::pump)) check the
/// calling thread and return [`Error::WrongThread`] elsewhere.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.shared.scheduler.workers)
            .field("shut_down", &self.shared.is_shutting_down())
            .finish()
    }
}

impl Handle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Spawns a normal-priority CPU job.
    ///
    /// # Examples
    ///
    /// ```
    /// # let rt = hostloop::Runtime::builder().workers(1).build()?;
    /// let job = rt.spawn(|ctx| {
    ///     let mut sum = 0u64;
    ///     for i in 0..1_000u64 {
    ///         ctx.check()?; // stops early once cancelled
    ///         sum += i;
    ///     }
    ///     Ok(sum)
    /// })?;
    /// job.on_main(|sum, _main| println!("sum = {sum:?}"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] once the runtime is shutting down.
    pub fn spawn<T, F>(&self, f: F) -> Result<Job<T>>
    where
        T: Send + 'static,
        F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
    {
        self.job().spawn(f)
    }

    /// Spawns a CPU job at `priority`.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] once the runtime is shutting down.
    pub fn spawn_with<T, F>(&self, priority: Priority, f: F) -> Result<Job<T>>
    where
        T: Send + 'static,
        F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
    {
        self.job().priority(priority).spawn(f)
    }

    /// Spawns a job on the IO lane (blocking work that must not take a CPU worker).
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] once the runtime is shutting down.
    pub fn spawn_io<T, F>(&self, f: F) -> Result<Job<T>>
    where
        T: Send + 'static,
        F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
    {
        self.job().io().spawn(f)
    }

    /// Spawns a job that supersedes the previous job spawned with the same `key`: the previous
    /// one is cancelled and its `on_main` continuation never runs, so a stale result never
    /// lands. Re-evaluate on every edit with the node's path as the key.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] once the runtime is shutting down.
    pub fn spawn_latest<T, F>(&self, key: impl Into<String>, f: F) -> Result<Job<T>>
    where
        T: Send + 'static,
        F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
    {
        self.job().latest(key).spawn(f)
    }

    /// A builder for a job with options (name, priority, IO lane, group, key).
    pub fn job(&self) -> JobBuilder<'_> {
        JobBuilder::new(self)
    }

    /// A new, empty job group.
    pub fn group(&self) -> JobGroup {
        JobGroup::new(self)
    }

    /// A bounded stream of `T` handled on the main thread by `handler`, in send order, at most
    /// `capacity` waiting. See [`StreamSender`].
    pub fn stream<T, F>(&self, capacity: usize, handler: F) -> StreamSender<T>
    where
        T: Send + 'static,
        F: FnMut(T, &mut Main<'_>) + Send + 'static,
    {
        StreamSender::new(self.shared.clone(), capacity, handler)
    }

    /// Whether the calling thread is the runtime's main thread (the one that built it).
    pub fn is_main_thread(&self) -> bool {
        self.shared.is_main_thread()
    }

    /// Whether the calling thread is one of this runtime's CPU workers.
    pub fn is_worker_thread(&self) -> bool {
        self.shared.is_worker_thread()
    }

    /// Whether [`Runtime::shutdown`] has begun.
    pub fn is_shut_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// Number of CPU workers.
    pub fn workers(&self) -> usize {
        self.shared.workers()
    }

    /// The doorbell fd: watch it for readability (`QSocketNotifier`, `g_unix_fd_add`, `poll`)
    /// and call [`pump`](Handle::pump) when it is readable. `pump` clears it. Do not read from
    /// or close it; it lives as long as the runtime's shared state. Inside a plugin it is -1:
    /// the host owns the doorbell.
    #[cfg(unix)]
    pub fn doorbell_fd(&self) -> std::os::unix::io::RawFd {
        if self.shared.remote.is_some() {
            return -1;
        }
        self.shared.doorbell.fd()
    }

    /// Whether this handle belongs to a plugin: its jobs and main-thread work run on the host's
    /// runtime (see [`crate::plugin`]).
    pub fn is_plugin(&self) -> bool {
        self.shared.remote.is_some()
    }

    /// Sets (or with `None`, removes) the `request_pump` callback; see
    /// [`Builder::request_pump`].
    pub fn set_request_pump(&self, f: Option<Arc<dyn Fn() + Send + Sync>>) {
        self.shared.doorbell.set_request_pump(f);
    }

    /// A snapshot of the runtime's counters.
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let mut s = Stats::default();
        shared.stats.fill(&mut s);
        let (d, io) = shared.scheduler.depths();
        s.queued = QueueDepths {
            high: d[0],
            normal: d[1],
            low: d[2],
            background: d[3],
            io,
            main: shared.main_rx.len() + shared.progress_rx.len(),
        };
        s.doorbell_rings = shared.doorbell.rings();
        s.events_dropped = shared.events.dropped.load(Ordering::Relaxed);
        s.sleeping_workers = shared.scheduler.sleep.sleeping();
        let busy = |i: usize| WorkerStats {
            busy: shared.scheduler.slots[i].busy(shared.epoch),
        };
        let w = shared.scheduler.workers;
        s.workers = (0..w).map(busy).collect();
        s.io_threads = (w..w + shared.io_threads).map(busy).collect();
        s
    }
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
    /// [`Error::ShutDown`]), cancels every job (queued ones never run), drops queued main-thread
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
        let report = shutdown(&self.handle.shared, deadline);
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
    shared.shutting_down.store(true, Ordering::Release);
    // Pairs with the fence in `submit`.
    std::sync::atomic::fence(Ordering::SeqCst);
    drop(lock(&shared.shutdown_tx).take());
    let sched = &shared.scheduler;
    let mut report = ShutdownReport {
        cancelled_running: sched
            .slots
            .iter()
            .filter(|s| s.with_current(shared.epoch, |_, _| ()).is_some())
            .count(),
        ..ShutdownReport::default()
    };
    // Cancel what never ran, on this thread, while the workers do the same (both count).
    shared.abandon_queued();
    sched.terminate(shared.io_threads);
    {
        let mut exited = lock(&shared.exited);
        while *exited < shared.total_threads() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            exited = match shared.exited_cv.wait_timeout(exited, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
    report.cancelled_queued = shared.cancelled_at_shutdown.load(Ordering::Relaxed);
    let threads = std::mem::take(&mut *lock(&shared.threads));
    for (i, h) in threads.into_iter().enumerate() {
        if sched.slots[i].exited.load(Ordering::Acquire) {
            if h.join().is_ok() {
                report.threads_joined += 1;
            }
        } else {
            let straggler = sched.slots[i].with_current(shared.epoch, |h, age| Straggler {
                id: h.id,
                name: h.name.as_deref().map(str::to_owned),
                age,
            });
            report.stragglers.extend(straggler);
            // Dropping the JoinHandle detaches the thread; it exits when its job returns.
        }
    }
    let carry = lock(&shared.pump_state).carry.take();
    for task in carry.into_iter().chain(shared.main_rx.try_iter()) {
        // A captured value's `Drop` may panic; the host must still get its report.
        let _ = catch_unwind(AssertUnwindSafe(|| match task {
            // The job outlives this queue (its handle may live on): release what its callbacks
            // captured now, not whenever the handle goes.
            MainTask::Deliver(job) => job.release_callbacks(),
            other => drop(other),
        }));
        report.main_items_dropped += 1;
    }
    for job in shared.progress_rx.try_iter() {
        let _ = catch_unwind(AssertUnwindSafe(|| job.release_callbacks()));
        report.main_items_dropped += 1;
    }
    lock(&shared.latest).clear();
    report.elapsed = start.elapsed();
    report
}
