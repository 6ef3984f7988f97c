//! The unload gate of a plugin instance: lets the host close a plugin and then know that no
//! call into it is under way or can start.
//!
//! Every service call a plugin makes (`spawn`, `post_main`) and every host-side wrapper that pops
//! one of its queued triples passes through the gate: [`Gate::enter`] counts it in and, in the
//! same atomic step, learns whether the gate is closing. The host closes with [`Gate::close`],
//! drops what is queued, then [`Gate::wait_idle`] waits until no pass is under way, and drops
//! again.
//!
//! # The protocol (checked by `sdk/tests/loom.rs`)
//!
//! **State.** One atomic word, `state`: bit 0 is `CLOSING`, the rest counts the passes under
//! way (in steps of `PASS` = 2). Beside it a mutex and condvar, used only to sleep in
//! `wait_idle` and to wake it.
//!
//! **Operations**, all read-modify-writes on `state` (AcqRel), so they fall in one modification
//! order:
//!
//! * `enter`: `fetch_add(PASS)`; the pass is *closing* if the value it read had `CLOSING`.
//! * a pass's drop: `fetch_sub(PASS)`; if it read exactly `PASS | CLOSING` (the last pass out
//!   of a closing gate) it takes the mutex and notifies.
//! * `close`: `fetch_or(CLOSING)`; `reopen` (a failed reload): `fetch_and(!CLOSING)`.
//! * `wait_idle` (after `close`): under the mutex, loop: if the count is 0 return, else wait.
//!
//! **Invariants.** (1) A pass that read `CLOSING` never calls into the plugin; it only drops
//! what it carries. (2) The count is the number of passes between their `enter` and their
//! drop. (3) `wait_idle` is called only on a closing gate (that is when the last pass out
//! notifies).
//!
//! **Why no call slips through.** Take any pass P and the host's close C. If P's increment
//! comes before C in the modification order, C's `fetch_or` (and every later read) sees P
//! counted until P's decrement, so `wait_idle` returns only after P left — after whatever P
//! queued, so the second drain finds it. If C comes first, P's increment reads `CLOSING` and
//! by (1) P only drops. There is no third case: both are RMWs on one word. Checking the flag
//! apart from counting in — a load of `CLOSING` and then the increment — breaks this: the load
//! can see the gate open, the close and `wait_idle` can then complete with a count of 0, and P
//! calls into an unloaded plugin. (Two atomics with SeqCst would also work; one word needs no
//! SeqCst argument.) **The wait cannot miss the last pass leaving:** the waiter reads the count
//! under the mutex before it sleeps, and the last pass out notifies under the same mutex, so
//! the notify comes either before the waiter's read (which then sees 0) or after it is asleep.
//!
//! **What the model checks.** `gate_one_call_races_an_unload` and
//! `gate_two_calls_race_an_unload` race one or two calls (each, if not closing, runs "plugin
//! code" and queues an item) against an unload (close, drain, `wait_idle`, drain) in every
//! interleaving, and assert that unload never returns with plugin code running, that no
//! plugin code runs after it, and that nothing stays queued.
//! `mutant_gate_check_before_count_is_caught` runs the mutant that reads the flag before
//! counting in and requires the model to find the interleaving that breaks it.

use crate::internal::sync::{lock, Condvar, Mutex, Ordering};

#[cfg(loom)]
use loom::sync::atomic::AtomicUsize;
#[cfg(not(loom))]
use std::sync::atomic::AtomicUsize;

/// See the module docs.
#[derive(Debug)]
pub struct Gate {
    /// Bit 0: closing. The rest: twice the number of passes under way.
    state: AtomicUsize,
    idle: Mutex<()>,
    idle_cv: Condvar,
}

const CLOSING: usize = 1;
const PASS: usize = 2;

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// A call under way through the gate; it leaves when dropped.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a Gate,
    closing: bool,
}

impl Gate {
    /// An open gate with nothing running.
    pub fn new() -> Self {
        Gate {
            state: AtomicUsize::new(0),
            idle: Mutex::new(()),
            idle_cv: Condvar::new(),
        }
    }

    /// Counts a call in and tells it whether the gate is closing ([`Pass::closing`]).
    pub fn enter(&self) -> Pass<'_> {
        let before = self.state.fetch_add(PASS, Ordering::AcqRel);
        Pass {
            gate: self,
            closing: before & CLOSING != 0,
        }
    }

    /// Closes the gate: passes entered from now on see [`Pass::closing`].
    pub fn close(&self) {
        self.state.fetch_or(CLOSING, Ordering::AcqRel);
    }

    /// Opens a closed gate again (a reload that failed gives the old build back its intake).
    pub fn reopen(&self) {
        self.state.fetch_and(!CLOSING, Ordering::AcqRel);
    }

    /// Whether the gate is closed (a hint for code outside a pass).
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Passes under way now.
    pub fn running(&self) -> usize {
        self.state.load(Ordering::Acquire) / PASS
    }

    /// Waits until no pass is under way and returns 0 — or, with a deadline that passes first,
    /// returns how many still are.
    #[cfg(not(loom))]
    pub fn wait_idle(&self, deadline: Option<std::time::Instant>) -> usize {
        let mut g = lock(&self.idle);
        loop {
            let running = self.running();
            if running == 0 {
                return 0;
            }
            g = match deadline {
                None => self.idle_cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return running;
                    }
                    match self.idle_cv.wait_timeout(g, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            };
        }
    }

    /// Waits until no pass is under way (the model checks have no clock).
    #[cfg(loom)]
    pub fn wait_idle(&self) -> usize {
        let mut g = lock(&self.idle);
        while self.running() > 0 {
            g = self.idle_cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        0
    }
}

impl Pass<'_> {
    /// Whether the gate was closing when this pass entered: a closing pass must not call into
    /// the plugin, only drop. (A pass that entered before the close may go on: the closer waits
    /// for it.)
    pub fn closing(&self) -> bool {
        self.closing
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let gate = self.gate;
        if gate.state.fetch_sub(PASS, Ordering::AcqRel) == PASS | CLOSING {
            // The last pass out of a closing gate. Under the lock, so a waiter between its
            // check and its wait cannot miss it.
            let _g = lock(&gate.idle);
            gate.idle_cv.notify_all();
        }
    }
}
