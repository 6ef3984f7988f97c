//! Saving and restoring state: a portable, versioned, checksummed byte format.
//!
//! A simulation saves itself at a step boundary by writing its fields, in order, to a
//! [`SnapshotWriter`], and restores by reading them back, in the same order, from a
//! [`SnapshotReader`]. The same format carries a plugin's state across a hot reload. The bytes
//! are the same on every platform (little-endian, fixed widths), name the kind of simulation and
//! the version of its layout, and end in a checksum, so a snapshot saved by one build restores in
//! another — or is rejected with a [`SnapshotError`] that says why: truncated, corrupted, not a
//! snapshot, another kind of simulation, or a version this build does not read. Whatever the
//! bytes, restoring never panics and never allocates more than the snapshot's own size.
//!
//! ```
//! use hostloop::{SnapshotError, SnapshotReader, SnapshotWriter};
//!
//! struct Particles {
//!     step: u64,
//!     dt: f32,
//!     positions: Vec<f32>,
//! }
//!
//! impl Particles {
//!     const KIND: &str = "particles";
//!
//!     fn save(&self) -> Vec<u8> {
//!         let mut w = SnapshotWriter::new(Self::KIND, 2);
//!         w.u64(self.step).f32(self.dt).f32s(&self.positions);
//!         w.finish()
//!     }
//!
//!     fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
//!         let mut r = SnapshotReader::open(bytes, Self::KIND, 1..=2)?;
//!         // Read everything before changing `self`: a rejected snapshot leaves it as it was.
//!         let step = r.u64()?;
//!         let dt = if r.version() >= 2 { r.f32()? } else { 1.0 / 24.0 }; // version 1 had no dt
//!         let positions = r.f32s()?;
//!         r.finish()?; // everything written was read
//!         *self = Particles { step, dt, positions };
//!         Ok(())
//!     }
//! }
//!
//! let sim = Particles { step: 120, dt: 0.01, positions: vec![0.0, 1.5, -2.0] };
//! let bytes = sim.save();
//!
//! let mut restored = Particles { step: 0, dt: 0.0, positions: Vec::new() };
//! restored.restore(&bytes)?;
//! assert_eq!((restored.step, restored.dt), (120, 0.01));
//! assert_eq!(restored.positions, [0.0, 1.5, -2.0]);
//!
//! // A damaged snapshot is an error, never a panic, and changes nothing.
//! let damaged = &bytes[..bytes.len() - 1];
//! assert!(matches!(restored.restore(damaged), Err(SnapshotError::Truncated { .. })));
//! assert_eq!(restored.step, 120);
//! # Ok::<(), SnapshotError>(())
//! ```
//!
//! # Byte layout
//!
//! All integers are little-endian; `k` is the length of the kind and `n` that of the payload.
//!
//! | offset     | size | field    | contents                                                  |
//! |------------|------|----------|-----------------------------------------------------------|
//! | 0          | 8    | magic    | `48 4C 53 4E 41 50 0D 0A` (`"HLSNAP\r\n"`)                |
//! | 8          | 2    | format   | `u16` container format version: `1`                       |
//! | 10         | 1    | `k`      | `u8` length of the kind                                   |
//! | 11         | `k`  | kind     | UTF-8 name of what was saved, e.g. `particles`            |
//! | 11 + k     | 4    | version  | `u32` schema version: the saver's own layout version      |
//! | 15 + k     | 8    | `n`      | `u64` length of the payload                               |
//! | 23 + k     | `n`  | payload  | the values written, see below                             |
//! | 23 + k + n | 4    | checksum | `u32` CRC-32C of bytes `0 .. 23 + k + n`                  |
//!
//! A snapshot is exactly `27 + k + n` bytes. The magic and format (the first 10 bytes) stay put in
//! every future format; everything after them is defined by the format number. The magic's `\r\n`
//! makes a snapshot that went through a text-mode line-ending conversion fail the magic check.
//!
//! The checksum is CRC-32C (Castagnoli; as in iSCSI, ext4 and the SSE 4.2 `crc32` instruction):
//! reflected polynomial `0x82F63B78`, initial value `0xFFFFFFFF`, final XOR `0xFFFFFFFF`; the
//! CRC of the ASCII bytes `123456789` is `0xE3069283`.
//!
//! ## Payload
//!
//! The payload is the values in the order they were written, with no tags, padding or alignment.
//! Each [`SnapshotWriter`] method below is read back by the [`SnapshotReader`] method of the same
//! name:
//!
//! | methods             | encoding                                               |
//! |---------------------|--------------------------------------------------------|
//! | `u8`, `bool`        | 1 byte; a `bool` is `0` or `1`                         |
//! | `u16`               | 2 bytes                                                |
//! | `u32`, `i32`, `f32` | 4 bytes                                                |
//! | `u64`, `i64`, `f64` | 8 bytes                                                |
//! | `bytes`, `str`      | `u64` byte count, then the bytes (UTF-8 for `str`)     |
//! | `u32s`, `f32s`      | `u64` element count, then 4 bytes per element          |
//! | `u64s`, `f64s`      | `u64` element count, then 8 bytes per element          |
//!
//! Signed integers are two's complement. Floats are their IEEE 754 bits, stored as `u32`/`u64`:
//! NaN payloads, infinities and `-0.0` restore bit for bit.
//!
//! # Checks
//!
//! [`SnapshotReader::open`] checks the whole container before any value is read, in this order:
//! magic ([`BadMagic`](SnapshotError::BadMagic)), format
//! ([`UnsupportedFormat`](SnapshotError::UnsupportedFormat)), lengths
//! ([`Truncated`](SnapshotError::Truncated) if the bytes are too few,
//! [`LengthMismatch`](SnapshotError::LengthMismatch) if too many), checksum
//! ([`ChecksumMismatch`](SnapshotError::ChecksumMismatch)), kind
//! ([`WrongKind`](SnapshotError::WrongKind)) and version
//! ([`UnsupportedVersion`](SnapshotError::UnsupportedVersion)). So damaged bytes report the
//! damage, not whatever kind or version they happen to spell, and an intact snapshot of something
//! else reports what it is.
//!
//! Reads then check the payload against what the reader asks for: reading past its end is
//! [`UnexpectedEnd`](SnapshotError::UnexpectedEnd) — a length prefix is checked against the bytes
//! that remain *before* anything is allocated — and [`SnapshotReader::finish`] reports unread
//! bytes as [`TrailingBytes`](SnapshotError::TrailingBytes). Both mean the reading code does not
//! match the writing code.
//!
//! # Versions
//!
//! There are two. The container *format* is this module's and changes only if the layout above
//! does. The schema *version* is yours: when a simulation's fields change, bump the version it
//! writes, keep accepting the old ones in the range given to [`SnapshotReader::open`], and branch
//! on [`SnapshotReader::version`] while reading, as the example does.

