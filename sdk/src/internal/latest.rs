//! Frames from a producer thread (a simulation) to the main thread.
//!
//! [`latest`] makes a triple buffer: the producer publishes whole frames without ever waiting,
//! the consumer always reads the newest complete frame without a lock, and frames the consumer
//! is too slow to see are skipped (interactive playback). Three buffers are allocated once and
//! reused: no copy and no allocation per frame.
//!
//! # The protocol (checked by `sdk/tests/loom.rs`)
//!
//! Three buffers; the writer owns one (`back`), the reader owns one (`front`), the third is
//! shared. One atomic byte, `state`, holds the shared buffer's index and a `FRESH` bit.
//!
//! * **Publish**: the writer fills `back`, then `old = state.swap(back | FRESH, AcqRel)` and
//!   takes `old`'s buffer as its new `back`.
//! * **Read**: if `state & FRESH`, the reader does `old = state.swap(front, AcqRel)` and takes
//!   `old`'s buffer as its new `front`; then it reads `front`.
//!
//! Each buffer index is owned by exactly one party at any time (the swaps exchange ownership),
//! so the reader never sees a frame being written (no tearing). The release half of the
//! writer's swap publishes the frame's contents; the acquire half of the reader's swap receives
//! them. The shared buffer is always the most recently published one not yet taken, so a read
//! never returns a frame older than one it returned before.

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
/// let (mut writer, mut reader) = hostloop::frames::latest(vec![0.0f32; 3]);
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
