//! Loom model checks of hostloop's two wake-up protocols:
//!
//! * the main queue and its doorbell ([`Queue`] in `sdk/src/internal/mainq.rs`, [`Rings`] in
//!   `sdk/src/internal/doorbell.rs`): no main-thread item (nor progress entry) is left queued
//!   while the doorbell fd is quiet, the fd does not stay readable with nothing queued, and a
//!   burst of posts rings once;
//! * the worker parking protocol [`Sleep`] (`sdk/src/internal/scheduler/sleep.rs`, design in
//!   `sdk/src/internal/scheduler/README.md`): a posted job is never left queued while every worker sleeps,
//!   and `terminate` releases every sleeper;
//! * the latest-frame triple buffer (`sdk/src/internal/latest.rs`): the reader never sees a torn frame
//!   or an older frame after a newer one, and always gets the last one published;
//! * a plugin's unload gate (`sdk/src/plugin/gate.rs`): once unload has closed the gate, drained and
//!   waited for idle, no plugin code runs and nothing stays queued.
//!
//! A lost wake-up shows up either as a failed assertion (main queue: an item is queued and the fake
//! fd is not readable) or as a loom deadlock (sleep: the worker blocks forever on its condvar with
//! a job still queued), and fails the test. The `mutant_*` tests run the same models against a
//! deliberately broken protocol or caller and expect that failure, so they show the models are
//! sharp enough to catch one.
//!
//! Run from the workspace root (a separate target dir keeps the `--cfg loom` build away from the
//! normal one):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p hostloop --test loom --release
//! ```
//!
//! The bigger models set a preemption bound (see `model`); `LOOM_MAX_PREEMPTIONS=<n>` in the
//! environment overrides it for a deeper (slower) search. `LOOM_LOG=1 LOOM_LOCATION=1` prints the
//! failing interleaving. Without `--cfg loom` this file compiles to an empty test binary.

#![cfg(loom)]

use std::collections::VecDeque;

use hostloop::loom_models::{Gate, Link, Peek, Queue, Rings, Sleep};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;
use std::sync::atomic::Ordering::Relaxed;

/// Runs `f` under loom, exploring interleavings with at most `preemptions` preemptions per
/// execution (`None`: unbounded, i.e. exhaustive). `LOOM_MAX_PREEMPTIONS` overrides the bound.
fn model(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = preemptions;
    }
    builder.check(f);
}

// ---------------------------------------------------------------------------------------------
// Main queue and doorbell
// ---------------------------------------------------------------------------------------------

/// How the pump acknowledges the fd: the real [`Rings`], or a mutant.
trait Ack: Send + Sync + 'static {
    fn begin(&self);
    fn rang(&self);
    fn acknowledge(&self, clear: impl FnOnce()) -> bool;
}

impl Ack for Rings {
    fn begin(&self) {
        Rings::begin(self)
    }
    fn rang(&self) {
        Rings::rang(self)
    }
    fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        Rings::acknowledge(self, clear)
    }
}

/// Deliberate breakages of the pump's side, for the `mutant_*` tests.
#[derive(Clone, Copy, Default)]
struct Mutation {
    /// Park first, then clear the fd (`mainq.rs` says why the order matters).
    clear_after_park: bool,
    /// Leave with work left without ringing.
    no_ring_on_leave: bool,
}

/// A node as the model queues it: the link first, as `Node<T>` in `main_thread.rs`.
#[repr(C)]
struct N {
    link: Link,
    value: u32,
}

fn node(value: u32) -> *mut Link {
    Box::into_raw(Box::new(N {
        link: Link::new(),
        value,
    }))
    .cast()
}

/// # Safety
///
/// `link` came from [`node`] and is no longer reachable from the queue.
unsafe fn free(link: *mut Link) {
    drop(unsafe { Box::from_raw(link.cast::<N>()) });
}

