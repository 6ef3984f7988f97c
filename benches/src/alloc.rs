//! A global allocator that counts heap allocations and bytes, process-wide, while counting is
//! switched on.
//!
//! Counting is off by default, so the timed runs pay one relaxed load per allocation and share no
//! written cache line; [`count`] and [`Window`] switch it on around the code they measure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// [`System`], counting every `alloc`, `alloc_zeroed` and `realloc` (and the bytes allocated
/// and freed) while counting is on.
#[derive(Debug)]
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

fn record(allocated: usize, freed: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(u64::from(allocated > 0), Ordering::Relaxed);
        ALLOCATED.fetch_add(allocated as u64, Ordering::Relaxed);
        FREED.fetch_add(freed as u64, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size, layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(0, layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A counting window: counting is on from [`Window::open`] until the window is dropped.
///
/// Only one window may be open at a time (the counters are process-wide).
#[derive(Debug)]
pub struct Window(());

impl Window {
    pub fn open() -> Window {
        ALLOCATIONS.store(0, Ordering::Relaxed);
        ALLOCATED.store(0, Ordering::Relaxed);
        FREED.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::SeqCst);
        Window(())
    }

    /// Allocations made since the window opened, by every thread.
    pub fn allocations(&self) -> u64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }

    /// Heap bytes allocated minus bytes freed since the window opened, by every thread: the
    /// growth of the live heap (blocks freed in the window that were allocated before it count
    /// against it, as they should).
    pub fn net_bytes(&self) -> i64 {
        ALLOCATED.load(Ordering::Relaxed) as i64 - FREED.load(Ordering::Relaxed) as i64
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::SeqCst);
    }
}

/// Runs `f` and returns its result with the number of allocations made meanwhile by *every*
/// thread (so work that `f` hands to a pool and waits for is counted too).
///
/// Not reentrant: only one `count` may run at a time.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let window = Window::open();
    let r = f();
    let n = window.allocations();
    (r, n)
}
