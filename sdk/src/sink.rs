//! The host sink: messages from tools to the host, delivered on the main thread.
//!
//! The host registers one sink ([`Handle::set_sink`]); tools send it a topic plus a payload —
//! raw bytes or a typed array view such as particle positions. On the main thread
//! ([`Main::emit`]) the payload is borrowed straight from the caller for the duration of the sink
//! call (zero copy); from other threads ([`Handle::emit`]) it is moved into a main-thread item
//! first.

use crate::internal::panic::catch;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::internal::stats::StatsCore;
use crate::internal::sync::lock;
use crate::main_thread::Main;

/// The element type of a typed array payload. The numbers are part of the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ElemType {
    U8 = 1,
    I32 = 2,
    U32 = 3,
    I64 = 4,
    U64 = 5,
    F32 = 6,
    F64 = 7,
}

impl ElemType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            ElemType::U8 => 1,
            ElemType::I32 | ElemType::U32 | ElemType::F32 => 4,
            ElemType::I64 | ElemType::U64 | ElemType::F64 => 8,
        }
    }
}

/// Plain element types that can be viewed as a typed array.
pub trait Element: Copy + Send + 'static {
    /// The matching [`ElemType`].
    const TYPE: ElemType;
}

macro_rules! element {
    ($($t:ty => $e:ident),*) => {$(impl Element for $t { const TYPE: ElemType = ElemType::$e; })*};
}
element!(u8 => U8, i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64);

/// A typed, strided array borrowed for the duration of a sink call: `count` records of
/// `components` elements of type `elem`, each record starting `stride` bytes after the previous.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArrayView<'a> {
    elem: ElemType,
    components: usize,
    count: usize,
    stride: usize,
    bytes: &'a [u8],
}

impl fmt::Debug for ArrayView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayView")
            .field("elem", &self.elem)
            .field("components", &self.components)
            .field("count", &self.count)
            .field("stride", &self.stride)
            .finish()
    }
}

impl<'a> ArrayView<'a> {
    /// A tightly packed view of `data`, `components` elements per record (3 for xyz positions).
    ///
    /// # Panics
    ///
    /// If `components` is 0 or does not divide `data.len()`.
    pub fn packed<T: Element>(data: &'a [T], components: usize) -> Self {
        assert!(
            components > 0 && data.len().is_multiple_of(components),
            "{} elements do not split into records of {components}",
            data.len()
        );
        let size = std::mem::size_of_val(data);
        // SAFETY: `T: Element` is only implemented for plain integer and float types, which
        // have no padding and every byte initialised; the slice covers exactly `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), size) };
        ArrayView {
            elem: T::TYPE,
            components,
            count: data.len() / components,
            stride: components * T::TYPE.size(),
            bytes,
        }
    }

    /// A strided view over raw bytes (for example one field of an array of structs).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the records do not fit in `bytes` or the stride is smaller
    /// than a record.
    pub fn strided(
        elem: ElemType,
        components: usize,
        count: usize,
        stride: usize,
        bytes: &'a [u8],
    ) -> Result<Self> {
        let record = components
            .checked_mul(elem.size())
            .ok_or(Error::InvalidArgument("record size overflows"))?;
        if components == 0 || stride < record {
            return Err(Error::InvalidArgument("stride smaller than one record"));
        }
        let needed = match count {
            0 => 0,
            n => (n - 1)
                .checked_mul(stride)
                .and_then(|x| x.checked_add(record))
                .ok_or(Error::InvalidArgument("array size overflows"))?,
        };
        if needed > bytes.len() {
            return Err(Error::InvalidArgument(
                "records do not fit in the bytes given",
            ));
        }
        Ok(ArrayView {
            elem,
            components,
            count,
            stride,
            bytes,
        })
    }