/// The real main-queue protocol ([`Queue`], [`Rings`]) with a fake fd and a side queue (the
/// progress entries). `post` mirrors `MainQueue::push_node`, `post_side` `MainQueue::push` of a
/// progress entry, and `pump` mirrors `Handle::pump` (`MainQueue::drain`, `next`, `after_item`,
/// `settle`), except that the list's brief spin while a producer is between its two steps is
/// left out (it only delays the same outcome: the pump leaves with work, and rings).
struct Bell<A> {
    queue: Queue,
    ack: A,
    mutation: Mutation,
    /// Progress entries.
    side: Mutex<VecDeque<u32>>,
    /// Items the pumps ran (only the model's main thread pumps: a `std` atomic, not a loom one,
    /// so it adds no interleavings).
    drained: std::sync::atomic::AtomicUsize,
    /// The fake fd. A mutex, like the kernel's own lock around the eventfd/epoll state: a ring
    /// (eventfd write) and a clear (the zero-timeout poll that consumes the event) are atomic and
    /// totally ordered.
    fd: Mutex<Fd>,
}

// SAFETY: the queue's consumer side is used only by the model's main thread (`pump`, `drop`).
unsafe impl<A: Send> Send for Bell<A> {}
// SAFETY: as above.
unsafe impl<A: Sync> Sync for Bell<A> {}

#[derive(Default)]
struct Fd {
    readable: bool,
    rings: usize,
    /// An fd write landed since the pump last began to settle (found the queue empty).
    written_since_settle: bool,
}

/// How a model pump's drain ended.
#[derive(PartialEq)]
enum End {
    Parked,
    Left,
}

impl<A: Ack> Bell<A> {
    fn new(ack: A, mutation: Mutation) -> Arc<Self> {
        Arc::new(Bell {
            queue: Queue::new(node(u32::MAX)),
            ack,
            mutation,
            side: Mutex::default(),
            drained: std::sync::atomic::AtomicUsize::new(0),
            fd: Mutex::default(),
        })
    }

    fn ring(&self) {
        self.ack.begin();
        {
            let mut fd = self.fd.lock().unwrap();
            fd.rings += 1;
            fd.readable = true;
            fd.written_since_settle = true;
        }
        self.ack.rang();
    }

    /// A producer: one swap; it rings if it found the queue parked.
    fn post(&self, value: u32) {
        // SAFETY: a fresh node, handed to the queue.
        if unsafe { self.queue.push(node(value)) } {
            self.ring();
        }
    }

    /// A progress producer: its side queue, then unpark.
    fn post_side(&self, value: u32) {
        self.side.lock().unwrap().push_back(value);
        if self.queue.unpark() {
            self.ring();
        }
    }

    /// The queue was found empty: clear, then park (or, mutated, the other way round).
    fn settle(&self) -> bool {
        self.fd.lock().unwrap().written_since_settle = false;
        let clear = || self.fd.lock().unwrap().readable = false;
        if self.mutation.clear_after_park {
            // SAFETY: only the model's main thread is the consumer.
            let parked = unsafe { self.queue.park() };
            self.ack.acknowledge(clear);
            parked
        } else {
            self.ack.acknowledge(clear);
            // SAFETY: as above.
            unsafe { self.queue.park() }
        }
    }

    /// One pump that runs at most `budget` list items (at least one if any is ready).
    fn pump(&self, budget: usize) {
        let ready = self.side.lock().unwrap().len();
        for _ in 0..ready {
            self.side.lock().unwrap().pop_front();
            self.drained.fetch_add(1, Relaxed);
        }
        let mut ran = 0;
        let end = loop {
            // SAFETY: only the model's main thread is the consumer.
            if let Some((_, old)) = unsafe { self.queue.pop() } {
                // SAFETY: `old` left the queue.
                unsafe { free(old) };
                self.drained.fetch_add(1, Relaxed);
                ran += 1;
                if ran < budget {
                    continue;
                }
                // Budget spent: an empty queue still parks.
                // SAFETY: as above.
                break match unsafe { self.queue.peek() } {
                    Peek::Empty if self.settle() => End::Parked,
                    _ => End::Left,
                };
            }
            // SAFETY: as above.
            match unsafe { self.queue.peek() } {
                Peek::Ready => {}
                Peek::Empty => {
                    if self.settle() {
                        break End::Parked;
                    }
                }
                Peek::Busy => break End::Left,
            }
        };
        match end {
            End::Parked => {
                // A pump that parks leaves the fd quiet, unless a ring wrote it after the pump
                // found the queue empty (its count then makes the next pump clear).
                {
                    let fd = self.fd.lock().unwrap();
                    assert!(
                        !fd.readable || fd.written_since_settle,
                        "stale wake-up: a parked pump left the fd readable from an earlier ring"
                    );
                }
                if !self.side.lock().unwrap().is_empty() && self.queue.unpark() {
                    self.ring();
                }
            }
            End::Left => {
                if !self.mutation.no_ring_on_leave {
                    self.ring();
                }
            }
        }
    }