use std::fmt;
use std::ops::RangeInclusive;

use crate::error::Error;
use crate::internal::crc32c::crc32c;

/// The first 8 bytes of every snapshot.
const MAGIC: [u8; 8] = *b"HLSNAP\r\n";

/// The container format this build writes and reads.
const FORMAT: u16 = 1;

/// Writes a snapshot: a header naming the kind and schema version, the values written, and a
/// checksum. See the [module docs](self) for the byte layout.
///
/// Every write appends to an in-memory buffer and returns `&mut Self`, so writes chain;
/// [`finish`](SnapshotWriter::finish) seals the buffer and returns the bytes.
///
/// # Examples
///
/// ```
/// let mut w = hostloop::SnapshotWriter::new("particles", 1);
/// w.u64(42).bool(true).str("seed-7").f32s(&[1.0, 2.0]);
/// let bytes: Vec<u8> = w.finish();
/// # assert_eq!(bytes.len(), 27 + "particles".len() + 8 + 1 + (8 + 6) + (8 + 2 * 4));
/// ```
#[derive(Clone)]
pub struct SnapshotWriter {
    buf: Vec<u8>,
    /// Where the payload length goes; the payload starts right after it.
    len_at: usize,
}

impl SnapshotWriter {
    /// Starts a snapshot of `kind` (what is being saved, e.g. `"particles"`) at schema `version`
    /// (the saver's own layout version, see [Versions](self#versions)).
    ///
    /// # Panics
    ///
    /// If `kind` is longer than 255 bytes.
    pub fn new(kind: &str, version: u32) -> Self {
        let Ok(kind_len) = u8::try_from(kind.len()) else {
            panic!(
                "snapshot kind {kind:?} is {} bytes long; at most 255 are allowed",
                kind.len()
            );
        };
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT.to_le_bytes());
        buf.push(kind_len);
        buf.extend_from_slice(kind.as_bytes());
        buf.extend_from_slice(&version.to_le_bytes());
        let len_at = buf.len();
        buf.extend_from_slice(&0u64.to_le_bytes()); // patched by `finish`
        SnapshotWriter { buf, len_at }
    }

    /// Reserves room for at least `additional` more payload bytes, to avoid regrowing the buffer
    /// while writing a large state.
    pub fn reserve(&mut self, additional: usize) -> &mut Self {
        // The checksum comes on top.
        self.buf.reserve(additional.saturating_add(4));
        self
    }

    /// The number of payload bytes written so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - self.len_at - 8
    }

    /// Writes a `u8` (1 byte).
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.put(value)
    }

    /// Writes a `u16` (2 bytes).
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.put(value)
    }

    /// Writes a `u32` (4 bytes).
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.put(value)
    }

    /// Writes a `u64` (8 bytes).
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.put(value)
    }

    /// Writes an `i32` (4 bytes, two's complement).
    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.put(value)
    }

    /// Writes an `i64` (8 bytes, two's complement).
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.put(value)
    }

    /// Writes an `f32` (its 4 IEEE 754 bytes; NaN payloads and `-0.0` are kept).
    pub fn f32(&mut self, value: f32) -> &mut Self {
        self.put(value)
    }

    /// Writes an `f64` (its 8 IEEE 754 bytes; NaN payloads and `-0.0` are kept).
    pub fn f64(&mut self, value: f64) -> &mut Self {
        self.put(value)
    }

    /// Writes a `bool` (1 byte: `0` or `1`).
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.put(u8::from(value))
    }

    /// Writes a byte string: its length as a `u64`, then the bytes.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.put(value.len() as u64);
        self.buf.extend_from_slice(value);
        self
    }

    /// Writes a string: its length in bytes as a `u64`, then its UTF-8 bytes.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// Writes a slice of `f32`: its length as a `u64`, then 4 bytes per element.
    pub fn f32s(&mut self, values: &[f32]) -> &mut Self {
        self.put_slice(values)
    }

    /// Writes a slice of `f64`: its length as a `u64`, then 8 bytes per element.
    pub fn f64s(&mut self, values: &[f64]) -> &mut Self {
        self.put_slice(values)
    }

    /// Writes a slice of `u32`: its length as a `u64`, then 4 bytes per element.
    pub fn u32s(&mut self, values: &[u32]) -> &mut Self {
        self.put_slice(values)
    }

    /// Writes a slice of `u64`: its length as a `u64`, then 8 bytes per element.
    pub fn u64s(&mut self, values: &[u64]) -> &mut Self {
        self.put_slice(values)
    }

    /// Seals the snapshot (payload length and checksum) and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let payload_len = self.payload_len() as u64;
        self.buf[self.len_at..self.len_at + 8].copy_from_slice(&payload_len.to_le_bytes());
        let checksum = crc32c(&self.buf);
        self.buf.extend_from_slice(&checksum.to_le_bytes());
        self.buf
    }

    fn put<T: Le<N>, const N: usize>(&mut self, value: T) -> &mut Self {
        self.buf.extend_from_slice(&value.to_le());
        self
    }

    fn put_slice<T: Le<N>, const N: usize>(&mut self, values: &[T]) -> &mut Self {
        self.put(values.len() as u64);
        let start = self.buf.len();
        // A slice in memory is at most `isize::MAX` bytes, so this does not overflow.
        self.buf.resize(start + values.len() * N, 0);
        let (chunks, _) = self.buf[start..].as_chunks_mut::<N>();
        // On a little-endian target this compiles to a copy.
        for (chunk, value) in chunks.iter_mut().zip(values) {
            *chunk = value.to_le();
        }
        self
    }
}

