//! The worker pool: persistent workers with work-stealing deques, a global injector per priority
//! lane, a separate IO lane, and parking with no lost wake-ups (see `sleep` and `README.md`).
//!
//! Queue layout and search order (a worker takes the first job it finds):
//!
//! 1. the `High` injector;
//! 2. its own deque (only `Normal` jobs spawned from inside jobs on this worker land there);
//! 3. the `Normal` injector (a batch moves into the worker's deque);
//! 4. the other workers' deques (stealing);
//! 5. the `Low` injector, then the `Background` injector.
//!
//! So a `High` job always starts before any queued `Normal`/`Low`/`Background` one, and local
//! deques never hold anything but `Normal` work, which keeps the lanes in order.

pub(crate) mod sleep;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use crate::job::{JobHeader, JobRef, Lane, Priority};
use crate::runtime::Shared;
use sleep::Sleep;

/// Per-thread bookkeeping readable by the runtime: what runs now, and how long it was busy.
#[derive(Default)]
pub(crate) struct ThreadSlot {
    /// The header of the job running now (null when none). Not a counted reference: see
    /// `with_current` for how a reader keeps it alive.
    current: AtomicPtr<JobHeader>,
    /// When the current job started (ns since the runtime's epoch).
    started_ns: AtomicU64,
    /// A reader (shutdown) is looking at `current`: the worker must not free that job yet.
    reader: AtomicBool,
    /// Nanoseconds spent not parked, up to the last time the thread parked.
    pub(crate) busy_ns: AtomicU64,
    /// When the current awake stretch began (ns since the runtime started, +1), 0 while parked.
    awake_since: AtomicU64,
    pub(crate) exited: AtomicBool,
}

impl ThreadSlot {
    /// Calls `f` with the running job's header and age, if a job is running.
    ///
    /// The worker publishes `current` with no reference count; it frees the job only after
    /// clearing `current` (SeqCst) and finding no `reader` (SeqCst). The reader raises `reader`
    /// (SeqCst) before loading `current` (SeqCst): either the worker sees the reader and waits
    /// for it to leave, or the reader sees null. So a header read here is alive.
    pub(crate) fn with_current<R>(
        &self,
        epoch: Instant,
        f: impl FnOnce(&JobHeader, std::time::Duration) -> R,
    ) -> Option<R> {
        self.reader.store(true, Ordering::SeqCst);
        let ptr = self.current.load(Ordering::SeqCst);
        // SAFETY: see above: non-null means the worker has not passed `retire` yet, and it
        // waits in `retire` while `reader` is raised.
        let r = unsafe { ptr.as_ref() }.map(|h| {
            let started = std::time::Duration::from_nanos(self.started_ns.load(Ordering::Relaxed));
            f(h, epoch.elapsed().saturating_sub(started))
        });
        self.reader.store(false, Ordering::SeqCst);
        r
    }

    fn publish(&self, job: &JobRef, epoch: Instant) {
        self.started_ns
            .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.current.store(
            job.header() as *const JobHeader as *mut JobHeader,
            Ordering::SeqCst,
        );
    }

    /// Clears `current`, waiting out a reader that may be looking at it.
    fn retire(&self) {
        self.current.store(std::ptr::null_mut(), Ordering::SeqCst);
        while self.reader.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    }

    fn wake(&self, epoch: Instant) {
        self.awake_since
            .store(epoch.elapsed().as_nanos() as u64 + 1, Ordering::Relaxed);
    }

    fn park(&self, epoch: Instant) {
        let since = self.awake_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let now = epoch.elapsed().as_nanos() as u64 + 1;
            self.busy_ns
                .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
        }
    }

    /// Busy time so far, including the current awake stretch.
    pub(crate) fn busy(&self, epoch: Instant) -> std::time::Duration {
        let mut ns = self.busy_ns.load(Ordering::Relaxed);
        let since = self.awake_since.load(Ordering::Relaxed);
        if since != 0 {
            ns += (epoch.elapsed().as_nanos() as u64 + 1).saturating_sub(since);
        }
        std::time::Duration::from_nanos(ns)
    }
}

// SAFETY: `current` is only dereferenced under the `with_current` protocol.
unsafe impl Send for ThreadSlot {}
// SAFETY: as above.
unsafe impl Sync for ThreadSlot {}

