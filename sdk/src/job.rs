//! Background jobs: spawning, cancellation, progress, results and main-thread continuations.

use crate::internal::panic::catch;
use std::borrow::Cow;
use std::cell::UnsafeCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::internal::scheduler::{self, Work};
use crate::internal::stats::Outcome as Counted;
use crate::internal::sync::lock;
use crate::main_thread::{post_after_progress, post_progress, post_task, Main, MainItem, MainTask};
use crate::shared::Shared;

/// Which queue a CPU job waits in. Workers always take the highest non-empty lane first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// Interactive work the user is waiting for (a preview, a pick).
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Work that may wait behind normal jobs (cache warming).
    Low = 2,
    /// Runs only when nothing else is queued (indexing, prefetch).
    Background = 3,
}

/// Where a job stands. Read with [`Job::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum JobStatus {
    /// Queued or running.
    Pending = 0,
    /// Returned `Ok`.
    Finished = 1,
    /// Returned an error of its own.
    Failed = 2,
    /// Cancelled before or while it ran (whatever it returned after the cancellation).
    Cancelled = 3,
    /// Panicked.
    Panicked = 4,
}

impl JobStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => JobStatus::Finished,
            2 => JobStatus::Failed,
            3 => JobStatus::Cancelled,
            4 => JobStatus::Panicked,
            _ => JobStatus::Pending,
        }
    }
}

/// Where a job runs: on the CPU pool at a priority, or on the IO lane (blocking work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Cpu(Priority),
    Io,
}

impl Lane {
    /// The scheduler's queue for this lane.
    fn queue(self) -> scheduler::Lane {
        match self {
            Lane::Cpu(Priority::High) => scheduler::Lane::High,
            Lane::Cpu(Priority::Normal) => scheduler::Lane::Normal,
            Lane::Cpu(Priority::Low) => scheduler::Lane::Low,
            Lane::Cpu(Priority::Background) => scheduler::Lane::Background,
            Lane::Io => scheduler::Lane::Io,
        }
    }
}

/// A snapshot of a job's progress: the latest fraction and message its job reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// From 0.0 to 1.0 (clamped).
    pub fraction: f32,
    /// The latest message, if the job reported one.
    pub message: Option<String>,
}

/// The coalescing progress slot of one job: each report overwrites the last, and a listener on
/// the main thread is scheduled at most once per read.
#[derive(Debug, Default)]
pub(crate) struct ProgressSlot {
    fraction: AtomicU32,
    message: Mutex<Option<String>>,
    /// A main-thread delivery is queued and has not yet read the slot.
    queued: AtomicBool,
    /// An `on_progress` listener is registered.
    listened: AtomicBool,
}

impl ProgressSlot {
    fn read(&self) -> Progress {
        Progress {
            fraction: f32::from_bits(self.fraction.load(Ordering::Acquire)),
            message: lock(&self.message).clone(),
        }
    }
}

/// The type-independent part of a job, shared by the queues, the runtime and its handle.
pub(crate) struct JobHeader {
    pub(crate) id: u64,
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) lane: Lane,
    cancelled: AtomicBool,
    /// Replaced by a newer `spawn_latest` job with the same key: its continuation never runs.
    superseded: AtomicBool,
    finished: AtomicBool,
    /// The `Job` handle was dropped with no continuation or listener registered: nobody can
    /// read the result, so `finish` need not store it.
    detached: AtomicBool,
    /// A `JobStatus` as u8, final once `finished` is set.
    status: std::sync::atomic::AtomicU8,
    group: Option<Arc<GroupInner>>,
    latest_key: Option<String>,
    progress: ProgressSlot,
}

impl fmt::Debug for JobHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHeader")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