impl fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("payload_len", &self.payload_len())
            .finish_non_exhaustive()
    }
}

/// Reads a snapshot made by [`SnapshotWriter`]: the values, in the order they were written.
/// See the [module docs](self) for the byte layout and the checks.
///
/// A read that fails returns an error and leaves the reader where it was. Reads never panic and
/// never allocate more than the bytes they read back, whatever the snapshot contains.
///
/// # Examples
///
/// ```
/// use hostloop::{SnapshotReader, SnapshotWriter};
///
/// let mut w = SnapshotWriter::new("particles", 3);
/// w.u32(7).str("seed-7");
/// let bytes = w.finish();
///
/// let mut r = SnapshotReader::open(&bytes, "particles", 1..=3)?;
/// assert_eq!(r.version(), 3);
/// assert_eq!(r.u32()?, 7);
/// assert_eq!(r.str()?, "seed-7");
/// r.finish()?;
/// # Ok::<(), hostloop::SnapshotError>(())
/// ```
#[derive(Clone)]
pub struct SnapshotReader<'a> {
    version: u32,
    /// The payload bytes not read yet.
    rest: &'a [u8],
}

impl<'a> SnapshotReader<'a> {
    /// Checks that `bytes` is a whole, undamaged snapshot of `kind` with a schema version in
    /// `versions`, and returns a reader positioned at its first value.
    ///
    /// # Errors
    ///
    /// The first check that fails, in this order:
    ///
    /// * [`SnapshotError::BadMagic`]: `bytes` is not a snapshot.
    /// * [`SnapshotError::UnsupportedFormat`]: a container format this build does not read.
    /// * [`SnapshotError::Truncated`]: fewer bytes than the header declares (including an empty
    ///   slice or a cut-off header).
    /// * [`SnapshotError::LengthMismatch`]: more bytes than the header declares.
    /// * [`SnapshotError::ChecksumMismatch`]: the bytes were altered.
    /// * [`SnapshotError::WrongKind`]: an intact snapshot of another kind.
    /// * [`SnapshotError::UnsupportedVersion`]: an intact snapshot of `kind` whose schema
    ///   version is not in `versions`.
    pub fn open(
        bytes: &'a [u8],
        kind: &str,
        versions: RangeInclusive<u32>,
    ) -> Result<Self, SnapshotError> {
        let container = Container::parse(bytes)?;
        if container.stored_checksum != container.computed_checksum {
            return Err(SnapshotError::ChecksumMismatch {
                stored: container.stored_checksum,
                computed: container.computed_checksum,
            });
        }
        if container.kind != kind.as_bytes() {
            return Err(SnapshotError::WrongKind {
                expected: kind.to_owned(),
                found: String::from_utf8_lossy(container.kind).into_owned(),
            });
        }
        if !versions.contains(&container.version) {
            return Err(SnapshotError::UnsupportedVersion {
                found: container.version,
                supported: versions,
            });
        }
        Ok(SnapshotReader {
            version: container.version,
            rest: container.payload,
        })
    }

