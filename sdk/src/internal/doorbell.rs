//! The doorbell: how background threads tell the host's main loop that `pump` has work.
//!
//! A [`Doorbell`] owns a `mio::Poll` with a `mio::Waker` registered in it. The poll's file
//! descriptor ([`Doorbell::fd`]) is what the host watches (`QSocketNotifier`, `g_unix_fd_add`,
//! `select`/`poll`): it becomes readable when main-thread work arrives, and `pump` clears it. Hosts
//! without an fd-watching loop register a `request_pump` callback instead; it is called at exactly
//! the moments the fd would be rung.
//!
//! # The protocol (checked by `sdk/tests/loom.rs`)
//!
//! One flag, `rung`, says "the doorbell has been rung and not yet acknowledged by a pump".
//!
//! * **Producer** (any thread), after pushing an item onto the main queue:
//!   `if !rung.swap(true, AcqRel) { ring() }`.
//! * **Pump** (main thread), before draining the queue:
//!   `if rung.load(Acquire) { clear(); rung.swap(false, AcqRel) }` — the fd is cleared *before*
//!   the flag is lowered. When a pump stops with items left over (budget spent) it rings again
//!   through the producer path, so the host knows to come back.
//!
//! Only the producer that moves `rung` from `false` to `true` rings: a burst of 100k results
//! between two pumps rings the fd once.
//!
//! **Why no wake-up is lost.** Take any item pushed by producer P that a completed pump did not
//! drain. P's swap either
//!
//! 1. read `false`: the value stored by the last pump's lowering swap (or the initial value).
//!    Acquire/release on that swap makes the pump's `clear()` happen-before P's `ring()`, so the
//!    fd is readable after that clear and the host pumps again; or
//! 2. read `true`, written by a producer Q (or a re-ring) that rang or is about to ring. If no pump
//!    has lowered the flag since, Q's ring is still unacknowledged and the fd is (or will be)
//!    readable. If a pump lowers it later, that pump's `swap(false)` reads P's `true` (or a later
//!    value in the same release sequence), so P's push happens-before that pump's drain, which
//!    therefore sees the item.
//!
//! Either way the item is drained by a pump that has not yet run its drain, or the fd is
//! readable. Clearing the fd *after* lowering the flag would break case 2: a ring between the
//! lowering and the clear would be erased while `rung` stays `true`, and later producers would
//! not ring again.
//!
//! **Why the fd does not stay readable with nothing queued.** A producer can be preempted
//! between its swap and its fd write; a pump meanwhile sees `rung`, clears an fd that is not
//! readable yet, lowers the flag and drains the item. The late write then leaves the fd
//! readable with `rung` false, and a host watching the fd would spin on empty pumps until the
//! next ring. So each producer counts its finished rings (`rang`, after the fd write), and a
//! pump also clears when the count moved since its last clear (read before that clear). Clearing
//! more often loses nothing: a ring erased by a clear wrote the fd before it, so its swap came
//! earlier still, and the pump's lowering swap (after the clear) reads that `true` or a later
//! value, so its drain sees the item — the argument of case 2. A stale readable fd lasts until
//! the late producer's count lands: a pump or two, never until the next ring.

use crate::internal::sync::{AtomicBool, AtomicU64, Ordering};

/// The coalescing part of the doorbell: decides who rings and when the fd may be cleared.
#[derive(Debug, Default)]
pub struct Coalescer {
    rung: AtomicBool,
    /// Rings whose fd write has finished (producers, after ringing).
    rang: AtomicU64,
    /// `rang` as the last clear saw it (the consumer's own).
    cleared: AtomicU64,
}

impl Coalescer {
    pub fn new() -> Self {
        Coalescer {
            rung: AtomicBool::new(false),
            rang: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
        }
    }

    /// Called after pushing work. Returns `true` if the caller must ring the doorbell.
    pub fn notify(&self) -> bool {
        !self.rung.swap(true, Ordering::AcqRel)
    }

    /// Whether the bell is rung (work arrived since the last `acknowledge`).
    pub fn is_rung(&self) -> bool {
        self.rung.load(Ordering::Acquire)
    }

    /// Called by a producer once its ring (the fd write) has finished.
    pub fn rang(&self) {
        self.rang.fetch_add(1, Ordering::Release);
    }

    /// Called by the consumer before draining. If the bell was rung, or a ring finished since
    /// the last clear (it may have landed after that clear), runs `clear` (which must make the
    /// fd non-readable) and then lowers the flag. Returns whether it cleared.
    pub fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        let rang = self.rang.load(Ordering::Acquire);
        let late = rang != self.cleared.load(Ordering::Relaxed);
        if !late && !self.rung.load(Ordering::Acquire) {
            return false;
        }
        clear();
        self.cleared.store(rang, Ordering::Relaxed);
        self.rung.swap(false, Ordering::AcqRel);
        true
    }
}

