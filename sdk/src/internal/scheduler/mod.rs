//! The worker pool: persistent workers with work-stealing deques, a global injector per priority
//! lane, a separate IO lane, and parking with no lost wake-ups (see `sleep` and `README.md`).
//!
//! Queue layout and search order (a worker takes the first job it finds):
//!
//! 1. the `High` injector;
//! 2. its own deque (only `Normal` jobs spawned from inside jobs on this worker land there);
//! 3. the `Normal` injector (a batch moves into the worker's deque);
//! 4. the other workers' deques (stealing: all of them with up to `VICTIMS_PER_ROUND + 1`
//!    workers; beyond that the last worker that filled its deque, then a window of
//!    `VICTIMS_PER_ROUND` deques that moves on each round, so one search costs the same with
//!    1024 workers as with 17 and start-up stays linear in the worker count);
//! 5. the `Low` injector, then the `Background` injector.
//!
//! So a `High` job always starts before any queued `Normal`/`Low`/`Background` one, and local
//! deques never hold anything but `Normal` work, which keeps the lanes in order.
//!
//! The scheduler sits at the bottom of the crate: it knows nothing of jobs, results or the main
//! thread. It queues any [`Work`] (the runtime queues its `JobRef`s), and its threads run what
//! they take through a closure the caller passes to [`worker_main`]/[`io_main`]. It owns its
//! deques, its sleep state ([`sleep`]), one [`ThreadSlot`] per thread and the count of threads
//! that exited; the runtime owns the threads themselves (their `JoinHandle`s).

pub(crate) mod sleep;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use crate::internal::sync::lock;
use sleep::Sleep;

/// The queue a piece of work goes to: four CPU priority lanes (in the order searched) and the
/// IO lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    High = 0,
    Normal = 1,
    Low = 2,
    Background = 3,
    Io = 4,
}

/// What the scheduler queues: an owned, sendable reference to some work (the runtime's is
/// `Arc<dyn JobCore>`), with the lane it goes to and a header its thread's [`ThreadSlot`]
/// shows while it runs.
pub(crate) trait Work: Send + 'static {
    /// What a running item shows to [`ThreadSlot::with_current`] (the runtime's job header).
    type Header: Sync + 'static;
    fn lane(&self) -> Lane;
    /// Lives at least as long as `self`.
    fn header(&self) -> &Self::Header;
}

/// Per-thread bookkeeping readable by the runtime: what runs now, and how long it was busy.
pub(crate) struct ThreadSlot<H> {
    /// The header of the item running now (null when none). Not a counted reference: see
    /// `with_current` for how a reader keeps it alive.
    current: AtomicPtr<H>,
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

impl<H> Default for ThreadSlot<H> {
    fn default() -> Self {
        ThreadSlot {
            current: AtomicPtr::new(std::ptr::null_mut()),
            started_ns: AtomicU64::new(0),
            reader: AtomicBool::new(false),
            busy_ns: AtomicU64::new(0),
            awake_since: AtomicU64::new(0),
            exited: AtomicBool::new(false),
        }
    }
}

impl<H> ThreadSlot<H> {
    /// Calls `f` with the running job's header and age, if a job is running.
    ///
    /// The worker publishes `current` with no reference count; it frees the job only after
    /// clearing `current` (SeqCst) and finding no `reader` (SeqCst). The reader raises `reader`
    /// (SeqCst) before loading `current` (SeqCst): either the worker sees the reader and waits
    /// for it to leave, or the reader sees null. So a header read here is alive.
    pub(crate) fn with_current<R>(
        &self,
        epoch: Instant,
        f: impl FnOnce(&H, Duration) -> R,
    ) -> Option<R> {
        self.reader.store(true, Ordering::SeqCst);
        let ptr = self.current.load(Ordering::SeqCst);
        // SAFETY: see above: non-null means the worker has not passed `retire` yet, and it
        // waits in `retire` while `reader` is raised.
        let r = unsafe { ptr.as_ref() }.map(|h| {
            let started = Duration::from_nanos(self.started_ns.load(Ordering::Relaxed));
            f(h, epoch.elapsed().saturating_sub(started))
        });
        self.reader.store(false, Ordering::SeqCst);
        r
    }