    /// The schema version the snapshot was written with: one of the `versions` given to
    /// [`open`](SnapshotReader::open). Branch on it to read older layouts.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The number of payload bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Reads a `u8`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if the payload has no byte left.
    pub fn u8(&mut self) -> Result<u8, SnapshotError> {
        self.get()
    }

    /// Reads a `u16`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 2 bytes remain.
    pub fn u16(&mut self) -> Result<u16, SnapshotError> {
        self.get()
    }

    /// Reads a `u32`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 4 bytes remain.
    pub fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.get()
    }

    /// Reads a `u64`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 8 bytes remain.
    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.get()
    }

    /// Reads an `i32`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 4 bytes remain.
    pub fn i32(&mut self) -> Result<i32, SnapshotError> {
        self.get()
    }

    /// Reads an `i64`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 8 bytes remain.
    pub fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.get()
    }

    /// Reads an `f32`, bit for bit.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 4 bytes remain.
    pub fn f32(&mut self) -> Result<f32, SnapshotError> {
        self.get()
    }

    /// Reads an `f64`, bit for bit.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if fewer than 8 bytes remain.
    pub fn f64(&mut self) -> Result<f64, SnapshotError> {
        self.get()
    }

    /// Reads a `bool`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if the payload has no byte left;
    /// [`SnapshotError::Invalid`] if the byte is neither `0` nor `1`.
    pub fn bool(&mut self) -> Result<bool, SnapshotError> {
        self.atomically(|r| match r.get::<u8, 1>()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(SnapshotError::Invalid("a bool byte is neither 0 nor 1")),
        })
    }

    /// Reads a byte string written by [`SnapshotWriter::bytes`], borrowed from the snapshot.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if the length prefix or the bytes it counts run past the
    /// end of the payload.
    pub fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        self.atomically(|r| r.prefixed(1))
    }

    /// Reads a string written by [`SnapshotWriter::str`], borrowed from the snapshot.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] as for [`bytes`](SnapshotReader::bytes);
    /// [`SnapshotError::InvalidUtf8`] if the bytes are not UTF-8.
    pub fn str(&mut self) -> Result<&'a str, SnapshotError> {
        self.atomically(|r| {
            std::str::from_utf8(r.prefixed(1)?).map_err(|_| SnapshotError::InvalidUtf8)
        })
    }

    /// Reads a slice written by [`SnapshotWriter::f32s`] into a new `Vec`.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::UnexpectedEnd`] if the length prefix or the elements it counts run past
    /// the end of the payload; nothing is allocated then.
    pub fn f32s(&mut self) -> Result<Vec<f32>, SnapshotError> {
        self.get_vec()
    }

    /// Reads a slice written by [`SnapshotWriter::f32s`] into `out`, replacing its contents and
    /// reusing its allocation.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s); `out` is left untouched then.
    pub fn f32s_into(&mut self, out: &mut Vec<f32>) -> Result<(), SnapshotError> {
        self.get_slice_into(out)
    }

    /// Reads a slice written by [`SnapshotWriter::f64s`] into a new `Vec`.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s).
    pub fn f64s(&mut self) -> Result<Vec<f64>, SnapshotError> {
        self.get_vec()
    }

    /// Reads a slice written by [`SnapshotWriter::f64s`] into `out`, replacing its contents and
    /// reusing its allocation.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s); `out` is left untouched then.
    pub fn f64s_into(&mut self, out: &mut Vec<f64>) -> Result<(), SnapshotError> {
        self.get_slice_into(out)
    }

    /// Reads a slice written by [`SnapshotWriter::u32s`] into a new `Vec`.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s).
    pub fn u32s(&mut self) -> Result<Vec<u32>, SnapshotError> {
        self.get_vec()
    }

    /// Reads a slice written by [`SnapshotWriter::u32s`] into `out`, replacing its contents and
    /// reusing its allocation.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s); `out` is left untouched then.
    pub fn u32s_into(&mut self, out: &mut Vec<u32>) -> Result<(), SnapshotError> {
        self.get_slice_into(out)
    }

    /// Reads a slice written by [`SnapshotWriter::u64s`] into a new `Vec`.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s).
    pub fn u64s(&mut self) -> Result<Vec<u64>, SnapshotError> {
        self.get_vec()
    }

    /// Reads a slice written by [`SnapshotWriter::u64s`] into `out`, replacing its contents and
    /// reusing its allocation.
    ///
    /// # Errors
    ///
    /// As for [`f32s`](SnapshotReader::f32s); `out` is left untouched then.
    pub fn u64s_into(&mut self, out: &mut Vec<u64>) -> Result<(), SnapshotError> {
        self.get_slice_into(out)
    }

    /// Ends reading, checking that every payload byte was read.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::TrailingBytes`] if some were not: the reading code reads fewer values
    /// than the writing code wrote.
    pub fn finish(self) -> Result<(), SnapshotError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(SnapshotError::TrailingBytes(n as u64)),
        }
    }

    /// Runs `read`, putting the reader back where it was if it fails.
    fn atomically<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let start = self.rest;
        let result = read(self);
        if result.is_err() {
            self.rest = start;
        }
        result
    }

    /// The next `len` bytes.
    fn take(&mut self, len: u64) -> Result<&'a [u8], SnapshotError> {
        let remaining = self.rest.len();
        match usize::try_from(len) {
            Ok(len) if len <= remaining => {
                let (head, tail) = self.rest.split_at(len);
                self.rest = tail;
                Ok(head)
            }
            _ => Err(SnapshotError::UnexpectedEnd {
                needed: len,
                remaining: remaining as u64,
            }),
        }
    }

    fn get<T: Le<N>, const N: usize>(&mut self) -> Result<T, SnapshotError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(T::from_le(*head))
            }
            None => Err(SnapshotError::UnexpectedEnd {
                needed: N as u64,
                remaining: self.rest.len() as u64,
            }),
        }
    }

    /// A `u64` count of elements of `size` bytes, then the elements' bytes. The count is checked
    /// against the remaining bytes, so a hostile count fails here, before anyone allocates.
    fn prefixed(&mut self, size: u64) -> Result<&'a [u8], SnapshotError> {
        let count = self.get::<u64, 8>()?;
        self.take(count.saturating_mul(size))
    }

    fn get_vec<T: Le<N>, const N: usize>(&mut self) -> Result<Vec<T>, SnapshotError> {
        let mut out = Vec::new();
        self.get_slice_into(&mut out)?;
        Ok(out)
    }

    fn get_slice_into<T: Le<N>, const N: usize>(
        &mut self,
        out: &mut Vec<T>,
    ) -> Result<(), SnapshotError> {
        let bytes = self.atomically(|r| r.prefixed(N as u64))?;
        let (chunks, _) = bytes.as_chunks::<N>();
        out.clear();
        // An exact-size iterator: one allocation of the right size (at most `bytes.len()`), and
        // on a little-endian target a copy.
        out.extend(chunks.iter().map(|chunk| T::from_le(*chunk)));
        Ok(())
    }
}

