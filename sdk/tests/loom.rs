//! Loom model checks of hostloop's two wake-up protocols:
//!
//! * the doorbell [`Coalescer`] (`sdk/src/internal/doorbell.rs`): no main-thread item is left queued
//!   while the doorbell fd is quiet, and a burst of notifies rings once;
//! * the worker parking protocol [`Sleep`] (`sdk/src/internal/scheduler/sleep.rs`, design in
//!   `sdk/src/internal/scheduler/README.md`): a posted job is never left queued while every worker sleeps,
//!   and `terminate` releases every sleeper;
//! * the latest-frame triple buffer (`sdk/src/internal/latest.rs`): the reader never sees a torn frame
//!   or an older frame after a newer one, and always gets the last one published;
//! * a plugin's unload gate (`sdk/src/plugin/gate.rs`): once unload has closed the gate, drained and
//!   waited for idle, no plugin code runs and nothing stays queued.
//!
//! A lost wake-up shows up either as a failed assertion (doorbell: an item is queued and the fake
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

use hostloop::loom_models::{Coalescer, Gate, Sleep};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;

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
// Doorbell
// ---------------------------------------------------------------------------------------------

/// The coalescing protocol as the doorbell uses it; implemented by the real [`Coalescer`] and by
/// the mutant below.
trait Coalesce: Send + Sync + 'static {
    fn notify(&self) -> bool;
    fn rang(&self) {}
    fn acknowledge(&self, clear: impl FnOnce()) -> bool;
}

impl Coalesce for Coalescer {
    fn notify(&self) -> bool {
        Coalescer::notify(self)
    }
    fn rang(&self) {
        Coalescer::rang(self)
    }
    fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        Coalescer::acknowledge(self, clear)
    }
}

/// A doorbell around coalescer `C`: the main queue and a fake fd. Mirrors `Runtime::post_main`
/// (push, then notify) and `Handle::pump` (acknowledge, drain up to a budget, notify again if
/// items are left).
struct Bell<C> {
    coalescer: C,
    queue: Mutex<Queue>,
    /// The fake fd. A mutex, like the kernel's own lock around the eventfd/epoll state: a ring
    /// (eventfd write) and a clear (the zero-timeout poll that consumes the event) are atomic and
    /// totally ordered.
    fd: Mutex<Fd>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<u32>,
    drained: usize,
}

#[derive(Default)]
struct Fd {
    readable: bool,
    rings: usize,
}

impl<C: Coalesce> Bell<C> {
    fn new(coalescer: C) -> Arc<Self> {
        Arc::new(Bell {
            coalescer,
            queue: Mutex::default(),
            fd: Mutex::default(),
        })
    }

    fn notify(&self) {
        if self.coalescer.notify() {
            {
                let mut fd = self.fd.lock().unwrap();
                fd.rings += 1;
                fd.readable = true;
            }
            self.coalescer.rang();
        }
    }

    /// A producer: push onto the main queue, then notify.
    fn post(&self, item: u32) {
        self.queue.lock().unwrap().items.push_back(item);
        self.notify();
    }

