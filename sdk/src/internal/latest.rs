//! Frames from a producer thread (a simulation) to the main thread.
//!
//! [`latest`] makes a triple buffer: the producer publishes whole frames without ever waiting,
//! the consumer always reads the newest complete frame without a lock, and frames the consumer
//! is too slow to see are skipped (interactive playback). Three buffers are allocated once and
//! reused: no copy and no allocation per frame.
//!
//! # The protocol (checked by `sdk/tests/loom.rs`)
//!
//! **State.** Three buffers and one atomic byte, `state`. At every moment each buffer index
//! 0, 1, 2 belongs to exactly one of three owners: the writer (`back`, the buffer it fills
//! next), the reader (`front`, the frame it last took), and `state` (bits 0–1, `INDEX`: the
//! buffer in between). Bit 2, `FRESH`, says the buffer in `state` holds a frame the reader has
//! not taken. Initially the writer owns 0, `state` holds 1 (not fresh), the reader owns 2, and
//! all three hold clones of the initial value.
//!
//! **Operations.** Only two read-modify-writes ever change `state`:
//!
//! * **Publish** (writer): fill `back` in place, then `old = state.swap(back | FRESH, AcqRel)`
//!   and take `old & INDEX` as the new `back`.
//! * **Take** (reader, only if a `load(Acquire)` sees `FRESH`): `old =
//!   state.swap(front, AcqRel)` — with `FRESH` clear — and take `old & INDEX` as the new
//!   `front`; then read `front`.
//!
//! **Invariants.** (1) The three indices `back`, `front` and `state & INDEX` are always a
//! permutation of {0, 1, 2}: each swap gives away the caller's index and receives the one it
//! replaces. (2) Only the owner of a buffer touches it: the writer writes only `back`, the
//! reader reads only `front`. (3) `FRESH` is set exactly when the buffer in `state` was put
//! there by a publish that no take has received.
//!
//! **Why it is correct.** *No tearing*: by (1) and (2) the reader never reads a buffer the
//! writer is filling, and a buffer changes owner only through `state`. *Contents are visible*:
//! the writer's swap releases its writes to the buffer; the reader's swap that receives the
//! index acquires them (it reads the writer's value or a later one in `state`'s modification
//! order, all of them writer swaps or reader swaps that themselves acquired). Symmetrically
//! the reader's release lets the writer reuse the buffer it gets back without racing the
//! reader's last read of it. *Never older*: every publish replaces the buffer in `state` with
//! a newer frame, so the buffer in `state` is always the newest published frame not yet taken
//! (or a frame already taken, with `FRESH` clear); a take therefore returns a frame newer than
//! the reader's `front`. *Nothing lost at the end*: the last publish leaves its frame in
//! `state` with `FRESH` set until the reader takes it, so a reader that reads after the writer
//! stopped gets the last frame. Frames in between may be skipped — by design.
//!
//! **What the model checks.** `triple_buffer_two_frames_two_reads` and
//! `triple_buffer_three_frames_three_reads` in `sdk/tests/loom.rs` run a writer publishing
//! frames `(n, n)` against a reader taking 2 or 3 times, in every interleaving loom allows, and
//! assert: no torn frame (the halves agree), every frame taken is newer than the one before,
//! and after the writer joins, one more read ends on the last frame published.

use crate::internal::sync::{Arc, AtomicU8, Cell, Ordering};

const INDEX: u8 = 0b011;
const FRESH: u8 = 0b100;

struct Buffers<T> {
    bufs: [Cell<T>; 3],
    state: AtomicU8,
}

// SAFETY: each buffer is accessed only by its current owner (writer's `back`, reader's
// `front`); ownership moves only through the `state` swaps, which order the accesses. `T: Send`
// lets a buffer's contents move between the two threads.
unsafe impl<T: Send> Sync for Buffers<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Buffers<T> {}

/// The producing end of a triple buffer. See [`latest`].
pub struct LatestWriter<T> {
    buffers: Arc<Buffers<T>>,
    back: u8,
}

/// The consuming end of a triple buffer. See [`latest`].
pub struct LatestReader<T> {
    buffers: Arc<Buffers<T>>,
    front: u8,
}

impl<T> std::fmt::Debug for LatestWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestWriter").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for LatestReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestReader").finish_non_exhaustive()
    }
}

/// A triple buffer of frames, every buffer starting as a clone of `initial`.
///
/// # Examples
///
/// ```
/// let (mut writer, mut reader) = hostloop::latest::latest(vec![0.0f32; 3]);
/// writer.write(|frame| frame.copy_from_slice(&[1.0, 2.0, 3.0]));
/// writer.write(|frame| frame.copy_from_slice(&[4.0, 5.0, 6.0]));
/// // The reader skips to the newest complete frame.
/// assert_eq!(reader.read().map(|f| f.clone()), Some(vec![4.0, 5.0, 6.0]));
/// assert!(reader.read().is_none(), "nothing newer yet");
/// assert_eq!(reader.current(), &[4.0, 5.0, 6.0]);
/// ```
pub fn latest<T: Clone + Send>(initial: T) -> (LatestWriter<T>, LatestReader<T>) {
    let buffers = Arc::new(Buffers {
        bufs: [
            Cell::new(initial.clone()),
            Cell::new(initial.clone()),
            Cell::new(initial),
        ],
        state: AtomicU8::new(1),
    });
    (
        LatestWriter {
            buffers: buffers.clone(),
            back: 0,
        },
        LatestReader { buffers, front: 2 },
    )
}

impl<T: Send> LatestWriter<T> {
    /// Fills the writer's buffer with `fill` (it holds the frame published two writes ago, to
    /// be overwritten in place) and publishes it. Never waits.
    pub fn write(&mut self, fill: impl FnOnce(&mut T)) {
        // SAFETY: `back` is owned by the writer until the swap below hands it over.
        self.buffers.bufs[self.back as usize].with_mut(|p| fill(unsafe { &mut *p }));
        let old = self.buffers.state.swap(self.back | FRESH, Ordering::AcqRel);
        self.back = old & INDEX;
    }
}

impl<T: Send> LatestReader<T> {
    /// Takes the newest published frame if one arrived since the last call, else `None`.
    pub fn read(&mut self) -> Option<&T> {
        if !self.fresh() {
            return None;
        }
        let old = self.buffers.state.swap(self.front, Ordering::AcqRel);
        self.front = old & INDEX;
        Some(self.current())
    }

    /// Whether a frame newer than [`current`](Self::current) is waiting.
    pub fn fresh(&self) -> bool {
        self.buffers.state.load(Ordering::Acquire) & FRESH != 0
    }

    /// The frame taken by the last successful [`read`](Self::read) (the initial value before).
    pub fn current(&self) -> &T {
        // SAFETY: `front` is owned by the reader until its next swap, which needs `&mut self`.
        self.buffers.bufs[self.front as usize].with(|p| unsafe { &*p })
    }
}