impl fmt::Debug for SnapshotReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("version", &self.version)
            .field("remaining", &self.rest.len())
            .finish()
    }
}

/// Why a snapshot could not be opened or read.
///
/// Every way bytes can be wrong maps to one of these; none panics. The `Display` text says what
/// was found. Converts into [`Error::Failed`] with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Fewer bytes than a snapshot needs: cut off, or empty. `needed` is what the part read so far
    /// requires (the whole length once the header is complete).
    Truncated {
        /// The number of bytes required, at least.
        needed: u64,
        /// The number of bytes given.
        available: u64,
    },
    /// The bytes do not start with the snapshot magic: not a snapshot at all.
    BadMagic,
    /// A container format this build does not read (a newer one, or damage to its 2 bytes).
    UnsupportedFormat(u16),
    /// More bytes than the header declares: something was appended, or the length is damaged.
    LengthMismatch {
        /// The length the header declares.
        declared: u64,
        /// The number of bytes given.
        actual: u64,
    },
    /// The checksum does not match the bytes: the snapshot was damaged.
    ChecksumMismatch {
        /// The checksum stored in the snapshot.
        stored: u32,
        /// The checksum of the bytes as given.
        computed: u32,
    },
    /// An intact snapshot of another kind of state.
    WrongKind {
        /// The kind the reader asked for.
        expected: String,
        /// The kind in the snapshot (invalid UTF-8 replaced by `U+FFFD`).
        found: String,
    },
    /// An intact snapshot of the right kind, with a schema version the reader does not accept.
    UnsupportedVersion {
        /// The schema version in the snapshot.
        found: u32,
        /// The versions the reader accepts.
        supported: RangeInclusive<u32>,
    },
    /// A read ran past the end of the payload: the reading code expects more values than the
    /// writing code wrote, or a length prefix is larger than the bytes that follow it.
    UnexpectedEnd {
        /// The number of bytes the read needed.
        needed: u64,
        /// The number of payload bytes that remained.
        remaining: u64,
    },
    /// [`SnapshotReader::finish`] found this many payload bytes unread: the reading code expects
    /// fewer values than the writing code wrote.
    TrailingBytes(u64),
    /// A string read by [`SnapshotReader::str`] is not UTF-8.
    InvalidUtf8,
    /// A value is out of range: a `bool` byte other than `0` or `1`, or a check of the reading
    /// code's own (`return Err(SnapshotError::Invalid("more particles than the capacity"))`).
    Invalid(&'static str),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated { needed, available } => write!(
                f,
                "snapshot is truncated: it needs at least {needed} bytes, {available} given"
            ),
            SnapshotError::BadMagic => {
                f.write_str("not a snapshot: the data does not start with the snapshot magic")
            }
            SnapshotError::UnsupportedFormat(format) => write!(
                f,
                "snapshot container format {format} is not supported \
                 (this build reads format {FORMAT})"
            ),
            SnapshotError::LengthMismatch { declared, actual } => write!(
                f,
                "snapshot has {actual} bytes but its header declares {declared}"
            ),
            SnapshotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "snapshot is corrupted: its checksum is {computed:#010x}, \
                 the stored one {stored:#010x}"
            ),
            SnapshotError::WrongKind { expected, found } => {
                write!(f, "snapshot is of kind {found:?}, expected {expected:?}")
            }
            SnapshotError::UnsupportedVersion { found, supported } => write!(
                f,
                "snapshot schema version {found} is not supported (supported: {}..={})",
                supported.start(),
                supported.end()
            ),
            SnapshotError::UnexpectedEnd { needed, remaining } => write!(
                f,
                "read past the end of the snapshot: needed {needed} bytes, {remaining} remain \
                 (the reader expects more than was written)"
            ),
            SnapshotError::TrailingBytes(n) => write!(
                f,
                "{n} snapshot bytes were not read (the reader expects less than was written)"
            ),
            SnapshotError::InvalidUtf8 => f.write_str("a string in the snapshot is not UTF-8"),
            SnapshotError::Invalid(what) => write!(f, "invalid snapshot value: {what}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<SnapshotError> for Error {
    fn from(err: SnapshotError) -> Self {
        Error::Failed(Box::new(err))
    }
}