    fn readable(&self) -> bool {
        self.fd.lock().unwrap().readable
    }

    fn rings(&self) -> usize {
        self.fd.lock().unwrap().rings
    }

    /// The no-lost-wake-up property, checked once every thread has finished: an item still
    /// queued means the fd is readable, so the host will pump again.
    fn check_no_lost_wakeup(&self, posted: usize) {
        let queued = posted - self.drained.load(Relaxed);
        if queued > 0 {
            assert!(
                self.readable(),
                "lost wake-up: {queued} item(s) queued but the doorbell fd is not readable"
            );
        }
    }
}

impl<A> Drop for Bell<A> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: the consumer side is ours; every node came from `node`.
        unsafe {
            while let Some((_, old)) = self.queue.pop() {
                free(old);
            }
            free(self.queue.stub());
        }
    }
}

/// `producers[i]` is how many items producer thread `i` posts (`side` of them, the last ones,
/// as progress entries on the side queue); `budgets[j]` is the budget of the `j`-th pump, run
/// in order on the model's main thread (like the host's main thread).
fn doorbell_model<A: Ack>(
    make: fn() -> A,
    mutation: Mutation,
    producers: &'static [(usize, usize)],
    budgets: &'static [usize],
    preemptions: Option<usize>,
) {
    model(preemptions, move || {
        let bell = Bell::new(make(), mutation);
        let mut handles = Vec::new();
        let mut next = 0u32;
        for &(n, side) in producers {
            let bell = bell.clone();
            let first = next;
            next += n as u32;
            handles.push(thread::spawn(move || {
                for (i, value) in (first..first + n as u32).enumerate() {
                    if i >= n - side {
                        bell.post_side(value);
                    } else {
                        bell.post(value);
                    }
                }
            }));
        }
        for &budget in budgets {
            bell.pump(budget);
        }
        for h in handles {
            h.join().unwrap();
        }
        let posted = producers.iter().map(|p| p.0).sum();
        bell.check_no_lost_wakeup(posted);
        // Once the producers are done, a pump that drains everything leaves the fd quiet: a
        // host watching it does not spin on empty pumps.
        bell.pump(usize::MAX);
        assert_eq!(
            bell.drained.load(Relaxed),
            posted,
            "a pump left items queued"
        );
        assert!(
            !bell.readable(),
            "stale wake-up: the queue is empty but the doorbell fd stays readable"
        );
    });
}

const REAL: Mutation = Mutation {
    clear_after_park: false,
    no_ring_on_leave: false,
};

#[test]
fn doorbell_two_producers_one_pump() {
    doorbell_model(Rings::new, REAL, &[(1, 0), (1, 0)], &[usize::MAX], Some(4));
}

#[test]
fn doorbell_three_producers_one_pump() {
    doorbell_model(
        Rings::new,
        REAL,
        &[(1, 0), (1, 0), (1, 0)],
        &[usize::MAX],
        Some(2),
    );
}

#[test]
fn doorbell_two_producers_two_pumps() {
    doorbell_model(
        Rings::new,
        REAL,
        &[(1, 0), (1, 0)],
        &[usize::MAX, usize::MAX],
        Some(3),
    );
}

/// A producer that posts twice around a pump: the second post must ring again after the pump
/// parked, even if another producer's ring landed while the pump was clearing.
#[test]
fn doorbell_producer_posts_twice_around_pump() {
    doorbell_model(Rings::new, REAL, &[(2, 0), (1, 0)], &[usize::MAX], Some(3));
}

/// Progress entries (the side queue) wake the host too, and are not lost to a pump parking
/// while they arrive.
#[test]
fn doorbell_side_queue_entries_wake_the_host() {
    doorbell_model(Rings::new, REAL, &[(1, 1), (1, 0)], &[usize::MAX], Some(3));
    doorbell_model(
        Rings::new,
        REAL,
        &[(2, 1)],
        &[usize::MAX, usize::MAX],
        Some(3),
    );
}