    /// One pump that runs at most `budget` items.
    fn pump(&self, budget: usize) {
        self.coalescer
            .acknowledge(|| self.fd.lock().unwrap().readable = false);
        let remaining = {
            let mut queue = self.queue.lock().unwrap();
            for _ in 0..budget {
                if queue.items.pop_front().is_none() {
                    break;
                }
                queue.drained += 1;
            }
            queue.items.len()
        };
        if remaining > 0 {
            // Budget spent with work left: keep the doorbell rung so the host comes back.
            self.notify();
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
        let (queued, drained) = {
            let queue = self.queue.lock().unwrap();
            (queue.items.len(), queue.drained)
        };
        assert_eq!(queued + drained, posted);
        if queued > 0 {
            assert!(
                self.readable(),
                "lost wake-up: {queued} item(s) queued but the doorbell fd is not readable"
            );
        }
    }
}

/// `producers[i]` is how many items producer thread `i` posts; `budgets[j]` is the budget of the
/// `j`-th pump, run in order on the model's main thread (like the host's main thread).
fn doorbell_model<C: Coalesce>(
    make: fn() -> C,
    producers: &'static [usize],
    budgets: &'static [usize],
    preemptions: Option<usize>,
) {
    model(preemptions, move || {
        let bell = Bell::new(make());
        let mut handles = Vec::new();
        let mut next = 0u32;
        for &n in producers {
            let bell = bell.clone();
            let first = next;
            next += n as u32;
            handles.push(thread::spawn(move || {
                for item in first..first + n as u32 {
                    bell.post(item);
                }
            }));
        }
        for &budget in budgets {
            bell.pump(budget);
        }
        for h in handles {
            h.join().unwrap();
        }
        bell.check_no_lost_wakeup(producers.iter().sum());
        // Once the producers are done, a pump that drains everything leaves the fd quiet: a
        // host watching it does not spin on empty pumps.
        bell.pump(usize::MAX);
        assert!(
            !bell.readable(),
            "stale wake-up: the queue is empty but the doorbell fd stays readable"
        );
    });
}

#[test]
fn doorbell_two_producers_one_pump() {
    doorbell_model(Coalescer::new, &[1, 1], &[usize::MAX], None);
}

#[test]
fn doorbell_three_producers_one_pump() {
    doorbell_model(Coalescer::new, &[1, 1, 1], &[usize::MAX], Some(4));
}

#[test]
fn doorbell_two_producers_two_pumps() {
    doorbell_model(Coalescer::new, &[1, 1], &[usize::MAX, usize::MAX], None);
}

/// A producer that posts twice around a pump: the second post must ring again after the pump
/// cleared the fd, even if another producer's ring landed while the pump was acknowledging.
#[test]
fn doorbell_producer_posts_twice_around_pump() {
    doorbell_model(Coalescer::new, &[2, 1], &[usize::MAX], None);
}

/// A pump whose budget runs out with items left re-notifies: the fd stays (or becomes) readable.
#[test]
fn doorbell_budget_spent_keeps_fd_readable() {
    doorbell_model(Coalescer::new, &[1, 1], &[1], None);
    doorbell_model(Coalescer::new, &[2], &[1, 1], None);
}

#[test]
fn doorbell_budget_spent_sequential() {
    model(None, || {
        let bell = Bell::new(Coalescer::new());
        bell.post(1);
        bell.post(2);
        bell.post(3);
        assert_eq!(bell.rings(), 1);
        bell.pump(1);
        assert!(bell.readable(), "items left, fd must stay readable");
        assert_eq!(
            bell.rings(),
            2,
            "the pump cleared the fd, so it rings again"
        );
        bell.pump(2);
        assert!(!bell.readable(), "queue drained, fd cleared");
        assert_eq!(bell.queue.lock().unwrap().drained, 3);
        // Nothing rung: acknowledge does not call `clear`.
        assert!(!bell
            .coalescer
            .acknowledge(|| panic!("cleared an fd that was not rung")));
    });
}

/// With no pump in between, any number of concurrent notifies ring exactly once.
#[test]
fn doorbell_coalesces_concurrent_notifies() {
    model(None, || {
        let coalescer = Arc::new(Coalescer::new());
        let rings = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (coalescer, rings) = (coalescer.clone(), rings.clone());
                thread::spawn(move || {
                    if coalescer.notify() {
                        rings.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        if coalescer.notify() {
            rings.fetch_add(1, SeqCst);
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(rings.load(SeqCst), 1);
    });
}

/// The coalescer as it was before `rang`: it clears only while the flag is up, so a ring that
/// lands after a pump cleared and lowered leaves the fd readable with nothing queued.
#[derive(Default)]
struct ClearOnlyWhenRung(loom::sync::atomic::AtomicBool);

impl Coalesce for ClearOnlyWhenRung {
    fn notify(&self) -> bool {
        !self.0.swap(true, std::sync::atomic::Ordering::AcqRel)
    }
    fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        if !self.0.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        clear();
        self.0.swap(false, std::sync::atomic::Ordering::AcqRel);
        true
    }
}

/// The model catches the stale ring: a producer preempted between its swap and its fd write.
#[test]
#[should_panic(expected = "stale wake-up")]
fn mutant_doorbell_clear_only_when_rung_is_caught() {
    doorbell_model(ClearOnlyWhenRung::default, &[1], &[usize::MAX], None);
}

/// The coalescer with the steps of `acknowledge` swapped (lower the flag, *then* clear the fd):
/// the order `doorbell.rs` warns against.
#[derive(Default)]
struct ClearAfterLowering(loom::sync::atomic::AtomicBool);

impl Coalesce for ClearAfterLowering {
    fn notify(&self) -> bool {
        !self.0.swap(true, std::sync::atomic::Ordering::AcqRel)
    }
    fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        if !self.0.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        self.0.swap(false, std::sync::atomic::Ordering::AcqRel);
        clear();
        true
    }
}

/// The model catches the broken order: producer B rings between the pump's lowering and its
/// clear, the clear erases that ring while the flag stays up, and producer A's second post does
/// not ring.
#[test]
#[should_panic(expected = "lost wake-up")]
fn mutant_doorbell_clear_after_lowering_is_caught() {
    doorbell_model(ClearAfterLowering::default, &[2, 1], &[usize::MAX], Some(3));
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
