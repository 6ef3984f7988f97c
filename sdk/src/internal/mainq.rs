//! The main-thread queue's protocol: an intrusive multi-producer, single-consumer list (Vyukov's
//! MPSC list) whose head word also carries the doorbell's **parked** bit.
//!
//! A post is one allocation (the node, with the item inside it) and one atomic swap; the pump
//! takes items with plain loads, no atomic read-modify-write per item. Who must ring the
//! doorbell is decided by that same swap: the producer that finds the bit set rings. So a burst
//! of posts while the pump is busy rings nothing, and the bell is acknowledged only when the pump
//! finds the queue empty — not at the start of every pump, where each post arriving during the
//! pump used to ring again (56,728 rings per million items with one producer).
//!
//! # The list
//!
//! `head` holds the address of the last node pushed (plus the bit); the consumer's `tail` is the
//! last node it took, kept as the list's stub. Push: `prev = head.swap(node)`, then
//! `prev.next = node`. Pop: `next = tail.next`; if set, `next` is the item and becomes the stub,
//! and the old stub can be freed (its `next` was the last thing a producer wrote to it). A
//! producer between its swap and its link leaves the list **busy**: `tail.next` is null but
//! `head != tail`. The consumer cannot take that item until the link lands (two instructions
//! away, unless the producer was preempted), and must not park.
//!
//! # The doorbell protocol (checked by `sdk/tests/loom.rs`)
//!
//! * **Producer**, to post: `prev = head.swap(node, AcqRel)`; link; ring if `prev` had the bit.
//!   (A producer of a side queue — progress entries — pushes there, then
//!   `head.fetch_and(!PARKED)`, and rings if the bit was set.)
//! * **Pump**, when it finds the queue empty: clear the fd (if a ring happened since its last
//!   clear, see `doorbell.rs`), *then* `head.compare_exchange(tail, tail | PARKED)`. If that fails,
//!   items arrived: keep draining. If it succeeds the pump returns with the bell parked; it then
//!   checks the side queue and, if anything is there, unparks and rings itself.
//! * **Pump**, when it stops with work left (budget spent, or the list busy): it rings, so the
//!   host comes back (and a `request_pump` host is called again).
//!
//! **Why no wake-up is lost.** Take an item X that producer P pushed and no pump drained, with no
//! pump running. If the last pump returned without parking, it rang after its last clear, so the
//! fd is readable. If it parked, its park CAS and P's swap are both read-modify-writes of `head`,
//! so they are ordered. P's swap came first: then the CAS, which expects `head == tail`, read a
//! head that P's swap (or a later push) had moved past the tail — it fails and that pump went on
//! draining, a contradiction (or, for a side-queue entry, the CAS reads P's `fetch_and` or a later
//! RMW, so P's entry happens-before the pump's check of the side queue, which sees it). So P's
//! swap came after the CAS, and the first RMW of `head` after the CAS read the bit: that
//! producer rang, after the pump's clear (the clear is sequenced before the CAS, and the CAS is
//! released to it), so the fd is readable now. Clearing *after* parking would break this: a ring
//! between the park and the clear would be erased with nobody left to ring (the loom mutant
//! `mutant_mainq_clear_after_park_is_caught`).

use std::ptr;

use crossbeam_utils::CachePadded;

use crate::internal::sync::{AtomicPtr, AtomicUsize, Cell, Ordering};

/// The bit of `head` that says "the pump found the queue empty and parked: the next producer
/// rings". Nodes are at least 2-aligned, so their addresses never have it.
const PARKED: usize = 1;

/// The link every node starts with (a `#[repr(C)]` node puts it first, so a `*mut Link` is a
/// pointer to the node).
#[derive(Debug)]
pub struct Link {
    next: AtomicPtr<Link>,
}

impl Link {
    pub fn new() -> Self {
        Link {
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::new()
    }
}

/// What the consumer sees at the front of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// An item is ready to pop.
    Ready,
    /// Nothing is queued.
    Empty,
    /// A producer is between its swap and its link: an item is coming but cannot be taken yet.
    Busy,
}

/// The list. Producers call [`push`](Queue::push) and [`unpark`](Queue::unpark) from any thread;
/// everything else is the consumer's, which the caller keeps to one thread at a time.
pub struct Queue {
    /// What producers write, on a line of its own.
    producers: CachePadded<Producers>,
    /// The consumer's stub: the last node taken (or the initial one). On another line, so the
    /// pump's writes do not bounce the producers' line.
    tail: CachePadded<Cell<*mut Link>>,
}

struct Producers {
    /// The last node pushed, `| PARKED`.
    head: AtomicUsize,
    /// Pushes begun (counted before the swap): with the consumer's count of items taken, the
    /// queue's length for the backlog limit and the stats. Beside `head`, so a post touches
    /// one line.
    pushed: AtomicUsize,
}

