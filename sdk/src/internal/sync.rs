//! The synchronisation primitives used by the wake-up protocols.
//!
//! Under `--cfg loom` these are loom's model-checked versions, so the protocol modules
//! ([`crate::internal::doorbell`]'s coalescer, [`crate::internal::scheduler::sleep`], the latest-frame triple
//! buffer in `crate::internal::latest` and the plugin unload gate in `crate::plugin::gate`) can be checked
//! exhaustively by `sdk/tests/loom.rs`. Everything else in the crate uses `std` directly.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// An `UnsafeCell` whose accesses loom can track (`loom::cell::UnsafeCell` under `--cfg loom`).
#[derive(Debug)]
pub(crate) struct Cell<T>(
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
);

impl<T> Cell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(loom)]
        return Cell(loom::cell::UnsafeCell::new(value));
        #[cfg(not(loom))]
        Cell(std::cell::UnsafeCell::new(value))
    }

    /// Shared access through a raw pointer; the caller guarantees no concurrent writer.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with(f);
        #[cfg(not(loom))]
        f(self.0.get())
    }

    /// Exclusive access through a raw pointer; the caller guarantees no concurrent access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with_mut(f);
        #[cfg(not(loom))]
        f(self.0.get())
    }
}

/// Locks `m`, ignoring poisoning: no user code ever runs while one of our locks is held, so a
/// poisoned lock can only come from a bug in hostloop itself, and the data is still consistent
/// at every point where a panic could start.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