    /// The element type.
    pub fn elem(&self) -> ElemType {
        self.elem
    }
    /// Elements per record.
    pub fn components(&self) -> usize {
        self.components
    }
    /// Number of records.
    pub fn count(&self) -> usize {
        self.count
    }
    /// Bytes from one record to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// The underlying bytes (at least `(count - 1) * stride + record size` of them).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Opaque bytes (JSON, a serialised struct, a path).
    Bytes(&'a [u8]),
    /// A typed array: frame data such as positions or colours.
    Array(ArrayView<'a>),
}

/// One message to the host sink. Everything it borrows is valid only during the sink call —
/// unless the sink keeps it with [`lend`](Message::lend).
#[derive(Clone, Copy)]
pub struct Message<'a> {
    /// What the message is about, e.g. `"particles/positions"`.
    pub topic: &'a str,
    /// What it carries.
    pub payload: Payload<'a>,
    /// Who can keep the payload's memory alive past the call (see [`Lend`]).
    pub(crate) lender: Option<&'a dyn Lend>,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload", &self.payload)
            .field("lendable", &self.lender.is_some())
            .finish()
    }
}

impl<'a> Message<'a> {
    /// A message whose payload is borrowed for the sink call only.
    pub fn new(topic: &'a str, payload: Payload<'a>) -> Self {
        Message {
            topic,
            payload,
            lender: None,
        }
    }

    /// Whether [`lend`](Self::lend) can keep this payload past the sink call.
    pub fn is_lendable(&self) -> bool {
        self.lender.is_some()
    }

    /// Keeps the payload's memory alive, unchanged, past the sink call: a viewer can upload a
    /// frame straight from hostloop's memory after the pump returns, instead of copying it
    /// inside the sink (a pump never splits an item, so a 12 MB copy there overruns a 2 ms
    /// budget). `None` when the payload is only borrowed for the call (then copy what you
    /// need). The lease may be dropped on any thread; while it is held the producer writes
    /// its next frames elsewhere (a simulation's frame buffer is copied on write, so holding
    /// one lease across frames costs one allocation per frame, and none when it is dropped
    /// before the frame after next).
    pub fn lend(&self) -> Option<Lease> {
        let keep = self.lender?.lend()?;
        let (bytes, shape) = match self.payload {
            Payload::Bytes(b) => (b, None),
            Payload::Array(a) => (a.bytes, Some((a.elem, a.components, a.count, a.stride))),
        };
        Some(Lease {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            shape,
            _keep: keep,
        })
    }
}

/// Keeps a payload's memory alive past a sink call (the producer side of [`Message::lend`]).
///
/// # Safety (for implementors, all inside hostloop)
///
/// While a guard returned by `lend` lives, the memory the message's payload borrows stays
/// allocated and is not written. Guards are `Send + Sync`: they may be dropped on any thread.
pub(crate) trait Lend: Sync {
    /// A guard that keeps the memory, or `None` if it cannot be kept now.
    fn lend(&self) -> Option<Box<dyn Send + Sync>>;
}

impl<T: Send + Sync + 'static> Lend for std::sync::Arc<T> {
    fn lend(&self) -> Option<Box<dyn Send + Sync>> {
        Some(Box::new(self.clone()))
    }
}

/// A payload kept past its sink call ([`Message::lend`]); the memory is released when the
/// lease is dropped, on any thread.
pub struct Lease {
    ptr: *const u8,
    len: usize,
    shape: Option<(ElemType, usize, usize, usize)>,
    _keep: Box<dyn Send + Sync>,
}

// SAFETY: the lease only reads memory its guard keeps alive and unwritten (see `Lend`); the
// guard itself is `Send + Sync`.
unsafe impl Send for Lease {}
// SAFETY: as above; `&Lease` gives only shared reads.
unsafe impl Sync for Lease {}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("payload", &self.payload())
            .finish()
    }
}