// SAFETY: `tail` is only touched by the consumer, which callers keep to one thread at a time
// (the `unsafe` consumer methods); `head` is atomic.
unsafe impl Send for Queue {}
// SAFETY: as above.
unsafe impl Sync for Queue {}

impl Queue {
    /// A queue whose stub is `stub` (a node with nothing in it, owned by the queue from now on),
    /// parked: the first push rings.
    pub fn new(stub: *mut Link) -> Self {
        Queue {
            producers: CachePadded::new(Producers {
                head: AtomicUsize::new(stub as usize | PARKED),
                pushed: AtomicUsize::new(0),
            }),
            tail: CachePadded::new(Cell::new(stub)),
        }
    }

    /// Appends `node`. Returns `true` if the queue was parked: the caller must ring the doorbell.
    ///
    /// # Safety
    ///
    /// `node` points to a live node whose link is fresh (`Link::new`), not in any queue, and the
    /// queue owns it from now on.
    pub unsafe fn push(&self, node: *mut Link) -> bool {
        self.producers.pushed.fetch_add(1, Ordering::Relaxed);
        let prev = self.producers.head.swap(node as usize, Ordering::AcqRel);
        let prev_node = (prev & !PARKED) as *mut Link;
        // SAFETY: `prev_node` is the node pushed before (or the stub): the consumer frees a node
        // only after it saw its `next`, which is this store.
        unsafe { (*prev_node).next.store(node, Ordering::Release) };
        prev & PARKED != 0
    }

    /// For a producer of a side queue the pump also drains: clears the bit. Returns `true` if it
    /// was set: the caller must ring the doorbell.
    pub fn unpark(&self) -> bool {
        self.producers.head.fetch_and(!PARKED, Ordering::AcqRel) & PARKED != 0
    }

    /// Pushes begun so far (an item counts from just before it is linked).
    pub fn pushed(&self) -> usize {
        self.producers.pushed.load(Ordering::Relaxed)
    }

    /// Whether the pump parked and no producer has come since.
    pub fn is_parked(&self) -> bool {
        self.producers.head.load(Ordering::Acquire) & PARKED != 0
    }

    /// What is at the front.
    ///
    /// # Safety
    ///
    /// Only the consumer calls it.
    pub unsafe fn peek(&self) -> Peek {
        // SAFETY: the caller is the consumer (no concurrent access to the tail).
        let tail = unsafe { self.tail() };
        // SAFETY: the stub is live until the consumer frees it.
        if !unsafe { (*tail).next.load(Ordering::Acquire) }.is_null() {
            Peek::Ready
        } else if self.producers.head.load(Ordering::Acquire) & !PARKED == tail as usize {
            Peek::Empty
        } else {
            Peek::Busy
        }
    }

    /// Takes the front node: returns it (it is the queue's stub now: its item is the caller's
    /// to run or take, but the node stays the queue's) and the previous stub, which the caller
    /// frees. `None` when nothing is ready.
    ///
    /// # Safety
    ///
    /// Only the consumer calls it.
    pub unsafe fn pop(&self) -> Option<(*mut Link, *mut Link)> {
        // SAFETY: the caller is the consumer.
        let tail = unsafe { self.tail() };
        // SAFETY: the stub is live until the consumer frees it.
        let next = unsafe { (*tail).next.load(Ordering::Acquire) };
        if next.is_null() {
            return None;
        }
        // SAFETY: the caller is the consumer: nobody else reads or writes the tail.
        self.tail.with_mut(|t| unsafe { *t = next });
        Some((next, tail))
    }

    /// The consumer's current stub (the last node taken).
    ///
    /// # Safety
    ///
    /// Only the consumer calls it.
    pub unsafe fn stub(&self) -> *mut Link {
        // SAFETY: the caller is the consumer.
        unsafe { self.tail() }
    }

    /// # Safety
    ///
    /// Only the consumer calls it.
    unsafe fn tail(&self) -> *mut Link {
        // SAFETY: only the consumer writes the tail, and the caller is the consumer.
        self.tail.with(|t| unsafe { *t })
    }

    /// The pump found the queue empty and cleared the fd: parks, so the next producer rings.
    /// Returns `false` if items arrived meanwhile (keep draining; nothing changed).
    ///
    /// # Safety
    ///
    /// Only the consumer calls it.
    pub unsafe fn park(&self) -> bool {
        // SAFETY: the caller is the consumer.
        let tail = unsafe { self.tail() } as usize;
        match self.producers.head.compare_exchange(
            tail,
            tail | PARKED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(now) => now == tail | PARKED,
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("parked", &self.is_parked())
            .finish_non_exhaustive()
    }
}