impl std::fmt::Debug for ThreadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSlot")
            .field("busy_ns", &self.busy_ns.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(crate) struct Scheduler {
    injectors: [Injector<JobRef>; 4],
    stealers: Box<[Stealer<JobRef>]>,
    pub(crate) sleep: Sleep,
    /// `None` tells one IO thread to exit.
    io_tx: crossbeam_channel::Sender<Option<JobRef>>,
    io_rx: crossbeam_channel::Receiver<Option<JobRef>>,
    /// One per CPU worker, then one per IO thread.
    pub(crate) slots: Box<[CachePadded<ThreadSlot>]>,
    pub(crate) workers: usize,
    /// Jobs currently queued on the IO lane.
    io_queued: AtomicU64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Set on worker threads: which scheduler they belong to, their index and their deque.
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

struct Local {
    scheduler: *const Scheduler,
    index: usize,
    deque: Worker<JobRef>,
}

impl Scheduler {
    /// Makes the scheduler and the deques its workers will own.
    pub(crate) fn new(workers: usize, io_threads: usize) -> (Self, Vec<Worker<JobRef>>) {
        let deques: Vec<Worker<JobRef>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let stealers = deques.iter().map(Worker::stealer).collect();
        let (io_tx, io_rx) = crossbeam_channel::unbounded();
        let scheduler = Scheduler {
            injectors: Default::default(),
            stealers,
            sleep: Sleep::new(workers),
            io_tx,
            io_rx,
            slots: (0..workers + io_threads)
                .map(|_| CachePadded::new(ThreadSlot::default()))
                .collect(),
            workers,
            io_queued: AtomicU64::new(0),
        };
        (scheduler, deques)
    }

    /// Queues a job on its lane and wakes a worker if one sleeps.
    pub(crate) fn submit(&self, job: JobRef) {
        match job.header().lane {
            Lane::Io => {
                self.io_queued.fetch_add(1, Ordering::Relaxed);
                // The receiver lives in `self`, so the channel cannot be disconnected.
                let _ = self.io_tx.send(Some(job));
            }
            Lane::Cpu(Priority::Normal) => {
                let job = LOCAL.with(|local| match &*local.borrow() {
                    Some(l) if std::ptr::eq(l.scheduler, self) => {
                        l.deque.push(job);
                        None
                    }
                    _ => Some(job),
                });
                if let Some(job) = job {
                    self.injectors[Priority::Normal as usize].push(job);
                }
                self.sleep.notify_new_work();
            }
            Lane::Cpu(p) => {
                self.injectors[p as usize].push(job);
                self.sleep.notify_new_work();
            }
        }
    }

    /// Whether the calling thread is one of this scheduler's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        LOCAL.with(|l| {
            l.borrow()
                .as_ref()
                .is_some_and(|l| std::ptr::eq(l.scheduler, self))
        })
    }

    /// Finds the next job for worker `index` (see the module docs for the order).
    fn find(&self, index: usize, deque: &Worker<JobRef>) -> Option<JobRef> {
        if let Some(job) = steal_retry(|| self.injectors[Priority::High as usize].steal()) {
            return Some(job);
        }
        if let Some(job) = deque.pop() {
            return Some(job);
        }
        if let Some(job) =
            steal_retry(|| self.injectors[Priority::Normal as usize].steal_batch_and_pop(deque))
        {
            return Some(job);
        }
        let n = self.stealers.len();
        for k in 1..n {
            let victim = &self.stealers[(index + k) % n];
            if let Some(job) = steal_retry(|| victim.steal()) {
                return Some(job);
            }
        }
        for p in [Priority::Low, Priority::Background] {
            if let Some(job) = steal_retry(|| self.injectors[p as usize].steal()) {
                return Some(job);
            }
        }
        None
    }

    /// Takes any queued CPU job (used at shutdown to abandon what never ran).
    pub(crate) fn steal_any(&self) -> Option<JobRef> {
        for injector in &self.injectors {
            if let Some(job) = steal_retry(|| injector.steal()) {
                return Some(job);
            }
        }
        for stealer in self.stealers.iter() {
            if let Some(job) = steal_retry(|| stealer.steal()) {
                return Some(job);
            }
        }
        None
    }

    /// Takes any queued IO job.
    pub(crate) fn steal_io(&self) -> Option<JobRef> {
        match self.io_rx.try_recv() {
            Ok(Some(job)) => {
                self.io_queued.fetch_sub(1, Ordering::Relaxed);
                Some(job)
            }
            // An exit token: put it back for the IO thread it was meant for.
            Ok(None) => {
                let _ = self.io_tx.send(None);
                None
            }
            Err(_) => None,
        }
    }

    /// Tells every worker and IO thread to exit once idle.
    pub(crate) fn terminate(&self, io_threads: usize) {
        self.sleep.terminate();
        for _ in 0..io_threads {
            let _ = self.io_tx.send(None);
        }
    }

    /// Queue depth per CPU lane (High, Normal incl. worker deques, Low, Background) and IO.
    pub(crate) fn depths(&self) -> ([usize; 4], usize) {
        let mut d = [0; 4];
        for p in Priority::ALL {
            d[p as usize] = self.injectors[p as usize].len();
        }
        d[Priority::Normal as usize] += self.stealers.iter().map(Stealer::len).sum::<usize>();
        (d, self.io_queued.load(Ordering::Relaxed) as usize)
    }
}