/// A snapshot's container, split into fields; its checksum not yet compared.
struct Container<'a> {
    kind: &'a [u8],
    version: u32,
    payload: &'a [u8],
    stored_checksum: u32,
    computed_checksum: u32,
}

impl<'a> Container<'a> {
    /// Splits `bytes` per the [layout](self#byte-layout), checking magic, format and lengths.
    fn parse(bytes: &'a [u8]) -> Result<Self, SnapshotError> {
        // Compare only the bytes there are, so that a cut-off magic reads as truncated, not as
        // foreign.
        let present = bytes.len().min(MAGIC.len());
        if bytes[..present] != MAGIC[..present] {
            return Err(SnapshotError::BadMagic);
        }
        let mut fields = Fields { bytes, at: 0 };
        fields.take(MAGIC.len() as u64)?;
        let format = u16::from_le_bytes(fields.array()?);
        if format != FORMAT {
            return Err(SnapshotError::UnsupportedFormat(format));
        }
        let [kind_len] = fields.array()?;
        let kind = fields.take(u64::from(kind_len))?;
        let version = u32::from_le_bytes(fields.array()?);
        let payload_len = u64::from_le_bytes(fields.array()?);
        let declared = (fields.at as u64)
            .saturating_add(payload_len)
            .saturating_add(4);
        let actual = bytes.len() as u64;
        if declared > actual {
            return Err(SnapshotError::Truncated {
                needed: declared,
                available: actual,
            });
        }
        if declared < actual {
            return Err(SnapshotError::LengthMismatch { declared, actual });
        }
        let payload = fields.take(payload_len)?;
        let checked = &bytes[..fields.at];
        let stored_checksum = u32::from_le_bytes(fields.array()?);
        Ok(Container {
            kind,
            version,
            payload,
            stored_checksum,
            computed_checksum: crc32c(checked),
        })
    }
}

