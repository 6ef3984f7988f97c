//! The doorbell: how background threads tell the host's main loop that `pump` has work.
//!
//! A [`Doorbell`] owns a `mio::Poll` with a `mio::Waker` registered in it. The poll's file
//! descriptor ([`Doorbell::fd`]) is what the host watches (`QSocketNotifier`, `g_unix_fd_add`,
//! `select`/`poll`): it becomes readable when main-thread work arrives, and `pump` clears it. Hosts
//! without an fd-watching loop register a `request_pump` callback instead; it is called at exactly
//! the moments the fd would be rung.
//!
//! # Who rings, and when the fd is cleared
//!
//! Who rings is decided by the main queue (`internal/mainq.rs`, where the protocol and its
//! proof live): the producer that finds the queue parked rings, and a pump that stops with work
//! left rings. The pump clears the fd when it finds the queue empty, just before it parks. This
//! module keeps one more counter, for the other direction:
//!
//! **Why the fd does not stay readable with nothing queued.** A ring is two steps apart from
//! the post that decided it (the swap that found the queue parked, then the fd write), and a
//! pump may drain that post's item in between and park. So a pump clears only when a ring
//! happened since its last clear, and two counters say when: `begun`, counted by a ring before
//! its fd write, and `rang`, counted after it. The pump reads both before it clears, and clears
//! if either moved since its last clear or they differ (a ring is between its two counts).
//!
//! - A ring whose write landed before the pump's reads is seen: either its `begun` is new, or
//!   it was counted by an earlier clear and is still unfinished (`begun != rang`), or it
//!   finished and its `rang` is new. The clear, after the reads, erases its write. So a pump
//!   that parks leaves the fd readable only from a write that landed after it found the queue
//!   empty (the property the loom model checks).
//! - A ring whose write lands after the clear leaves the fd readable; its `rang` count follows
//!   the write, so the next pump sees it moved and clears. Such a stale readable fd lasts until
//!   that count lands: a pump or two, never until the next ring.
//!
//! Counting only `rang` (the first version of this protocol) missed the first case: a producer
//! preempted between its write and its count left the fd readable through any number of empty
//! pumps (loom mutant `mutant_mainq_rang_only_is_caught`). A clear erases only rings whose write
//! came before it, whose items were pushed before them, so the park after the clear fails if
//! they are still queued (see `mainq.rs`): clearing loses nothing. An empty pump with no ring
//! since the last clear costs no syscall.

use crate::internal::sync::{AtomicU64, Ordering};

/// Counts rings, so a pump clears the fd only when one happened since its last clear.
#[derive(Debug, Default)]
pub struct Rings {
    /// Rings begun (counted before the fd write).
    begun: AtomicU64,
    /// Rings whose fd write has finished.
    rang: AtomicU64,
    /// `(begun, rang)` as the last clear saw them (the consumer's own).
    cleared: (AtomicU64, AtomicU64),
}

impl Rings {
    pub fn new() -> Self {
        Rings::default()
    }

    /// Called by whoever rings, before its fd write.
    pub fn begin(&self) {
        self.begun.fetch_add(1, Ordering::Release);
    }

    /// Called by whoever rang, once its fd write has finished.
    pub fn rang(&self) {
        self.rang.fetch_add(1, Ordering::Release);
    }

    /// Called by the consumer when it found the queue empty, before it parks: if a ring began
    /// or finished since the last clear, runs `clear` (which must make the fd non-readable).
    /// Returns whether it cleared.
    pub fn acknowledge(&self, clear: impl FnOnce()) -> bool {
        let begun = self.begun.load(Ordering::Acquire);
        let rang = self.rang.load(Ordering::Acquire);
        // Quiet only if no ring began or finished since the last clear, and none is between
        // the two (it may have written already).
        if begun == rang
            && begun == self.cleared.0.load(Ordering::Relaxed)
            && rang == self.cleared.1.load(Ordering::Relaxed)
        {
            return false;
        }
        clear();
        self.cleared.0.store(begun, Ordering::Relaxed);
        self.cleared.1.store(rang, Ordering::Relaxed);
        true
    }
}

#[cfg(not(loom))]
pub(crate) use real::Doorbell;

#[cfg(not(loom))]
mod real {
    use super::Rings;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const WAKE: mio::Token = mio::Token(0);

    /// A host callback asked to schedule a pump, called from any thread.
    pub(crate) type RequestPump = Arc<dyn Fn() + Send + Sync>;

    /// The doorbell: an fd that becomes readable, an optional callback, and the count of
    /// rings that decides when the pump clears the fd.
    pub(crate) struct Doorbell {
        rings_done: Rings,
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
                rings_done: Rings::new(),
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

        /// Makes the fd readable and calls the host's `request_pump` callback: called by the
        /// producer that found the main queue parked, and by a pump that stops with work left.
        pub(crate) fn ring(&self) {
            self.rings.fetch_add(1, Ordering::Relaxed);
            // A failed eventfd write leaves the host to its fallback (the next idle pump); there
            // is nobody to report it to on a worker thread, and it cannot happen short of fd
            // exhaustion, because mio resets a saturated counter itself.
            self.rings_done.begin();
            let _ = self.waker.wake();
            self.rings_done.rang();
            let cb = crate::internal::sync::lock(&self.request_pump).clone();
            if let Some(cb) = cb {
                // The host callback must not take a worker down with it.
                let _ = crate::internal::panic::catch(|| cb());
            }
        }

        /// Called by `pump` when it found the queue empty, before it parks: clears the fd if a
        /// ring landed since the last clear.
        pub(crate) fn acknowledge(&self) {
            self.rings_done.acknowledge(|| {
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
        /// driving its own pump, after a pump that parked the queue). A ring after the last
        /// `acknowledge` is seen: the waker's event stays queued in the poll until it is
        /// consumed, here or by `acknowledge`.
        pub(crate) fn wait(&self, timeout: Duration) {
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