impl Lease {
    /// The payload, exactly as the sink saw it (the same addresses).
    pub fn payload(&self) -> Payload<'_> {
        let bytes = self.bytes();
        match self.shape {
            None => Payload::Bytes(bytes),
            Some((elem, components, count, stride)) => Payload::Array(ArrayView {
                elem,
                components,
                count,
                stride,
                bytes,
            }),
        }
    }

    /// The payload's bytes (for an array, from its first record to the end of its last).
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr..ptr+len` is the payload's memory, kept alive and unwritten by `_keep`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A frame buffer the host may keep past the sink call: an `Arc` that is copied on write.
///
/// Use it as a simulation's frame (`type Frame = Shared<Vec<f32>>`) and emit it with
/// [`Main::emit_shared`]; the host's sink can then [`lend`](Message::lend) the frame instead
/// of copying it. Writing through `&mut` ([`DerefMut`](std::ops::DerefMut)) reuses the buffer
/// unless a lease holds it — then the frame is copied first and the lease keeps the old one.
/// Cloning makes an independent copy.
///
/// ```
/// use hostloop::Shared;
/// let mut frame = Shared::new(vec![0.0f32; 3]);
/// frame.copy_from_slice(&[1.0, 2.0, 3.0]);
/// assert_eq!(&frame[..], &[1.0, 2.0, 3.0]);
/// ```
pub struct Shared<T>(std::sync::Arc<T>);

impl<T> Shared<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Shared(std::sync::Arc::new(value))
    }

    /// Whether a lease holds this buffer now (the next write copies it).
    pub fn is_lent(&self) -> bool {
        std::sync::Arc::strong_count(&self.0) > 1
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl<T: Clone> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared::new((*self.0).clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (*self.0).fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Shared::new(T::default())
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::new(value)
    }
}

/// The host's sink callback.
pub type Sink = Box<dyn FnMut(&Message<'_>) + Send>;

/// An owned payload, moved to the main thread by [`Handle::emit`].
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedPayload {
    /// Opaque bytes.
    Bytes(Vec<u8>),
    /// A packed typed array: `components` elements per record.
    Array {
        /// Element type.
        elem: ElemType,
        /// Elements per record.
        components: usize,
        /// The packed elements' bytes.
        bytes: Vec<u8>,
    },
}

impl OwnedPayload {
    /// A packed typed array copied from `data`.
    pub fn array<T: Element>(data: &[T], components: usize) -> Self {
        let view = ArrayView::packed(data, components);
        OwnedPayload::Array {
            elem: T::TYPE,
            components,
            bytes: view.bytes.to_vec(),
        }
    }

    fn view(&self) -> Payload<'_> {
        match self {
            OwnedPayload::Bytes(b) => Payload::Bytes(b),
            OwnedPayload::Array {
                elem,
                components,
                bytes,
            } => {
                let record = components * elem.size();
                Payload::Array(ArrayView {
                    elem: *elem,
                    components: *components,
                    count: bytes.len().checked_div(record).unwrap_or(0),
                    stride: record,
                    bytes,
                })
            }
        }
    }
}

impl Main<'_> {
    /// Sends a message to the host sink now, on the main thread, borrowing `payload` for the
    /// duration of the sink call (zero copy). Returns whether a sink received it.
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] when called from inside the sink itself.
    pub fn emit(&mut self, topic: &str, payload: Payload<'_>) -> Result<bool> {
        let shared = self.handle().shared();
        shared.backend.emit(shared, &Message::new(topic, payload))
    }

    /// Sends a frame buffer to the host sink now, as a packed array of `components` elements
    /// per record, which the sink may keep past the call ([`Message::lend`]) — no copy on
    /// either side. Returns whether a sink received it.
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] from inside the sink itself; [`Error::InvalidArgument`] if
    /// `components` is 0 or does not divide the buffer's length.
    pub fn emit_shared<T: Element + Sync>(
        &mut self,
        topic: &str,
        frame: &Shared<Vec<T>>,
        components: usize,
    ) -> Result<bool> {
        if components == 0 || !frame.len().is_multiple_of(components) {
            return Err(Error::InvalidArgument(
                "the buffer does not split into records of `components`",
            ));
        }
        let shared = self.handle().shared();
        let msg = Message {
            topic,
            payload: Payload::Array(ArrayView::packed(&frame.0, components)),
            lender: Some(&frame.0),
        };
        shared.backend.emit(shared, &msg)
    }

    /// Main thread: hands `msg` to the sink with its lender (crate-internal producers whose
    /// memory can be kept: shared frames, payloads from other threads, cache maps, workers).
    pub(crate) fn emit_message(&mut self, msg: &Message<'_>) -> Result<bool> {
        let shared = self.handle().shared();
        shared.backend.emit(shared, msg)
    }
}