impl JobHeader {
    /// The header of an internal task (no id, name, group or progress listener).
    pub(crate) fn internal(lane: Lane) -> Self {
        JobHeader {
            id: 0,
            name: None,
            lane,
            cancelled: AtomicBool::new(false),
            superseded: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            detached: AtomicBool::new(true),
            status: std::sync::atomic::AtomicU8::new(JobStatus::Pending as u8),
            group: None,
            latest_key: None,
            progress: ProgressSlot::default(),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
            || self
                .group
                .as_ref()
                .is_some_and(|g| g.cancelled.load(Ordering::Acquire))
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub(crate) fn supersede(&self) {
        self.superseded.store(true, Ordering::Release);
        self.cancel();
    }
}

/// A job as the queues and the main thread see it, with its result type erased.
pub(crate) trait JobCore: Send + Sync {
    fn header(&self) -> &JobHeader;
    /// Runs the closure (or resolves the job as cancelled without running it). Called once,
    /// with `this` the queue's reference to this very job (kept alive by the caller).
    fn run(&self, this: &JobRef, shared: &Arc<Shared>);
    /// Resolves a job that will never run (shutdown) as cancelled, dropping its closure.
    fn abandon(self: Arc<Self>, shared: &Arc<Shared>);
    /// Main thread: runs the `on_main` continuation with the result.
    fn deliver(self: Arc<Self>, main: &mut Main<'_>);
    /// Main thread: runs the `on_progress` listener with the latest progress.
    fn deliver_progress(self: Arc<Self>, main: &mut Main<'_>);
    /// Drops the continuation and progress listener (and what they captured) unrun: the
    /// runtime shut down and they will never be called.
    fn release_callbacks(&self);
}

pub(crate) type JobRef = Arc<dyn JobCore>;

/// What the scheduler queues: the job, its lane, and its header to show while it runs.
impl Work for JobRef {
    type Header = JobHeader;
    fn lane(&self) -> scheduler::Lane {
        self.header().lane.queue()
    }
    fn header(&self) -> &JobHeader {
        JobCore::header(&**self)
    }
}

/// The latest-job map of one runtime: for each `spawn_latest` key, the job that supersedes the
/// ones before it. Weak references: a job that finished and was delivered (or dropped) costs
/// nothing here.
#[derive(Default)]
pub(crate) struct LatestJobs {
    map: Mutex<HashMap<String, std::sync::Weak<dyn JobCore>>>,
}

impl LatestJobs {
    /// Makes `job` the current job for `key`, superseding the previous one.
    fn register(&self, key: String, job: &JobRef) {
        let mut map = lock(&self.map);
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
    fn forget(&self, key: &str, header: &JobHeader) {
        let mut map = lock(&self.map);
        let current = map.get(key).and_then(std::sync::Weak::upgrade);
        if current.is_some_and(|j| std::ptr::eq(j.header(), header)) {
            map.remove(key);
        }
    }

    /// At shutdown: forgets every key.
    pub(crate) fn clear(&self) {
        lock(&self.map).clear();
    }
}

type Continuation<T> = Box<dyn FnOnce(Result<T>, &mut Main<'_>) + Send>;
type ProgressListener = Box<dyn FnMut(&Progress, &mut Main<'_>) + Send>;

enum Outcome<T> {
    Pending,
    Done(Result<T>),
    Taken,
}

struct Slot<T> {
    outcome: Outcome<T>,
    continuation: Option<Continuation<T>>,
    on_progress: Option<ProgressListener>,
    /// Threads blocked in `wait_timeout`: `finish` only signals the condvar when there are some
    /// (a condvar notify is a system call even with nobody waiting).
    waiters: usize,
}

/// The typed part of a job that its [`Job`] handle reads.
struct JobState<T> {
    header: JobHeader,
    slot: Mutex<Slot<T>>,
    done: Condvar,
}

/// One allocation per job: header, result slot and the closure itself.
struct JobInner<T, F> {
    state: JobState<T>,
    /// Taken exactly once, by `run` or `abandon`.
    func: UnsafeCell<Option<F>>,
}

// SAFETY: `func` is only touched by `run`/`abandon`, and the scheduler calls exactly one of them
// exactly once per job (each `JobRef` is popped from exactly one queue once), so there is never
// concurrent access to it; `F: Send` lets it move to the thread that runs it. Every other field
// is `Sync` on its own.
unsafe impl<T: Send, F: Send> Sync for JobInner<T, F> {}

/// Gives a [`Job<T>`] its typed view without knowing the closure type.
trait TypedJob<T>: Send + Sync {
    fn state(&self) -> &JobState<T>;
    fn core(self: Arc<Self>) -> JobRef;
}

impl<T, F> TypedJob<T> for JobInner<T, F>
where
    T: Send + 'static,
    F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
{
    fn state(&self) -> &JobState<T> {
        &self.state
    }
    fn core(self: Arc<Self>) -> JobRef {
        self
    }
}

impl<T, F> JobInner<T, F>
where
    T: Send + 'static,
    F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
{
    fn take_func(&self) -> Option<F> {
        // SAFETY: see the `Sync` impl: only `run`/`abandon` call this, once per job.
        unsafe { (*self.func.get()).take() }
    }

    fn finish(&self, this: &JobRef, shared: &Arc<Shared>, result: Result<T>) {
        let state = &self.state;
        let header = &state.header;
        // A job cancelled before or while it ran resolves as cancelled, whatever it returned
        // (a panic excepted: that is a bug worth reporting).
        let result = match result {
            Err(Error::Panicked(msg)) => Err(Error::Panicked(msg)),
            _ if header.is_cancelled() => Err(Error::Cancelled),
            r => r,
        };
        let (outcome_kind, status) = match &result {
            Ok(_) => (Counted::Finished, JobStatus::Finished),
            Err(Error::Cancelled) => (Counted::Cancelled, JobStatus::Cancelled),
            Err(Error::Panicked(_)) => (Counted::Panicked, JobStatus::Panicked),
            Err(_) => (Counted::Failed, JobStatus::Failed),
        };
        let (deliver, notify) = if header.detached.load(Ordering::Acquire) {
            // Nobody holds the handle and no callback is registered: the result has no reader.
            drop(result);
            (false, false)
        } else {
            let mut slot = lock(&state.slot);
            slot.outcome = Outcome::Done(result);
            (slot.continuation.is_some(), slot.waiters > 0)
        };
        header.status.store(status as u8, Ordering::Release);
        header.finished.store(true, Ordering::Release);
        if notify {
            state.done.notify_all();
        }
        shared.stats.record_outcome(outcome_kind);
        let group = header.group.clone();
        if deliver {
            // A superseded job's continuation never runs, and one that cannot be queued
            // (shutdown) never will: release it (and what it captured) now.
            if header.superseded.load(Ordering::Acquire)
                || post_task(shared, MainTask::Deliver(this.clone())).is_err()
            {
                self.release_callbacks();
            }
        }
        if let Some(group) = group {
            group.job_done(shared);
        }
    }
}

impl<T, F> JobCore for JobInner<T, F>
where
    T: Send + 'static,
    F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
{
    fn header(&self) -> &JobHeader {
        &self.state.header
    }

    fn run(&self, this: &JobRef, shared: &Arc<Shared>) {
        let Some(func) = self.take_func() else {
            return;
        };
        let cancelled = self.state.header.is_cancelled();
        let result = if cancelled || shared.is_shutting_down() {
            if !cancelled {
                // Queued before shutdown and taken by a worker after it began: never ran.
                shared.life.count_cancelled();
            }
            drop(func);
            Err(Error::Cancelled)
        } else {
            let ctx = JobContext {
                header: &self.state.header,
                shared,
                this,
            };
            match catch(|| func(&ctx)) {
                Ok(r) => r,
                Err(payload) => Err(Error::from_panic(payload)),
            }
        };
        self.finish(this, shared, result);
    }

    fn abandon(self: Arc<Self>, shared: &Arc<Shared>) {
        let Some(func) = self.take_func() else {
            return;
        };
        // The closure's captures may panic in `Drop`; that must not stop the shutdown.
        let _ = catch(|| drop(func));
        let this: JobRef = self.clone();
        self.finish(&this, shared, Err(Error::Cancelled));
    }

    fn deliver(self: Arc<Self>, main: &mut Main<'_>) {
        let header = &self.state.header;
        if header.superseded.load(Ordering::Acquire) {
            return;
        }
        // The job's last report reaches its listener before its result: if a progress entry
        // is still queued (the job reported, then finished, while a pump was past its progress
        // entries), the result goes behind it, to the next pump's progress entries.
        if header.progress.queued.load(Ordering::Acquire) {
            let item = MainItem::Task(MainTask::Deliver(self.clone()));
            if post_after_progress(main.handle().shared(), item).is_ok() {
                return;
            }
        }
        let taken = {
            let mut slot = lock(&self.state.slot);
            match (
                slot.continuation.take(),
                std::mem::replace(&mut slot.outcome, Outcome::Taken),
            ) {
                (Some(cont), Outcome::Done(result)) => Some((cont, result)),
                (cont, outcome) => {
                    slot.continuation = cont;
                    slot.outcome = outcome;
                    None
                }
            }
        };
        if let Some(key) = &header.latest_key {
            main.handle().shared().latest.forget(key, header);
        }
        if let Some((cont, mut result)) = taken {
            if header.is_cancelled() && !matches!(result, Err(Error::Panicked(_))) {
                result = Err(Error::Cancelled);
            }
            cont(result, main);
        }
    }

    fn release_callbacks(&self) {
        // Dropped outside the slot's lock: captured values' `Drop` may call back in.
        let callbacks = self.take_callbacks();
        drop(callbacks);
    }

    fn deliver_progress(self: Arc<Self>, main: &mut Main<'_>) {
        let progress = &self.state.header.progress;
        progress.queued.store(false, Ordering::Release);
        let latest = progress.read();
        // Take the listener out while it runs, so it may call back into this job freely.
        let listener = lock(&self.state.slot).on_progress.take();
        if let Some(mut listener) = listener {
            listener(&latest, main);
            let mut slot = lock(&self.state.slot);
            if slot.on_progress.is_none() {
                slot.on_progress = Some(listener);
            }
        }
    }
}

impl<T, F> JobInner<T, F>
where
    T: Send + 'static,
    F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
{
    fn take_callbacks(&self) -> (Option<Continuation<T>>, Option<ProgressListener>) {
        let mut slot = lock(&self.state.slot);
        (slot.continuation.take(), slot.on_progress.take())
    }
}

/// An internal task of the runtime itself (a `parallel_for` helper): no result, no
/// continuation, not counted in the job stats.
pub(crate) struct Task<F> {
    header: JobHeader,
    /// Taken exactly once, by `run` or `abandon`.
    f: UnsafeCell<Option<F>>,
}

// SAFETY: as for `JobInner`: `f` is taken once, by the one thread that pops the task.
unsafe impl<F: Send> Sync for Task<F> {}

impl<F: FnOnce() + Send + 'static> Task<F> {
    pub(crate) fn new(lane: Lane, f: F) -> Self {
        Task {
            header: JobHeader::internal(lane),
            f: UnsafeCell::new(Some(f)),
        }
    }

    fn take(&self) -> Option<F> {
        // SAFETY: see the `Sync` impl.
        unsafe { (*self.f.get()).take() }
    }
}

impl<F: FnOnce() + Send + 'static> JobCore for Task<F> {
    fn header(&self) -> &JobHeader {
        &self.header
    }
    fn run(&self, _this: &JobRef, _shared: &Arc<Shared>) {
        if let Some(f) = self.take() {
            // Internal tasks catch their own panics; this is a last line of defence.
            let _ = catch(f);
        }
    }
    fn abandon(self: Arc<Self>, _shared: &Arc<Shared>) {
        let f = self.take();
        let _ = catch(|| drop(f));
    }
    fn deliver(self: Arc<Self>, _main: &mut Main<'_>) {}
    fn deliver_progress(self: Arc<Self>, _main: &mut Main<'_>) {}
    fn release_callbacks(&self) {}
}

/// What a running job sees: its cancel token, its progress reporter and the runtime.
pub struct JobContext<'a> {
    header: &'a JobHeader,
    shared: &'a Arc<Shared>,
    /// The running job, to queue its progress listener.
    this: &'a JobRef,
}

impl fmt::Debug for JobContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.header.id)
            .field("name", &self.header.name)
            .finish_non_exhaustive()
    }
}

impl JobContext<'_> {
    /// Whether the job was cancelled (directly, through its group, by a newer `spawn_latest`, or
    /// by shutdown). Cheap enough to call per item of a loop.
    pub fn is_cancelled(&self) -> bool {
        self.header.is_cancelled() || self.shared.is_shutting_down()
    }

    /// `Err(Error::Cancelled)` if the job was cancelled: `ctx.check()?` in a loop.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] once the job is cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports progress (clamped to 0..=1). Overwrites the previous report: calling this millions
    /// of times costs the main thread one read of the latest value.
    pub fn progress(&self, fraction: f32) {
        let slot = &self.header.progress;
        slot.fraction
            .store(fraction.clamp(0.0, 1.0).to_bits(), Ordering::Release);
        // Coalesced: at most one delivery queued per job until the main thread reads the slot.
        if slot.listened.load(Ordering::Acquire) && !slot.queued.swap(true, Ordering::AcqRel) {
            let _ = post_progress(self.shared, self.this.clone());
        }
    }

    /// Reports progress with a short message (kept until replaced).
    pub fn progress_with(&self, fraction: f32, message: &str) {
        {
            let mut m = lock(&self.header.progress.message);
            let m = m.get_or_insert_with(String::new);
            m.clear();
            m.push_str(message);
        }
        self.progress(fraction);
    }

    /// The job's id (unique within its runtime).
    pub fn id(&self) -> u64 {
        self.header.id
    }

    /// The job's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.header.name.as_deref()
    }

    /// The runtime, to spawn follow-up jobs or post to the main thread.
    pub fn handle(&self) -> Handle {
        Handle::from_shared(self.shared.clone())
    }
}

/// Spawning: the job half of [`Handle`]'s API.
impl Handle {
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
    /// [`Error::ShutDown`] once the runtime is shutting down; [`Error::Backlog`] at the
    /// main-thread backlog limit (see [`JobBuilder::spawn`]).
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
    /// [`Error::ShutDown`] once the runtime is shutting down; [`Error::Backlog`] at the
    /// main-thread backlog limit (see [`JobBuilder::spawn`]).
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
    /// [`Error::ShutDown`] once the runtime is shutting down; [`Error::Backlog`] at the
    /// main-thread backlog limit (see [`JobBuilder::spawn`]).
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
    /// [`Error::ShutDown`] once the runtime is shutting down; [`Error::Backlog`] at the
    /// main-thread backlog limit (see [`JobBuilder::spawn`]).
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
}

/// A handle to a spawned job. Dropping it detaches the job (it keeps running).
///
/// # Thread safety
///
/// `Job<T>` is `Send + Sync`: any thread may cancel it or read its progress. Its continuation
/// ([`Job::on_main`]) always runs on the main thread.
pub struct Job<T> {
    inner: Arc<dyn TypedJob<T>>,
    /// `on_main` or `on_progress` was registered through this handle.
    callbacks: bool,
    /// Weak: a job handle does not keep its runtime alive.
    shared: std::sync::Weak<Shared>,
    main_thread: std::thread::ThreadId,
}

impl<T> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.inner.state().header;
        f.debug_struct("Job")
            .field("id", &h.id)
            .field("name", &h.name)
            .field("finished", &h.finished.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        if !self.callbacks {
            // Nobody can read the result any more: `finish` either stored it already (and it
            // is dropped with the job) or will see the flag and not store it.
            self.inner
                .state()
                .header
                .detached
                .store(true, Ordering::Release);
        }
    }
}

