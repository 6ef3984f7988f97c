//! The synchronisation primitives used by the wake-up protocols.
//!
//! Under `--cfg loom` these are loom's model-checked versions, so the protocol modules
//! ([`crate::doorbell`]'s coalescer and [`crate::scheduler::sleep`]) can be checked
//! exhaustively by `sdk/tests/loom.rs`. Everything else in the crate uses `std` directly.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Condvar, Mutex, MutexGuard,
};

/// Locks `m`, ignoring poisoning: no user code ever runs while one of our locks is held, so a
/// poisoned lock can only come from a bug in hostloop itself, and the data is still consistent
/// at every point where a panic could start.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