/// A pump whose budget runs out with items left rings: the fd stays (or becomes) readable.
#[test]
fn doorbell_budget_spent_keeps_fd_readable() {
    doorbell_model(Rings::new, REAL, &[(1, 0), (1, 0)], &[1], Some(3));
    doorbell_model(Rings::new, REAL, &[(2, 0)], &[1, 1], Some(3));
}

#[test]
fn doorbell_budget_spent_sequential() {
    model(None, || {
        let bell = Bell::new(Rings::new(), REAL);
        bell.post(1);
        bell.post(2);
        bell.post(3);
        assert_eq!(
            bell.rings(),
            1,
            "only the first post found the queue parked"
        );
        bell.pump(1);
        assert!(bell.readable(), "items left, fd must stay readable");
        assert_eq!(bell.rings(), 2, "a pump leaving work rings");
        bell.pump(2);
        assert!(!bell.readable(), "queue drained, fd cleared");
        assert_eq!(bell.drained.load(Relaxed), 3);
        assert!(bell.queue.is_parked());
        // Nothing rang since: the next empty pump makes no syscall.
        assert!(!bell
            .ack
            .acknowledge(|| panic!("cleared an fd no ring reached")));
        bell.post(4);
        assert_eq!(bell.rings(), 3, "the post after a park rings");
    });
}

/// With no pump in between, any number of concurrent posts to a parked queue ring exactly once.
#[test]
fn doorbell_coalesces_concurrent_posts() {
    model(None, || {
        let bell = Bell::new(Rings::new(), REAL);
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let bell = bell.clone();
                thread::spawn(move || bell.post(i))
            })
            .collect();
        bell.post(2);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(bell.rings(), 1);
    });
}

/// The model catches the broken order: a producer rings between the pump's park and its clear,
/// the clear erases that ring, and nobody rings again.
#[test]
#[should_panic(expected = "lost wake-up")]
fn mutant_mainq_clear_after_park_is_caught() {
    let mutation = Mutation {
        clear_after_park: true,
        ..REAL
    };
    doorbell_model(Rings::new, mutation, &[(2, 0)], &[usize::MAX], None);
}

/// The model catches a pump that leaves work without ringing (it used to re-notify).
#[test]
#[should_panic(expected = "lost wake-up")]
fn mutant_mainq_no_ring_on_leave_is_caught() {
    let mutation = Mutation {
        no_ring_on_leave: true,
        ..REAL
    };
    doorbell_model(Rings::new, mutation, &[(2, 0)], &[1], None);
}

/// [`Rings`] with the counts read after the clear instead of before: a ring whose fd write
/// lands between the clear and those reads is taken as cleared, and the fd stays readable.
#[derive(Default)]
struct CountAfterClear {
    begun: AtomicUsize,
    rang: AtomicUsize,
    cleared: AtomicUsize,
}

impl Ack for CountAfterClear {
    fn begin(&self) {
        self.begun.fetch_add(1, SeqCst);
    }
    fn rang(&self) {
        self.rang.fetch_add(1, SeqCst);
    }
    fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        let seen = || self.begun.load(SeqCst) + self.rang.load(SeqCst);
        if seen() == self.cleared.load(SeqCst) {
            return false;
        }
        clear();
        self.cleared.store(seen(), SeqCst);
        true
    }
}

/// [`Rings`] as first written, counting only finished rings: a producer preempted between its
/// fd write and its count leaves the fd readable through any number of empty pumps.
#[derive(Default)]
struct RangOnly {
    rang: AtomicUsize,
    cleared: AtomicUsize,
}

impl Ack for RangOnly {
    fn begin(&self) {}
    fn rang(&self) {
        self.rang.fetch_add(1, SeqCst);
    }
    fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        let rang = self.rang.load(SeqCst);
        if rang == self.cleared.load(SeqCst) {
            return false;
        }
        clear();
        self.cleared.store(rang, SeqCst);
        true
    }
}

