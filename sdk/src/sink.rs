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

/// One message to the host sink. Everything it borrows is valid only during the sink call.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// What the message is about, e.g. `"particles/positions"`.
    pub topic: &'a str,
    /// What it carries.
    pub payload: Payload<'a>,
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
        shared.backend.emit(shared, &Message { topic, payload })
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
        self.post_promised(move |main| {
            let _held = held;
            let _ = main.emit(&topic, payload.view());
        })
    }
}