    fn publish(&self, header: &H, epoch: Instant) {
        self.started_ns
            .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.current
            .store(header as *const H as *mut H, Ordering::SeqCst);
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
    pub(crate) fn busy(&self, epoch: Instant) -> Duration {
        let mut ns = self.busy_ns.load(Ordering::Relaxed);
        let since = self.awake_since.load(Ordering::Relaxed);
        if since != 0 {
            ns += (epoch.elapsed().as_nanos() as u64 + 1).saturating_sub(since);
        }
        Duration::from_nanos(ns)
    }
}

// SAFETY: `current` is only dereferenced under the `with_current` protocol, as a shared
// reference to an `H: Sync`.
unsafe impl<H: Sync> Send for ThreadSlot<H> {}
// SAFETY: as above.
unsafe impl<H: Sync> Sync for ThreadSlot<H> {}

impl<H> std::fmt::Debug for ThreadSlot<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSlot")
            .field("busy_ns", &self.busy_ns.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(crate) struct Scheduler<W: Work> {
    injectors: [Injector<W>; 4],
    stealers: Box<[Stealer<W>]>,
    /// The worker that last put work on its own deque: where a thief looks first when it does
    /// not look everywhere (a hint; any value is safe).
    last_filled: CachePadded<AtomicUsize>,
    pub(crate) sleep: Sleep,
    /// `None` tells one IO thread to exit.
    io_tx: crossbeam_channel::Sender<Option<W>>,
    io_rx: crossbeam_channel::Receiver<Option<W>>,
    /// One per CPU worker, then one per IO thread.
    pub(crate) slots: Box<[CachePadded<ThreadSlot<W::Header>>]>,
    pub(crate) workers: usize,
    pub(crate) io_threads: usize,
    /// Work currently queued on the IO lane.
    io_queued: AtomicU64,
    /// The zero of the threads' busy-time clocks (when the scheduler was made).
    pub(crate) epoch: Instant,
    /// Threads that returned from `worker_main`/`io_main`.
    exited: Mutex<usize>,
    exited_cv: Condvar,
}

impl<W: Work> std::fmt::Debug for Scheduler<W> {
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

/// The worker's own deque, type-erased so one thread-local serves every `Scheduler<W>`; the
/// `scheduler` pointer says whose it is, and only that scheduler's code casts it back.
struct Local {
    scheduler: *const (),
    index: usize,
    deque: *const (),
}

impl<W: Work> Scheduler<W> {
    /// Makes the scheduler and the deques its workers will own.
    pub(crate) fn new(workers: usize, io_threads: usize) -> (Self, Vec<Worker<W>>) {
        let deques: Vec<Worker<W>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let stealers = deques.iter().map(Worker::stealer).collect();
        let (io_tx, io_rx) = crossbeam_channel::unbounded();
        let scheduler = Scheduler {
            injectors: Default::default(),
            stealers,
            last_filled: CachePadded::new(AtomicUsize::new(0)),
            sleep: Sleep::new(workers),
            io_tx,
            io_rx,
            slots: (0..workers + io_threads)
                .map(|_| CachePadded::new(ThreadSlot::default()))
                .collect(),
            workers,
            io_threads,
            io_queued: AtomicU64::new(0),
            epoch: Instant::now(),
            exited: Mutex::new(0),
            exited_cv: Condvar::new(),
        };
        (scheduler, deques)
    }

    fn id(&self) -> *const () {
        (self as *const Self).cast()
    }

    /// Queues `work` on its lane and wakes a worker if one sleeps.
    pub(crate) fn submit(&self, work: W) {
        match work.lane() {
            Lane::Io => {
                self.io_queued.fetch_add(1, Ordering::Relaxed);
                // The receiver lives in `self`, so the channel cannot be disconnected.
                let _ = self.io_tx.send(Some(work));
            }
            Lane::Normal => {
                let work = LOCAL.with(|local| match &*local.borrow() {
                    Some(l) if l.scheduler == self.id() => {
                        // SAFETY: `deque` is this scheduler's `Worker<W>`, owned by the
                        // running `worker_main` frame that set `LOCAL` (see there).
                        unsafe { &*l.deque.cast::<Worker<W>>() }.push(work);
                        self.filled(l.index);
                        None
                    }
                    _ => Some(work),
                });
                if let Some(work) = work {
                    self.injectors[Lane::Normal as usize].push(work);
                }
                self.sleep.notify_new_work();
            }
            lane => {
                self.injectors[lane as usize].push(work);
                self.sleep.notify_new_work();
            }
        }
    }

    /// Whether the calling thread is one of this scheduler's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        LOCAL.with(|l| {
            l.borrow()
                .as_ref()
                .is_some_and(|l| l.scheduler == self.id())
        })
    }