/// The model catches the first version's stale fd (seen in the C host test under load).
#[test]
#[should_panic(expected = "stale wake-up")]
fn mutant_mainq_rang_only_is_caught() {
    doorbell_model(
        RangOnly::default,
        REAL,
        &[(1, 0)],
        &[usize::MAX, usize::MAX],
        None,
    );
}

/// The model catches the stale ring: a producer preempted between its swap and its fd write.
#[test]
#[should_panic(expected = "stale wake-up")]
fn mutant_mainq_count_after_clear_is_caught() {
    doorbell_model(
        CountAfterClear::default,
        REAL,
        &[(2, 0)],
        &[usize::MAX, usize::MAX],
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Sleep
// ---------------------------------------------------------------------------------------------

/// A scheduler in miniature: one job queue and the real [`Sleep`].
struct Pool {
    sleep: Sleep,
    queue: Mutex<VecDeque<u32>>,
    /// Jobs run, by all workers.
    ran: AtomicUsize,
}

/// How the test worker deviates from `worker_main`'s idle loop (only the mutants do).
#[derive(Clone, Copy, PartialEq)]
enum Idle {
    /// `worker_main`: search, announce sleepy, search again, sleep.
    Real,
    /// Mutant: skips the search between `announce_sleepy` and `sleep`.
    NoSearchAfterAnnounce,
}

impl Pool {
    fn new(workers: usize) -> Arc<Self> {
        Arc::new(Pool {
            sleep: Sleep::new(workers),
            queue: Mutex::new(VecDeque::new()),
            ran: AtomicUsize::new(0),
        })
    }

    fn find(&self) -> Option<u32> {
        self.queue.lock().unwrap().pop_front()
    }

    /// `Scheduler::submit`: push the job, then notify.
    fn submit(&self, job: u32) {
        self.queue.lock().unwrap().push_back(job);
        self.sleep.notify_new_work();
    }

    /// `worker_main`'s loop without the spin/yield rounds (they only delay `announce_sleepy`).
    /// Runs jobs until `sleep` reports termination, or until this worker has run `quota` jobs.
    /// A worker that runs the pool's `total`-th job terminates the pool, so the other workers
    /// exit too. Returns whether the worker left because the pool was terminated.
    fn worker(&self, index: usize, idle: Idle, quota: usize, total: usize) -> bool {
        let mut mine = 0;
        loop {
            let job = loop {
                if let Some(job) = self.find() {
                    break Some(job);
                }
                let sleepy = self.sleep.announce_sleepy();
                if idle == Idle::Real {
                    if let Some(job) = self.find() {
                        break Some(job);
                    }
                }
                if !self.sleep.sleep(index, sleepy) {
                    break None;
                }
            };
            let Some(_job) = job else { return true };
            mine += 1;
            if self.ran.fetch_add(1, SeqCst) + 1 == total {
                self.sleep.terminate();
            }
            if mine == quota {
                return false;
            }
        }
    }
}

/// `workers` workers and one producer thread per entry of `producers` (jobs it submits). Every
/// job must run: if a wake-up is lost, a job stays queued while all workers sleep, nobody runs
/// the last job, nobody terminates, and loom reports the deadlock.
fn sleep_model(
    workers: usize,
    producers: &'static [usize],
    idle: Idle,
    preemptions: Option<usize>,
) {
    model(preemptions, move || {
        let total: usize = producers.iter().sum();
        let pool = Pool::new(workers);
        let mut producer_handles = Vec::new();
        for &n in producers {
            let pool = pool.clone();
            producer_handles.push(thread::spawn(move || {
                for job in 0..n as u32 {
                    pool.submit(job);
                }
            }));
        }
        // A single worker stops at its quota (no terminate needed); several stop at termination.
        let quota = if workers == 1 { total } else { usize::MAX };
        let worker_handles: Vec<_> = (1..workers)
            .map(|index| {
                let pool = pool.clone();
                thread::spawn(move || pool.worker(index, idle, quota, total))
            })
            .collect();
        pool.worker(0, idle, quota, total);
        for h in producer_handles {
            h.join().unwrap();
        }
        for h in worker_handles {
            h.join().unwrap();
        }
        assert_eq!(pool.ran.load(SeqCst), total);
        assert!(pool.queue.lock().unwrap().is_empty());
    });
}

#[test]
fn sleep_one_worker_one_producer() {
    sleep_model(1, &[1], Idle::Real, None);
}

#[test]
fn sleep_one_worker_one_producer_two_jobs() {
    sleep_model(1, &[2], Idle::Real, None);
}

#[test]
fn sleep_one_worker_two_producers() {
    sleep_model(1, &[1, 1], Idle::Real, Some(4));
}

#[test]
fn sleep_two_workers_one_producer() {
    sleep_model(2, &[1], Idle::Real, Some(4));
}

#[test]
fn sleep_two_workers_one_producer_two_jobs() {
    sleep_model(2, &[2], Idle::Real, Some(3));
}

#[test]
fn sleep_two_workers_two_producers() {
    sleep_model(2, &[1, 1], Idle::Real, Some(2));
}

#[test]
fn sleep_one_worker_two_producers_three_jobs() {
    sleep_model(1, &[2, 1], Idle::Real, Some(3));
}

/// `terminate` with no work: a worker that is sleeping (or about to) returns `false` and exits.
#[test]
fn sleep_terminate_releases_sleepers() {
    model(None, || {
        let pool = Pool::new(2);
        let handles: Vec<_> = (0..2)
            .map(|index| {
                let pool = pool.clone();
                thread::spawn(move || pool.worker(index, Idle::Real, usize::MAX, usize::MAX))
            })
            .collect();
        pool.sleep.terminate();
        for h in handles {
            assert!(h.join().unwrap(), "the worker left because of termination");
        }
        // Later sleeps return at once.
        let sleepy = pool.sleep.announce_sleepy();
        assert!(!pool.sleep.sleep(0, sleepy));
    });
}

/// `terminate` racing with a post: the worker still exits (the job either ran or stays queued
/// for shutdown to abandon), and a wake-up chosen for it does not keep it alive.
#[test]
fn sleep_terminate_races_with_post() {
    model(None, || {
        let pool = Pool::new(1);
        let worker = {
            let pool = pool.clone();
            thread::spawn(move || pool.worker(0, Idle::Real, usize::MAX, usize::MAX))
        };
        let producer = {
            let pool = pool.clone();
            thread::spawn(move || pool.submit(7))
        };
        pool.sleep.terminate();
        producer.join().unwrap();
        assert!(worker.join().unwrap());
        let queued = pool.queue.lock().unwrap().len();
        assert_eq!(pool.ran.load(SeqCst) + queued, 1);
    });
}

/// Runs the `#[ignore]`d test `name` of this binary in a child process and checks that it failed
/// with `expected` in its output. Needed for deadlocks: loom reports one by panicking with other
/// model threads still blocked, and unwinding through them aborts the process, which
/// `#[should_panic]` cannot catch.
fn expect_failure(name: &str, expected: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the mutant passed:\n{text}");
    assert!(
        text.contains(expected),
        "the mutant failed, but not with {expected:?}:\n{text}"
    );
}

/// The model catches a worker that skips the search between `announce_sleepy` and `sleep`: a job
/// posted between its first search and its announcement bumps the counter before the worker
/// reads it, finds no sleeper to wake, and the worker then sleeps with the job queued.
#[test]
fn mutant_sleep_no_search_after_announce_is_caught() {
    expect_failure("mutant_model_no_search_after_announce", "deadlock");
}

#[test]
#[ignore = "a mutant that must deadlock; run by mutant_sleep_no_search_after_announce_is_caught"]
fn mutant_model_no_search_after_announce() {
    sleep_model(1, &[1], Idle::NoSearchAfterAnnounce, None);
}

/// The model catches a producer that notifies before pushing.
#[test]
fn mutant_sleep_notify_before_push_is_caught() {
    expect_failure("mutant_model_notify_before_push", "deadlock");
}

#[test]
#[ignore = "a mutant that must deadlock; run by mutant_sleep_notify_before_push_is_caught"]
fn mutant_model_notify_before_push() {
    model(None, || {
        let pool = Pool::new(1);
        let producer = {
            let pool = pool.clone();
            thread::spawn(move || {
                pool.sleep.notify_new_work();
                pool.queue.lock().unwrap().push_back(1);
            })
        };
        pool.worker(0, Idle::Real, 1, 1);
        producer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Latest-frame triple buffer
// ---------------------------------------------------------------------------------------------

/// A writer publishes frames 1..=`frames` (each `(n, n)`, so a torn frame shows as unequal
/// halves) while a reader reads `reads` times; then the reader drains.
fn triple_buffer_model(frames: u32, reads: usize) {
    model(Some(3), move || {
        let (mut writer, mut reader) = hostloop::loom_models::latest((0u32, 0u32));
        let w = thread::spawn(move || {
            for n in 1..=frames {
                writer.write(|f| {
                    f.0 = n;
                    f.1 = n;
                });
            }
        });
        let mut last = 0;
        for _ in 0..reads {
            if let Some(&(a, b)) = reader.read() {
                assert_eq!(a, b, "torn frame");
                assert!(a > last, "frame {a} after frame {last}");
                last = a;
            }
        }
        w.join().unwrap();
        if let Some(&(a, b)) = reader.read() {
            assert_eq!(a, b, "torn frame");
            assert!(a > last, "frame {a} after frame {last}");
            last = a;
        }
        assert_eq!(
            last, frames,
            "the last frame published is the one finally seen"
        );
        assert_eq!(*reader.current(), (frames, frames));
    });
}

#[test]
fn triple_buffer_two_frames_two_reads() {
    triple_buffer_model(2, 2);
}

#[test]
fn triple_buffer_three_frames_three_reads() {
    triple_buffer_model(3, 3);
}

// ---------------------------------------------------------------------------------------------
// Plugin unload gate
// ---------------------------------------------------------------------------------------------

/// How a plugin-side call uses the gate: the real order (count in, then read `closing`), or the
/// mutant's (read `closing`, then count in).
#[derive(Clone, Copy, PartialEq)]
enum Entry {
    Real,
    CheckBeforeCount,
}

/// One call: `Real` passes the real gate; the mutant reads the flag before it has a pass.
fn call(gate: &Gate, entry: Entry, body: impl FnOnce(bool)) {
    match entry {
        Entry::Real => {
            let pass = gate.enter();
            body(pass.closing());
        }
        Entry::CheckBeforeCount => {
            let closing = gate.is_closing();
            let _pass = gate.enter();
            body(closing);
        }
    }
}

/// `callers` plugin-side calls race with an unload. Each call, if the gate is not closing,
/// queues an item and "runs plugin code" (flags `inside` for its duration). The unloader
/// closes, drains, waits for idle, drains again, and then checks: no plugin code is running
/// and none can start (every later call sees the gate closing), and nothing is left queued.
fn gate_model(callers: usize, entry: Entry) {
    model(Some(3), move || {
        let gate = Arc::new(Gate::new());
        let queue = Arc::new(Mutex::new(Vec::<u32>::new()));
        let inside = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..callers)
            .map(|i| {
                let (gate, queue, inside, released) = (
                    gate.clone(),
                    queue.clone(),
                    inside.clone(),
                    released.clone(),
                );
                thread::spawn(move || {
                    call(&gate, entry, |closing| {
                        if !closing {
                            inside.fetch_add(1, SeqCst);
                            assert_eq!(released.load(SeqCst), 0, "plugin code ran after unload");
                            queue.lock().unwrap().push(i as u32);
                            inside.fetch_sub(1, SeqCst);
                        }
                    });
                })
            })
            .collect();
        gate.close();
        queue.lock().unwrap().clear();
        gate.wait_idle();
        queue.lock().unwrap().clear();
        assert_eq!(
            inside.load(SeqCst),
            0,
            "unload returned with plugin code running"
        );
        released.store(1, SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            queue.lock().unwrap().is_empty(),
            "work queued after the unload"
        );
    });
}

#[test]
fn gate_one_call_races_an_unload() {
    gate_model(1, Entry::Real);
}

#[test]
fn gate_two_calls_race_an_unload() {
    gate_model(2, Entry::Real);
}

#[test]
fn mutant_gate_check_before_count_is_caught() {
    expect_failure("mutant_model_gate_check_before_count", "unload");
}

#[test]
#[ignore = "a mutant that must fail; run by mutant_gate_check_before_count_is_caught"]
fn mutant_model_gate_check_before_count() {
    gate_model(1, Entry::CheckBeforeCount);
}