impl<T: Send + 'static> Job<T> {
    fn header(&self) -> &JobHeader {
        &self.inner.state().header
    }

    /// The job's id (unique within its runtime).
    pub fn id(&self) -> u64 {
        self.header().id
    }

    /// The job's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.header().name.as_deref()
    }

    /// Asks the job to stop. A job that has not started never runs; a running one sees
    /// `ctx.is_cancelled()` and resolves as [`Error::Cancelled`] whatever it returns (unless it
    /// panics). A continuation that has not run yet receives `Err(Error::Cancelled)`, never the
    /// job's value.
    pub fn cancel(&self) {
        self.header().cancel();
    }

    /// Whether [`Job::cancel`] (or the job's group) cancelled it.
    pub fn is_cancelled(&self) -> bool {
        self.header().is_cancelled()
    }

    /// Where the job stands: pending, or how it resolved.
    pub fn status(&self) -> JobStatus {
        JobStatus::from_u8(self.header().status.load(Ordering::Acquire))
    }

    /// Whether the job has resolved (value, error, panic or cancellation).
    pub fn is_finished(&self) -> bool {
        self.header().finished.load(Ordering::Acquire)
    }

    /// The latest reported progress.
    pub fn progress(&self) -> Progress {
        self.header().progress.read()
    }

    /// Takes the result if the job has finished. Returns `None` while it runs, and after the
    /// result was taken (by an earlier call or by the [`Job::on_main`] continuation).
    pub fn try_result(&self) -> Option<Result<T>> {
        let mut slot = lock(&self.inner.state().slot);
        match std::mem::replace(&mut slot.outcome, Outcome::Taken) {
            Outcome::Done(result) => Some(result),
            other => {
                slot.outcome = other;
                None
            }
        }
    }

    /// Blocks until the job finishes or `timeout` passes, and takes its result.
    ///
    /// # Errors
    ///
    /// [`Error::WrongThread`] on the main thread (which must never block on a job),
    /// [`Error::Timeout`] if the job did not finish in time, [`Error::ResultTaken`] if the result
    /// was already taken, or the job's own error.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<T> {
        if std::thread::current().id() == self.main_thread {
            return Err(Error::WrongThread);
        }
        let state = self.inner.state();
        let deadline = Instant::now() + timeout;
        let mut slot = lock(&state.slot);
        loop {
            match std::mem::replace(&mut slot.outcome, Outcome::Taken) {
                Outcome::Done(result) => return result,
                Outcome::Taken => return Err(Error::ResultTaken),
                Outcome::Pending => slot.outcome = Outcome::Pending,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            slot.waiters += 1;
            slot = match state.done.wait_timeout(slot, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
            slot.waiters -= 1;
        }
    }

    /// Runs `f(result, main)` on the main thread, at the first `pump` after the job finishes.
    ///
    /// The continuation receives `Err(Error::Cancelled)` if the job was cancelled before the
    /// continuation ran, and never runs at all for a job superseded by
    /// [`Handle::spawn_latest`]. Registering a second continuation replaces the first.
    pub fn on_main<F>(mut self, f: F) -> Self
    where
        F: FnOnce(Result<T>, &mut Main<'_>) + Send + 'static,
    {
        self.callbacks = true;
        let ready = {
            let mut slot = lock(&self.inner.state().slot);
            slot.continuation = Some(Box::new(f));
            matches!(slot.outcome, Outcome::Done(_))
        };
        if ready {
            let core = self.inner.clone().core();
            let posted = match self.shared.upgrade() {
                Some(shared) => post_task(&shared, MainTask::Deliver(core)).is_ok(),
                None => false,
            };
            if !posted {
                // The runtime is gone or shutting down: the continuation will never run.
                let cont = lock(&self.inner.state().slot).continuation.take();
                drop(cont);
            }
        }
        self
    }

    /// Runs `f(progress, main)` on the main thread when the job reports progress, coalesced:
    /// however often the job reports between two pumps, `f` runs at most once per pump with the
    /// latest value. The job's last report reaches `f` before its result reaches `on_main`
    /// (the result waits a pump for it if need be).
    pub fn on_progress<F>(mut self, f: F) -> Self
    where
        F: FnMut(&Progress, &mut Main<'_>) + Send + 'static,
    {
        self.callbacks = true;
        lock(&self.inner.state().slot).on_progress = Some(Box::new(f));
        self.header()
            .progress
            .listened
            .store(true, Ordering::Release);
        self
    }
}

/// Options for one job: name, priority, lane, group, supersession key. Made by
/// [`Handle::job`](crate::Handle::job).
#[derive(Debug)]
#[must_use = "a JobBuilder does nothing until `spawn` is called"]
pub struct JobBuilder<'h> {
    handle: &'h Handle,
    name: Option<Cow<'static, str>>,
    lane: Lane,
    group: Option<Arc<GroupInner>>,
    latest_key: Option<String>,
}

impl<'h> JobBuilder<'h> {
    pub(crate) fn new(handle: &'h Handle) -> Self {
        JobBuilder {
            handle,
            name: None,
            lane: Lane::Cpu(Priority::Normal),
            group: None,
            latest_key: None,
        }
    }

    /// A name shown in shutdown reports and stats.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The CPU lane to queue in (default [`Priority::Normal`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.lane = Lane::Cpu(priority);
        self
    }

    /// Runs on the IO lane: threads meant for blocking work (file reads, downloads) that never
    /// take a CPU worker.
    pub fn io(mut self) -> Self {
        self.lane = Lane::Io;
        self
    }

    /// Makes the job a member of `group`.
    pub fn group(mut self, group: &JobGroup) -> Self {
        self.group = Some(group.inner.clone());
        self
    }

    /// Supersedes (cancels, and suppresses the continuation of) any earlier job spawned with the
    /// same key that has not finished yet.
    pub fn latest(mut self, key: impl Into<String>) -> Self {
        self.latest_key = Some(key.into());
        self
    }

    /// Spawns the job.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] once the runtime is shutting down; [`Error::Backlog`] while the host
    /// has not pumped and the main-thread backlog is at its limit (the job was not spawned: a
    /// producer that keeps spawning while the host is in a modal dialog is told to wait, rather
    /// than fill memory with results nobody can receive yet).
    pub fn spawn<T, F>(self, f: F) -> Result<Job<T>>
    where
        T: Send + 'static,
        F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
    {
        let shared = self.handle.shared();
        shared.main.admit(shared, 0)?;
        if let Some(group) = &self.group {
            group.pending.fetch_add(1, Ordering::AcqRel);
        }
        let inner = Arc::new(JobInner {
            state: JobState {
                header: JobHeader {
                    id: shared.stats.next_job_id(),
                    name: self.name,
                    lane: self.lane,
                    cancelled: AtomicBool::new(false),
                    superseded: AtomicBool::new(false),
                    finished: AtomicBool::new(false),
                    detached: AtomicBool::new(false),
                    status: std::sync::atomic::AtomicU8::new(JobStatus::Pending as u8),
                    group: self.group,
                    latest_key: self.latest_key,
                    progress: ProgressSlot::default(),
                },
                slot: Mutex::new(Slot {
                    outcome: Outcome::Pending,
                    continuation: None,
                    on_progress: None,
                    waiters: 0,
                }),
                done: Condvar::new(),
            },
            func: UnsafeCell::new(Some(f)),
        });
        let core: JobRef = inner.clone();
        if let Some(key) = &core.header().latest_key {
            shared.latest.register(key.clone(), &core);
        }
        shared.submit(core);
        Ok(Job {
            inner,
            callbacks: false,
            shared: Arc::downgrade(shared),
            main_thread: shared.main_thread,
        })
    }
}

