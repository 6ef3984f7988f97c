//! Parking and waking workers with no lost wake-ups. See `README.md` beside this file.

use crate::internal::sync::{lock, AtomicU64, Condvar, Mutex, Ordering};

/// One unit of the jobs event counter, kept in the high 32 bits of `counters`.
const JEC_ONE: u64 = 1 << 32;
/// The sleeping-worker count, kept in the low 32 bits of `counters`.
const SLEEPERS_MASK: u64 = JEC_ONE - 1;

/// What a worker must remember between `announce_sleepy` and `sleep`.
#[derive(Debug, Clone, Copy)]
pub struct Sleepy {
    jec: u64,
}

#[derive(Debug)]
struct State {
    /// Workers blocked on their condvar, most recent last.
    sleepers: Vec<usize>,
    /// `woken[i]`: worker `i` was chosen by a waker and must leave `sleep`.
    woken: Vec<bool>,
    terminated: bool,
}

/// The sleep/wake state shared by all workers of one scheduler.
#[derive(Debug)]
pub struct Sleep {
    /// High 32 bits: jobs event counter (JEC). Low 32 bits: number of sleeping workers.
    counters: AtomicU64,
    state: Mutex<State>,
    condvars: Box<[Condvar]>,
}

impl Sleep {
    pub fn new(workers: usize) -> Self {
        Sleep {
            counters: AtomicU64::new(0),
            state: Mutex::new(State {
                sleepers: Vec::with_capacity(workers),
                woken: vec![false; workers],
                terminated: false,
            }),
            condvars: (0..workers).map(|_| Condvar::new()).collect(),
        }
    }

    /// Step 1 of falling asleep: remember the jobs event counter. The worker must search for work
    /// once more *after* this call and before [`Sleep::sleep`].
    pub fn announce_sleepy(&self) -> Sleepy {
        Sleepy {
            jec: self.counters.load(Ordering::SeqCst) & !SLEEPERS_MASK,
        }
    }

    /// Step 2: block until woken, unless a job was posted since `announce_sleepy` (then return at
    /// once so the worker searches again) or the scheduler is terminated. Returns `false` once
    /// terminated.
    pub fn sleep(&self, worker: usize, sleepy: Sleepy) -> bool {
        let mut state = lock(&self.state);
        if state.terminated {
            return false;
        }
        // Register as a sleeper only if no job was posted since we announced; the CAS on the
        // same word that posters increment orders us against every poster.
        let mut current = self.counters.load(Ordering::SeqCst);
        loop {
            if current & !SLEEPERS_MASK != sleepy.jec {
                return true;
            }
            match self.counters.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        state.sleepers.push(worker);
        while !state.woken[worker] && !state.terminated {
            state = match self.condvars[worker].wait(state) {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        if state.woken[worker] {
            state.woken[worker] = false;
        } else {
            // Terminated while still registered: deregister ourselves.
            state.sleepers.retain(|&w| w != worker);
            self.counters.fetch_sub(1, Ordering::SeqCst);
        }
        !state.terminated
    }

    /// Called after a job was pushed onto any queue. Wakes one sleeping worker if there is one.
    pub fn notify_new_work(&self) {
        let before = self.counters.fetch_add(JEC_ONE, Ordering::SeqCst);
        if before & SLEEPERS_MASK != 0 {
            self.wake_one();
        }
    }

    fn wake_one(&self) {
        let mut state = lock(&self.state);
        if let Some(w) = state.sleepers.pop() {
            state.woken[w] = true;
            self.counters.fetch_sub(1, Ordering::SeqCst);
            drop(state);
            self.condvars[w].notify_one();
        }
    }

    /// Wakes everyone for good; later `sleep` calls return `false` at once.
    pub fn terminate(&self) {
        let mut state = lock(&self.state);
        state.terminated = true;
        drop(state);
        for cv in self.condvars.iter() {
            cv.notify_all();
        }
    }

    /// Number of workers currently blocked (for stats).
    #[cfg(not(loom))]
    pub fn sleeping(&self) -> usize {
        (self.counters.load(Ordering::Relaxed) & SLEEPERS_MASK) as usize
    }
}