    /// Records that worker `index` put work on its own deque (skipping the store, and the
    /// cache-line traffic, when the hint says so already).
    fn filled(&self, index: usize) {
        if self.last_filled.load(Ordering::Relaxed) != index {
            self.last_filled.store(index, Ordering::Relaxed);
        }
    }

    /// Finds the next item for worker `index` in its search round `round` (see the module docs
    /// for the order).
    ///
    /// With many workers only a bounded set of other deques is tried per round. No job can be
    /// stranded by that: a deque only ever holds work its own worker pushed or moved there, and
    /// that worker is awake and empties its deque before it may sleep. Stealing only spreads
    /// that work, and the moving window reaches every deque within `SPIN_ROUNDS` rounds up to
    /// `MAX_WORKERS` workers.
    fn find(&self, index: usize, deque: &Worker<W>, round: u32) -> Option<W> {
        if let Some(job) = steal_retry(|| self.injectors[Lane::High as usize].steal()) {
            return Some(job);
        }
        if let Some(job) = deque.pop() {
            return Some(job);
        }
        if let Some(job) =
            steal_retry(|| self.injectors[Lane::Normal as usize].steal_batch_and_pop(deque))
        {
            if !deque.is_empty() {
                self.filled(index);
            }
            return Some(job);
        }
        let n = self.stealers.len();
        let steal_from = |victim: usize| {
            if victim == index {
                return None;
            }
            steal_retry(|| self.stealers[victim].steal())
        };
        if n <= VICTIMS_PER_ROUND + 1 {
            for k in 1..n {
                if let Some(job) = steal_from((index + k) % n) {
                    return Some(job);
                }
            }
        } else {
            if let Some(job) = steal_from(self.last_filled.load(Ordering::Relaxed) % n) {
                return Some(job);
            }
            let window = index + 1 + round as usize * VICTIMS_PER_ROUND;
            for k in 0..VICTIMS_PER_ROUND {
                if let Some(job) = steal_from((window + k) % n) {
                    return Some(job);
                }
            }
        }
        for lane in [Lane::Low, Lane::Background] {
            if let Some(job) = steal_retry(|| self.injectors[lane as usize].steal()) {
                return Some(job);
            }
        }
        None
    }