fn steal_retry(mut f: impl FnMut() -> Steal<JobRef>) -> Option<JobRef> {
    loop {
        match f() {
            Steal::Success(job) => return Some(job),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

/// Runs one job on the current thread, recording it in the thread's slot.
fn run_job(shared: &Arc<Shared>, slot: &ThreadSlot, job: JobRef) {
    slot.publish(&job, shared.epoch);
    job.run(&job, shared);
    slot.retire();
    drop(job);
}

/// Rounds of searching before a worker falls asleep.
const SPIN_ROUNDS: u32 = 64;
/// Of those, the last ones yield the CPU instead of spinning.
const YIELD_ROUNDS: u32 = 8;

/// The body of CPU worker `index`.
pub(crate) fn worker_main(shared: Arc<Shared>, index: usize, deque: Worker<JobRef>) {
    let sched: &Scheduler = &shared.scheduler;
    LOCAL.with(|l| {
        *l.borrow_mut() = Some(Local {
            scheduler: sched,
            index,
            deque,
        })
    });
    let slot = &sched.slots[index];
    let epoch = shared.epoch;
    slot.wake(epoch);
    'outer: loop {
        let job = LOCAL.with(|l| {
            let l = l.borrow();
            let l = l.as_ref().expect("worker-local state is set above");
            let mut idle_rounds = 0;
            loop {
                if let Some(job) = sched.find(l.index, &l.deque) {
                    return Some(job);
                }
                idle_rounds += 1;
                if idle_rounds < SPIN_ROUNDS - YIELD_ROUNDS {
                    for _ in 0..(1 << idle_rounds.min(6)) {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                if idle_rounds < SPIN_ROUNDS {
                    std::thread::yield_now();
                    continue;
                }
                let sleepy = sched.sleep.announce_sleepy();
                if let Some(job) = sched.find(l.index, &l.deque) {
                    return Some(job);
                }
                slot.park(epoch);
                let alive = sched.sleep.sleep(index, sleepy);
                slot.wake(epoch);
                if !alive {
                    return None;
                }
                idle_rounds = 0;
            }
        });
        match job {
            Some(job) => run_job(&shared, slot, job),
            None => break 'outer,
        }
    }
    slot.park(epoch);
    LOCAL.with(|l| l.borrow_mut().take());
    shared.thread_exited(index);
}

/// The body of IO thread `index` (an index into `slots`, after the CPU workers).
pub(crate) fn io_main(shared: Arc<Shared>, index: usize) {
    let sched: &Scheduler = &shared.scheduler;
    let slot = &sched.slots[index];
    // `recv` parks in the channel (no spinning once idle); `None` is the exit token.
    while let Ok(Some(job)) = sched.io_rx.recv() {
        sched.io_queued.fetch_sub(1, Ordering::Relaxed);
        slot.wake(shared.epoch);
        run_job(&shared, slot, job);
        slot.park(shared.epoch);
    }
    shared.thread_exited(index);
}