/// A cursor over the container's fields; running out of bytes is [`SnapshotError::Truncated`].
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], SnapshotError> {
        let end = (self.at as u64).saturating_add(len);
        let field = usize::try_from(end)
            .ok()
            .and_then(|end| self.bytes.get(self.at..end));
        match field {
            Some(field) => {
                self.at += field.len();
                Ok(field)
            }
            None => Err(self.truncated(end)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        match rest.first_chunk::<N>() {
            Some(array) => {
                self.at += N;
                Ok(*array)
            }
            None => Err(self.truncated((self.at + N) as u64)),
        }
    }

    fn truncated(&self, needed: u64) -> SnapshotError {
        SnapshotError::Truncated {
            needed,
            available: self.bytes.len() as u64,
        }
    }
}

/// A number with a fixed-width little-endian encoding of `N` bytes.
trait Le<const N: usize>: Copy {
    fn to_le(self) -> [u8; N];
    fn from_le(bytes: [u8; N]) -> Self;
}

macro_rules! impl_le {
    ($($ty:ty => $n:literal),* $(,)?) => {$(
        impl Le<$n> for $ty {
            fn to_le(self) -> [u8; $n] {
                self.to_le_bytes()
            }
            fn from_le(bytes: [u8; $n]) -> Self {
                <$ty>::from_le_bytes(bytes)
            }
        }
    )*};
}

// `f32::to_le_bytes` / `from_le_bytes` go through `to_bits` / `from_bits`: every bit is kept.
impl_le!(u8 => 1, u16 => 2, u32 => 4, u64 => 8, i32 => 4, i64 => 8, f32 => 4, f64 => 8);