    /// Takes any queued CPU item (used at shutdown to abandon what never ran).
    pub(crate) fn steal_any(&self) -> Option<W> {
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

    /// Takes any queued IO item.
    pub(crate) fn steal_io(&self) -> Option<W> {
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
    pub(crate) fn terminate(&self) {
        self.sleep.terminate();
        for _ in 0..self.io_threads {
            let _ = self.io_tx.send(None);
        }
    }

    /// Waits until every thread has returned from its main function, or `until` passes.
    /// Returns whether all had.
    pub(crate) fn wait_exited(&self, until: Instant) -> bool {
        let total = self.workers + self.io_threads;
        let mut exited = lock(&self.exited);
        while *exited < total {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            exited = match self.exited_cv.wait_timeout(exited, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    fn thread_exited(&self, index: usize) {
        self.slots[index].exited.store(true, Ordering::Release);
        *lock(&self.exited) += 1;
        self.exited_cv.notify_all();
    }

    /// Queue depth per CPU lane (High, Normal incl. worker deques, Low, Background) and IO.
    pub(crate) fn depths(&self) -> ([usize; 4], usize) {
        let mut d = [0; 4];
        for (depth, injector) in d.iter_mut().zip(&self.injectors) {
            *depth = injector.len();
        }
        d[Lane::Normal as usize] += self.stealers.iter().map(Stealer::len).sum::<usize>();
        (d, self.io_queued.load(Ordering::Relaxed) as usize)
    }
}

fn steal_retry<W>(mut f: impl FnMut() -> Steal<W>) -> Option<W> {
    loop {
        match f() {
            Steal::Success(job) => return Some(job),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

/// Runs one item on the current thread, recording it in the thread's slot.
fn run_one<W: Work>(slot: &ThreadSlot<W::Header>, epoch: Instant, work: W, run: &impl Fn(&W)) {
    slot.publish(work.header(), epoch);
    run(&work);
    slot.retire();
    drop(work);
}

/// The most workers a scheduler is built for (`hostloop::MAX_WORKERS`, which the runtime's
/// builder enforces): the search below covers every deque within its rounds up to this many.
pub(crate) const MAX_WORKERS: usize = 1024;

/// Rounds of searching before a worker falls asleep.
const SPIN_ROUNDS: u32 = 64;
/// Other workers' deques tried per search round when there are more than this many (plus the
/// hint); `SPIN_ROUNDS * VICTIMS_PER_ROUND` covers `MAX_WORKERS`.
const VICTIMS_PER_ROUND: usize = 16;
const _: () = assert!(SPIN_ROUNDS as usize * VICTIMS_PER_ROUND >= MAX_WORKERS);
/// Of those, the last ones yield the CPU instead of spinning.
const YIELD_ROUNDS: u32 = 8;

/// The body of CPU worker `index`: takes work (see the module docs for the order) and hands
/// each item to `run`, until [`Scheduler::terminate`]. `run` runs with the item published in
/// the thread's slot; it must not unwind (the runtime's job runner catches panics).
pub(crate) fn worker_main<W: Work>(
    sched: &Scheduler<W>,
    index: usize,
    deque: Worker<W>,
    run: impl Fn(&W),
) {
    // `deque` lives in this frame until the end of the function; `LOCAL` points at it only
    // until it is cleared below, so `submit` never sees a dangling deque.
    LOCAL.with(|l| {
        *l.borrow_mut() = Some(Local {
            scheduler: sched.id(),
            index,
            deque: (&deque as *const Worker<W>).cast(),
        })
    });
    let slot = &sched.slots[index];
    let epoch = sched.epoch;
    slot.wake(epoch);
    'outer: loop {
        let job = LOCAL.with(|l| {
            let l = l.borrow();
            let l = l.as_ref().expect("worker-local state is set above");
            let mut idle_rounds = 0;
            loop {
                if let Some(job) = sched.find(l.index, &deque, idle_rounds) {
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
                if let Some(job) = sched.find(l.index, &deque, idle_rounds) {
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
            Some(job) => run_one(slot, epoch, job, &run),
            None => break 'outer,
        }
    }
    slot.park(epoch);
    LOCAL.with(|l| l.borrow_mut().take());
    drop(deque);
    sched.thread_exited(index);
}

/// The body of IO thread `index` (an index into `slots`, after the CPU workers): hands each IO
/// item to `run` until [`Scheduler::terminate`].
pub(crate) fn io_main<W: Work>(sched: &Scheduler<W>, index: usize, run: impl Fn(&W)) {
    let slot = &sched.slots[index];
    // `recv` parks in the channel (no spinning once idle); `None` is the exit token.
    while let Ok(Some(job)) = sched.io_rx.recv() {
        sched.io_queued.fetch_sub(1, Ordering::Relaxed);
        slot.wake(sched.epoch);
        run_one(slot, sched.epoch, job, &run);
        slot.park(sched.epoch);
    }
    sched.thread_exited(index);
}

/// The scheduler alone: its own work type, its own threads, no runtime.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Item {
        lane: Lane,
        id: u32,
    }

    impl Work for Item {
        type Header = u32;
        fn lane(&self) -> Lane {
            self.lane
        }
        fn header(&self) -> &u32 {
            &self.id
        }
    }

    const DEADLINE: Duration = Duration::from_secs(30);

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + DEADLINE;
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn one_worker_takes_lanes_in_priority_order_and_shows_what_runs() {
        let (sched, mut deques) = Scheduler::<Item>::new(1, 0);
        let sched = Arc::new(sched);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let worker = {
            let (sched, log) = (sched.clone(), log.clone());
            let deque = deques.pop().unwrap();
            std::thread::spawn(move || {
                worker_main(&sched, 0, deque, |item| {
                    if item.id == 0 {
                        let _ = release_rx.recv();
                    }
                    log.lock().unwrap().push(item.id);
                })
            })
        };
        sched.submit(Item {
            lane: Lane::Normal,
            id: 0,
        });
        // The worker holds item 0 until released, and its slot says so.
        wait_for("item 0 to start", || {
            sched.slots[0].with_current(sched.epoch, |id, _| *id) == Some(0)
        });
        for (lane, id) in [
            (Lane::Low, 1),
            (Lane::Background, 2),
            (Lane::Normal, 3),
            (Lane::High, 4),
        ] {
            sched.submit(Item { lane, id });
        }
        assert_eq!(sched.depths(), ([1, 1, 1, 1], 0));
        release_tx.send(()).unwrap();
        wait_for("all five items", || log.lock().unwrap().len() == 5);
        assert_eq!(*log.lock().unwrap(), [0, 4, 3, 1, 2]);
        sched.terminate();
        assert!(sched.wait_exited(Instant::now() + DEADLINE));
        assert!(sched.slots[0].exited.load(Ordering::Acquire));
        worker.join().unwrap();
    }

    #[test]
    fn workers_and_the_io_lane_run_everything_then_exit() {
        let (sched, deques) = Scheduler::<Item>::new(2, 1);
        let sched = Arc::new(sched);
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (index, deque) in deques.into_iter().enumerate() {
            let (sched, ran) = (sched.clone(), ran.clone());
            threads.push(std::thread::spawn(move || {
                worker_main(&sched, index, deque, |item| {
                    assert_ne!(item.lane, Lane::Io, "a CPU worker took IO work");
                    ran.lock().unwrap().push(item.id);
                })
            }));
        }
        {
            let (sched, ran) = (sched.clone(), ran.clone());
            threads.push(std::thread::spawn(move || {
                io_main(&sched, 2, |item| {
                    assert_eq!(item.lane, Lane::Io, "the IO thread took CPU work");
                    ran.lock().unwrap().push(item.id);
                })
            }));
        }
        let lanes = [
            Lane::High,
            Lane::Normal,
            Lane::Low,
            Lane::Background,
            Lane::Io,
        ];
        for id in 0..500u32 {
            let lane = lanes[id as usize % lanes.len()];
            sched.submit(Item { lane, id });
        }
        wait_for("500 items", || ran.lock().unwrap().len() == 500);
        let mut ids = ran.lock().unwrap().clone();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..500).collect::<Vec<_>>(),
            "each item runs exactly once"
        );
        sched.terminate();
        assert!(sched.wait_exited(Instant::now() + DEADLINE));
        for t in threads {
            t.join().unwrap();
        }
        assert!(sched.slots.iter().all(|s| s.exited.load(Ordering::Acquire)));
    }

    #[test]
    fn queued_work_can_be_taken_back_without_threads() {
        let (sched, _deques) = Scheduler::<Item>::new(2, 1);
        sched.submit(Item {
            lane: Lane::Background,
            id: 1,
        });
        sched.submit(Item {
            lane: Lane::Normal,
            id: 2,
        });
        sched.submit(Item {
            lane: Lane::Io,
            id: 3,
        });
        assert_eq!(sched.depths(), ([0, 1, 0, 1], 1));
        let mut cpu: Vec<u32> = std::iter::from_fn(|| sched.steal_any())
            .map(|i| i.id)
            .collect();
        cpu.sort_unstable();
        assert_eq!(cpu, [1, 2]);
        assert_eq!(sched.steal_io().map(|i| i.id), Some(3));
        assert!(sched.steal_io().is_none());
        assert_eq!(sched.depths(), ([0; 4], 0));
        // Nobody started a thread, so none exited: the wait gives up at its deadline.
        assert!(!sched.wait_exited(Instant::now()));
    }
}
