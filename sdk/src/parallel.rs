//! Data parallelism on the pool: `parallel_for` over index ranges and mutable slices.
//!
//! The calling thread takes part: it claims chunks from a shared counter like every helper, so
//! a saturated pool degrades to a plain loop on the caller instead of waiting. Helpers are
//! ordinary (internal) jobs queued in the `High` lane; a helper that starts after the caller has
//! finished finds the loop closed and returns without touching it, so the caller never waits
//! for a helper that has not started. One allocation per call (shared state + one small task
//! per helper), none per chunk.

use std::any::Any;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::handle::Handle;
use crate::internal::panic;
use crate::internal::sync::lock;
use crate::job::{Lane, Priority};

/// A loop whose remaining chunks would take less than this on the caller alone runs inline:
/// waking a parked worker costs tens of microseconds on a small VM.
const INLINE_BELOW: Duration = Duration::from_micros(50);

/// Set in `ForShared::gate` once the caller has finished claiming: no helper may enter.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// The state one `parallel_for` call shares with its helpers.
struct ForShared {
    next: CachePadded<AtomicUsize>,
    chunks: usize,
    start: usize,
    end: usize,
    grain: usize,
    /// Type-erased `&F`, valid only while the gate is open or a helper is inside.
    body: *const (),
    call: unsafe fn(*const (), Range<usize>),
    /// `CLOSED` bit plus the number of helpers inside.
    gate: CachePadded<AtomicUsize>,
    all_out: Mutex<bool>,
    all_out_cv: Condvar,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Whether the caller is inside a hostloop boundary: a chunk's panic is resumed in the
    /// caller, so the panic hook must judge it as the caller's (see `internal::panic`).
    quiet: bool,
}

// SAFETY: `body` points to an `F: Sync` that the caller keeps alive until every helper that
// entered has left (the gate protocol); helpers only call it through `call`, concurrently, which
// `Sync` allows. All other fields are thread-safe.
unsafe impl Send for ForShared {}
// SAFETY: as above.
unsafe impl Sync for ForShared {}

/// Calls the erased body.
///
/// # Safety
///
/// `body` must point to a live `F`.
unsafe fn call_body<F: Fn(Range<usize>) + Sync>(body: *const (), range: Range<usize>) {
    // SAFETY: per this function's contract.
    let f = unsafe { &*(body as *const F) };
    f(range);
}

impl ForShared {
    /// Claims and runs chunks until none are left. A panicking chunk stops the loop (the other
    /// participants find no more chunks) and its payload is kept for the caller.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.chunks {
                return;
            }
            let lo = self.start + i * self.grain;
            let hi = (lo + self.grain).min(self.end);
            // SAFETY: we are the caller (body alive) or a helper inside the gate.
            let r = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: as above.
                panic::relay(self.quiet, || unsafe { (self.call)(self.body, lo..hi) })
            }));
            if let Err(payload) = r {
                self.next.store(self.chunks, Ordering::Relaxed);
                lock(&self.panic).get_or_insert(payload);
                return;
            }
        }
    }

    /// A helper: enter unless closed, work, leave (waking the caller if it waits for us).
    fn help(&self) {
        let mut gate = self.gate.load(Ordering::Acquire);
        loop {
            if gate & CLOSED != 0 {
                return;
            }
            match self.gate.compare_exchange_weak(
                gate,
                gate + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => gate = actual,
            }
        }
        self.work();
        if self.gate.fetch_sub(1, Ordering::AcqRel) == CLOSED | 1 {
            *lock(&self.all_out) = true;
            self.all_out_cv.notify_one();
        }
    }

    /// The caller, after its own `work`: close the gate and wait for helpers still inside.
    fn close_and_wait(&self) {
        if self.gate.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED == 0 {
            return;
        }
        let mut out = lock(&self.all_out);
        while !*out {
            out = match self.all_out_cv.wait(out) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }
}