pub(crate) struct GroupInner {
    cancelled: AtomicBool,
    pending: AtomicUsize,
    on_done: Mutex<Option<crate::main_thread::OnceItem>>,
}

impl fmt::Debug for GroupInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupInner")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GroupInner {
    fn job_done(&self, shared: &Arc<Shared>) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.fire_if_done(shared);
        }
    }

    fn fire_if_done(&self, shared: &Arc<Shared>) {
        let f = {
            let mut on_done = lock(&self.on_done);
            if self.pending.load(Ordering::Acquire) != 0 {
                return;
            }
            on_done.take()
        };
        if let Some(f) = f {
            let _ = post_task(shared, MainTask::Once(f));
        }
    }
}

/// A set of jobs that can be cancelled together and reports when all have finished.
///
/// Jobs join a group through [`JobGroup::spawn`] or [`JobBuilder::group`].
#[derive(Clone)]
pub struct JobGroup {
    inner: Arc<GroupInner>,
    /// Weak: a group does not keep its runtime alive.
    shared: std::sync::Weak<Shared>,
}

impl fmt::Debug for JobGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobGroup")
            .field("pending", &self.pending())
            .field("cancelled", &self.inner.cancelled.load(Ordering::Relaxed))
            .finish()
    }
}

impl JobGroup {
    pub(crate) fn new(handle: &Handle) -> Self {
        JobGroup {
            inner: Arc::new(GroupInner {
                cancelled: AtomicBool::new(false),
                pending: AtomicUsize::new(0),
                on_done: Mutex::new(None),
            }),
            shared: Arc::downgrade(handle.shared()),
        }
    }

    /// Spawns a normal-priority job in this group.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] once the runtime is shutting down; [`Error::Backlog`] at the
    /// main-thread backlog limit (see [`JobBuilder::spawn`]).
    pub fn spawn<T, F>(&self, f: F) -> Result<Job<T>>
    where
        T: Send + 'static,
        F: FnOnce(&JobContext<'_>) -> Result<T> + Send + 'static,
    {
        let shared = self.shared.upgrade().ok_or(Error::ShutDown)?;
        Handle::from_shared(shared).job().group(self).spawn(f)
    }

    /// Cancels every job of the group, present and future.
    pub fn cancel_all(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }

    /// Number of member jobs that have not finished.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Whether every member job has finished.
    pub fn is_done(&self) -> bool {
        self.pending() == 0
    }

    /// Runs `f` on the main thread once every member has finished (at once, at the next pump,
    /// if they already have).
    pub fn on_done<F>(&self, f: F)
    where
        F: FnOnce(&mut Main<'_>) + Send + 'static,
    {
        *lock(&self.inner.on_done) = Some(Box::new(f));
        if let Some(shared) = self.shared.upgrade() {
            self.inner.fire_if_done(&shared);
        }
    }
}