#[cfg(not(loom))]
pub(crate) use real::Doorbell;

#[cfg(not(loom))]
mod real {
    use super::Coalescer;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const WAKE: mio::Token = mio::Token(0);

    /// A host callback asked to schedule a pump, called from any thread.
    pub(crate) type RequestPump = Arc<dyn Fn() + Send + Sync>;

    /// The doorbell: a coalescer, an fd that becomes readable, and an optional callback.
    pub(crate) struct Doorbell {
        /// Swapped by every producer's notify: on a line of its own.
        coalescer: crossbeam_utils::CachePadded<Coalescer>,
        waker: mio::Waker,
        /// Only the main thread touches the poll (in `acknowledge`); the mutex makes that safe
        /// without requiring it.
        poll: Mutex<(mio::Poll, mio::Events)>,
        request_pump: Mutex<Option<RequestPump>>,
        rings: AtomicU64,
        #[cfg(unix)]
        fd: std::os::unix::io::RawFd,
    }

    impl std::fmt::Debug for Doorbell {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Doorbell")
                .field("rings", &self.rings.load(Ordering::Relaxed))
                .finish_non_exhaustive()
        }
    }

    impl Doorbell {
        pub(crate) fn new() -> std::io::Result<Self> {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), WAKE)?;
            #[cfg(unix)]
            let fd = std::os::unix::io::AsRawFd::as_raw_fd(&poll);
            Ok(Doorbell {
                coalescer: crossbeam_utils::CachePadded::new(Coalescer::new()),
                waker,
                poll: Mutex::new((poll, mio::Events::with_capacity(4))),
                request_pump: Mutex::new(None),
                rings: AtomicU64::new(0),
                #[cfg(unix)]
                fd,
            })
        }

        /// The fd that becomes readable when the doorbell rings.
        #[cfg(unix)]
        pub(crate) fn fd(&self) -> std::os::unix::io::RawFd {
            self.fd
        }

        pub(crate) fn set_request_pump(&self, cb: Option<RequestPump>) {
            let old = std::mem::replace(&mut *crate::internal::sync::lock(&self.request_pump), cb);
            // Dropped outside the lock (a C finalizer may call back in). A ring running the old
            // callback on another thread holds its own reference until the call returns.
            drop(old);
        }

        /// Called after work was pushed: rings once per empty → non-empty transition.
        pub(crate) fn notify(&self) {
            if self.coalescer.notify() {
                self.ring();
            }
        }

        fn ring(&self) {
            self.rings.fetch_add(1, Ordering::Relaxed);
            // A failed eventfd write leaves the host to its fallback (the next idle pump); there
            // is nobody to report it to on a worker thread, and it cannot happen short of fd
            // exhaustion, because mio resets a saturated counter itself.
            let _ = self.waker.wake();
            self.coalescer.rang();
            let cb = crate::internal::sync::lock(&self.request_pump).clone();
            if let Some(cb) = cb {
                // The host callback must not take a worker down with it.
                let _ = crate::internal::panic::catch(|| cb());
            }
        }

        /// Called by `pump` before draining: clears the fd if it was rung.
        pub(crate) fn acknowledge(&self) {
            self.coalescer.acknowledge(|| {
                let mut guard = crate::internal::sync::lock(&self.poll);
                let (poll, events) = &mut *guard;
                // Consumes the edge-triggered waker event, so the epoll fd stops being readable.
                // An interrupted poll is retried once; if it still fails the fd stays readable,
                // which costs the host one extra (empty) pump, never a lost wake-up.
                for _ in 0..2 {
                    if poll.poll(events, Some(Duration::ZERO)).is_ok() {
                        break;
                    }
                }
            });
        }

        /// Blocks the main thread until the doorbell rings or `timeout` passes (a runtime
        /// driving its own pump). A ring after the last `acknowledge` is seen: the waker's
        /// event stays queued in the poll until it is consumed, here or by `acknowledge`.
        pub(crate) fn wait(&self, timeout: Duration) {
            if self.coalescer.is_rung() {
                return;
            }
            let mut guard = crate::internal::sync::lock(&self.poll);
            let (poll, events) = &mut *guard;
            // An interrupted or failed wait only ends the wait early; the caller re-checks.
            let _ = poll.poll(events, Some(timeout));
        }

        pub(crate) fn rings(&self) -> u64 {
            self.rings.load(Ordering::Relaxed)
        }
    }
}