/// Raw pointer to slice elements, for handing disjoint chunks to `parallel_for`.
struct SlicePtr<T>(*mut T);

// SAFETY: only used to rebuild disjoint sub-slices of a `&mut [T]` with `T: Send`, one per
// chunk, each touched by exactly one thread.
unsafe impl<T: Send> Sync for SlicePtr<T> {}

impl Handle {
    /// Calls `f(chunk)` for consecutive chunks of `range`, each `grain` indices long (the last
    /// may be shorter), in parallel on the pool with the calling thread taking part, and returns
    /// when every chunk has run. Every index is covered exactly once.
    ///
    /// `grain == 0` picks one automatically (about sixteen chunks per thread, for load balance). Small work is never
    /// slowed down by the pool: a range no longer than one chunk runs inline on the caller, and
    /// so does a loop whose first chunk shows that the whole loop takes less than waking a
    /// helper would cost (about 50 µs) — no allocation, no wake-up. With `grain == 0` such an
    /// inline loop calls `f` once more for all the rest, so it costs what a sequential loop does.
    ///
    /// Called from the main thread it blocks the main thread for the loop's duration; use it in
    /// jobs and simulation steps.
    ///
    /// # Panics
    ///
    /// If `f` panics, the remaining chunks are skipped and the first panic is resumed on the
    /// caller once every running chunk has returned (in a job, it becomes the job's error).
    pub fn parallel_for<F>(&self, range: Range<usize>, grain: usize, f: F)
    where
        F: Fn(Range<usize>) + Sync,
    {
        let len = range.end.saturating_sub(range.start);
        if len == 0 {
            return;
        }
        let threads = self.workers() + 1;
        let auto = grain == 0;
        let grain = match grain {
            0 => match len.div_ceil(threads * 16) {
                // Long chunks are a multiple of 64 elements: their boundaries then fall on
                // cache-line boundaries of the data (64 × any element size is a multiple of 64
                // bytes), so two threads never write one line and each chunk's vector loop
                // starts aligned like the whole loop. Short ones stay short: few, costly items
                // must still spread over the threads.
                g if g >= 64 => g.next_multiple_of(64),
                g => g.max(1),
            },
            g => g,
        };
        let chunks = len.div_ceil(grain);
        let helpers = (chunks - 1).min(self.workers() - usize::from(self.is_worker_thread()));
        if helpers == 0 {
            f(range);
            return;
        }
        // Adaptive: run the first chunk here and time it. If the whole loop would take less
        // than waking a helper costs, finish it inline (no allocation, no wake-up).
        let first = range.start..(range.start + grain).min(range.end);
        let start = Instant::now();
        f(first);
        if start.elapsed().saturating_mul((chunks - 1) as u32) < INLINE_BELOW {
            if auto {
                // The chunk size was ours to pick: the rest is one call, one loop, as a plain
                // sequential loop would be (small chunks cost a call each and defeat the
                // vectorizer's long runs).
                f(range.start + grain..range.end);
                return;
            }
            let mut lo = range.start + grain;
            while lo < range.end {
                let hi = (lo + grain).min(range.end);
                f(lo..hi);
                lo = hi;
            }
            return;
        }
        let shared = Arc::new(ForShared {
            next: CachePadded::new(AtomicUsize::new(1)),
            chunks,
            start: range.start,
            end: range.end,
            grain,
            body: &f as *const F as *const (),
            call: call_body::<F>,
            gate: CachePadded::new(AtomicUsize::new(0)),
            all_out: Mutex::new(false),
            all_out_cv: Condvar::new(),
            panic: Mutex::new(None),
            quiet: panic::is_inside(),
        });
        for _ in 0..helpers {
            let s = shared.clone();
            self.shared()
                .submit_internal(Lane::Cpu(Priority::High), move || s.help());
        }
        shared.work();
        shared.close_and_wait();
        // Every helper that entered has left: `f` is no longer referenced.
        let panic = lock(&shared.panic).take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }

    /// Calls `f(offset, chunk)` for consecutive mutable chunks of `data` (`offset` is the
    /// chunk's first index), in parallel like [`parallel_for`](Handle::parallel_for).
    pub fn parallel_for_mut<T, F>(&self, data: &mut [T], grain: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        let base = SlicePtr(data.as_mut_ptr());
        let base = &base;
        self.parallel_for(0..data.len(), grain, move |r| {
            // SAFETY: `parallel_for` hands out disjoint ranges within `0..data.len()`, each to
            // one thread, while `data` is mutably borrowed by this call.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(r.start), r.len()) };
            f(r.start, chunk);
        });
    }
}

/// A closure lent to one pool job by a caller that waits for it ([`Handle::run_on_worker`]).
struct Lent {
    /// Type-erased `&mut Option<F>`, valid until `finished` is set.
    body: *mut (),
    call: unsafe fn(*mut ()),
    finished: Mutex<bool>,
    finished_cv: Condvar,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// As `ForShared::quiet`: the panic is resumed in the lending caller.
    quiet: bool,
}

// SAFETY: `body` points to an `Option<F>` with `F: Send`, which the lending caller keeps alive
// and does not touch until `finished` is set; only the one job that holds the ticket calls it.
unsafe impl Send for Lent {}
// SAFETY: as above; the other fields are thread-safe.
unsafe impl Sync for Lent {}

/// Takes the closure out of its slot and runs it.
///
/// # Safety
///
/// `body` must point to a live `Option<F>` that nothing else accesses during the call.
unsafe fn call_lent<F: FnOnce()>(body: *mut ()) {
    // SAFETY: per this function's contract.
    if let Some(f) = unsafe { &mut *(body as *mut Option<F>) }.take() {
        f();
    }
}

/// Held by the job: dropping it, after the run or unrun (at shutdown), releases the caller.
struct Ticket(Arc<Lent>);

impl Drop for Ticket {
    fn drop(&mut self) {
        *lock(&self.0.finished) = true;
        self.0.finished_cv.notify_one();
    }
}

impl Handle {
    /// Runs `f` on one of the pool's workers and waits for it, so that a thread outside the
    /// pool (a simulation's driver) computes nothing itself: the pool's size stays the number
    /// of busy cores, and the host's main thread keeps its own. On a worker, `f` runs inline;
    /// if the job cannot run (the runtime is shutting down), `f` runs here. A panic in `f` is
    /// resumed here.
    pub(crate) fn run_on_worker<F>(&self, f: F)
    where
        F: FnOnce() + Send,
    {
        if self.is_worker_thread() {
            f();
            return;
        }
        let mut slot = Some(f);
        let lent = Arc::new(Lent {
            body: &mut slot as *mut Option<F> as *mut (),
            call: call_lent::<F>,
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
            panic: Mutex::new(None),
            quiet: panic::is_inside(),
        });
        let ticket = Ticket(lent.clone());
        self.shared()
            .submit_internal(Lane::Cpu(Priority::High), move || {
                let ticket = ticket;
                let lent = &ticket.0;
                let run = || {
                    // SAFETY: the caller waits for this ticket to drop before `slot` goes away,
                    // and touches `slot` only after that.
                    panic::relay(lent.quiet, || unsafe { (lent.call)(lent.body) })
                };
                if let Err(payload) = catch_unwind(AssertUnwindSafe(run)) {
                    *lock(&lent.panic) = Some(payload);
                }
            });
        let mut finished = lock(&lent.finished);
        while !*finished {
            finished = match lent.finished_cv.wait(finished) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        drop(finished);
        // The job has dropped its ticket: `slot` is ours again.
        if let Some(payload) = lock(&lent.panic).take() {
            resume_unwind(payload);
        }
        if let Some(f) = slot.take() {
            f(); // the job never ran
        }
    }
}