/// The host sink of a local runtime: at most one, called on the main thread only.
#[derive(Default)]
pub(crate) struct SinkSlot {
    sink: Mutex<Option<Sink>>,
    /// Bumped by every `set`, so a sink replaced while it runs is not put back.
    generation: AtomicU64,
    /// A delivery is under way (the sink is taken out of `sink` while it runs).
    in_sink: AtomicBool,
}

impl SinkSlot {
    fn set(&self, sink: Option<Sink>) {
        let old = {
            let mut slot = lock(&self.sink);
            self.generation.fetch_add(1, Ordering::AcqRel);
            std::mem::replace(&mut *slot, sink)
        };
        // Dropped outside the lock: its captures' `Drop` (a C finalizer) may call back in.
        drop(old);
    }

    /// Main thread: hands `msg` to the sink. Returns whether a sink took it.
    pub(crate) fn deliver(&self, stats: &StatsCore, msg: &Message<'_>) -> Result<bool> {
        if self.in_sink.swap(true, Ordering::Acquire) {
            return Err(Error::Reentrant);
        }
        // Take the sink out while it runs, so it may call `set_sink` itself; it goes back only
        // if nobody replaced or removed it meanwhile (else it is dropped after it returned).
        let generation = self.generation.load(Ordering::Acquire);
        let taken = lock(&self.sink).take();
        let delivered = match taken {
            None => {
                stats.record_sink(false);
                false
            }
            Some(mut sink) => {
                if catch(|| sink(msg)).is_err() {
                    stats.record_main_panic();
                }
                let mut slot = lock(&self.sink);
                if slot.is_none() && self.generation.load(Ordering::Acquire) == generation {
                    *slot = Some(sink);
                }
                drop(slot);
                stats.record_sink(true);
                true
            }
        };
        self.in_sink.store(false, Ordering::Release);
        Ok(delivered)
    }
}

impl Handle {
    /// Registers (or with `None`, removes) the host sink. It is called on the main thread only,
    /// during [`pump`](Handle::pump) or [`Main::emit`]. A panicking sink is caught and counted.
    /// A sink replaced or removed while it runs (from inside itself) is dropped after it
    /// returns, never during the call.
    ///
    /// Inside a plugin this does nothing: the sink belongs to the host, and [`Main::emit`]
    /// reaches it through the plugin's services.
    pub fn set_sink(&self, sink: Option<Sink>) {
        let shared = self.shared();
        if shared.backend.owns_sink() {
            shared.sink.set(sink);
        }
    }

    /// Sends a message to the host sink from any thread: the payload moves to the main thread
    /// and the sink sees it at the next pump.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`] after shutdown; [`Error::Backlog`] while the host has not pumped and
    /// the backlog is at its limit — in items, or in the bytes of the payloads emitted this way
    /// and still waiting ([`Builder::main_backlog_bytes`](crate::Builder::main_backlog_bytes)).
    /// Nothing was queued then.
    pub fn emit(&self, topic: impl Into<String>, payload: OwnedPayload) -> Result<()> {
        let shared = self.shared();
        let len = match payload.view() {
            Payload::Bytes(b) => b.len(),
            Payload::Array(a) => a.bytes().len(),
        };
        shared.main.admit(shared, len.max(1))?;
        let held = crate::main_thread::MainQueue::hold_bytes(shared, len);
        let topic = topic.into();
        // In an `Arc`, so the sink may keep it past the call without a copy.
        let payload = std::sync::Arc::new(payload);
        self.post_promised(move |main| {
            let _held = held;
            let msg = Message {
                topic: &topic,
                payload: payload.view(),
                lender: Some(&payload),
            };
            let _ = main.emit_message(&msg);
        })
    }
}
