//! The unload gate of a plugin instance: lets the host close a plugin and then know that no
//! call into it is under way or can start.
//!
//! Every service call a plugin makes (`spawn`, `post_main`) and every host-side wrapper that pops
//! one of its queued triples passes through the gate: [`Gate::enter`] counts it in and, in the
//! same atomic step, learns whether the gate is closing. The host closes with [`Gate::close`],
//! drops what is queued, then [`Gate::wait_idle`] waits until no pass is under way, and drops
//! again.
//!
//! Why no call slips through: the closing flag and the count of passes live in one atomic word
//! (bit 0: closing; the rest: twice the count) changed only by read-modify-writes, so all of
//! them fall in one modification order. Either a pass's increment comes before the host's
//! close — then the close sees the pass counted, the wait waits until it leaves, and the second
//! drain finds whatever it queued — or the close comes first, and the pass sees the flag and
//! only drops. (Two separate atomics with SeqCst would also do, but a single word needs no
//! SeqCst argument and is what loom can check.) The wait cannot miss the last pass leaving: the
//! pass notifies under the gate's mutex, and the waiter checks the word under the same mutex
//! before it sleeps. `sdk/tests/loom.rs` checks this exhaustively, and checks that a gate
//! reading the flag apart from counting itself in (the mutant) lets a call through.

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
