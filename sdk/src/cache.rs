//! Frame caches: a simulation's frames on disk, read back by memory map.
//!
//! A cache is one file of *frames* appended one after another: each frame is a step number, a
//! topic (the sink topic it would have had live, e.g. `particles/positions`) and one or more
//! payloads — opaque bytes or typed arrays, exactly what a [`Message`] carries. A
//! [`CacheWriter`] appends them (the farm runner does, and so can a host exporting an `Every`
//! simulation); a [`Cache`] opens the file by memory map, finds every frame by reading only
//! their headers, and hands each payload out as a view into the map: no copy, no load step. A
//! host can scrub a cache far larger than its memory: the kernel pages in the frames looked at
//! and drops them again under pressure.
//!
//! ```
//! use hostloop::cache::{Cache, CacheWriter};
//! use hostloop::{ArrayView, Payload};
//!
//! # let dir = std::env::temp_dir().join(format!("hl-cache-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("particles.hlcache");
//! let mut w = CacheWriter::create(&path)?;
//! for step in 1..=3u64 {
//!     let xyz = [step as f32, 0.0, 1.0, 2.0, 3.0, 4.0]; // two particles
//!     w.write(step, "particles/positions", &[Payload::Array(ArrayView::packed(&xyz, 3))])?;
//! }
//! w.finish()?;
//!
//! let cache = Cache::open(&path)?;
//! assert_eq!(cache.len(), 3);
//! let frame = cache.frame(cache.find_step(2).unwrap())?; // checks the frame's checksums
//! assert_eq!((frame.step(), frame.topic()), (2, "particles/positions"));
//! let xyz: &[f32] = frame.array::<f32>(0).unwrap(); // a view into the map
//! assert_eq!(xyz, [2.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
//! assert!(cache.damage().is_none());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Damage
//!
//! A writer that was killed mid-frame leaves a torn last frame; a disk or a copy can corrupt
//! bytes anywhere. Opening never panics and never trusts a length it has not checked against
//! the file: the frames before the first damaged header are the cache, and
//! [`Cache::damage`] says where and why the rest was cut off. A frame whose header is intact
//! but whose data is not is reported by [`Cache::frame`] ([`CacheError::Corrupt`]) when it is
//! read; [`Cache::verify`] checks every frame up front and cuts the cache at the first bad one.
//! [`CacheWriter::append`] reopens a cache to write on: it keeps the good frames, cuts the
//! damaged tail off the file, and continues after the last good frame — a farm segment that was
//! pre-empted and requeued resumes its cache this way.
//!
//! A cache is read through a shared memory map of the file: if another process shrinks the file
//! while it is mapped, touching the lost pages raises `SIGBUS`, as with any mapped file. Writers
//! here only ever append (and [`CacheWriter::append`] cuts only what no reader can have been
//! handed: frames that fail their checks), so do not truncate a cache that is being read.
//!
//! # Byte layout
//!
//! All integers are little-endian. The file starts with a 64-byte header:
//!
//! | offset | size | field    | contents                                                    |
//! |--------|------|----------|-------------------------------------------------------------|
//! | 0      | 8    | magic    | `48 4C 43 41 43 48 0D 0A` (`"HLCACH\r\n"`)                  |
//! | 8      | 2    | format   | `u16` file format version: `1`                              |
//! | 10     | 2    | reserved | `0`                                                         |
//! | 12     | 4    | checksum | `u32` CRC-32C of bytes `0 .. 12`                            |
//! | 16     | 48   | reserved | zeros                                                       |
//!
//! Frames follow from offset 64, each starting at a multiple of 64. A frame with `p` payloads
//! and a topic of `t` bytes is:
//!
//! | offset (in the frame) | size   | field        | contents                                 |
//! |-----------------------|--------|--------------|------------------------------------------|
//! | 0                     | 4      | magic        | `48 4C 46 52` (`"HLFR"`)                 |
//! | 4                     | 4      | payloads     | `u32` `p`, at least 1                    |
//! | 8                     | 8      | length       | `u64` bytes from this frame to the next, a multiple of 64 |
//! | 16                    | 8      | step         | `u64` the simulation step                |
//! | 24                    | 2      | topic length | `u16` `t`, at most 4096                  |
//! | 26                    | 6      | reserved     | zeros                                    |
//! | 32                    | 32 × p | descriptors  | one per payload, below                   |
//! | 32 + 32p              | t      | topic        | UTF-8                                    |
//! | 32 + 32p + t          | 4      | checksum     | `u32` CRC-32C of the frame's bytes `0 .. 32 + 32p + t` |
//!
//! and then the payloads' data, each at the offset its descriptor gives (a multiple of 64, so
//! every array is aligned for any element type and for vector loads), zeros between. A payload
//! descriptor is:
//!
//! | offset | size | field      | contents                                                     |
//! |--------|------|------------|--------------------------------------------------------------|
//! | 0      | 4    | type       | `u32` `0` for bytes, else an [`ElemType`] (`1` u8, `2` i32, `3` u32, `4` i64, `5` u64, `6` f32, `7` f64) |
//! | 4      | 4    | components | `u32` elements per record (1 for bytes)                      |
//! | 8      | 8    | count      | `u64` records (bytes: the byte count)                        |
//! | 16     | 8    | offset     | `u64` where the data starts, from the start of the frame     |
//! | 24     | 4    | checksum   | `u32` CRC-32C of the data                                    |
//! | 28     | 4    | reserved   | zeros                                                        |
//!
//! The data of a payload is `count × components × size(type)` bytes, records packed (no stride).
//! The checksum is the snapshot format's (see [`snapshot`](crate::snapshot)): CRC-32C,
//! reflected polynomial `0x82F63B78`, initial value and final XOR `0xFFFFFFFF`.
//!
//! A reader in another language needs only this table: `examples/cache/read_cache.py` is one
//! in Python and numpy. From C and C++, `hl_cache_*` (`include/hostloop/cache.h`) and
//! `hostloop::Cache` (`hostloop.hpp`) read a cache through this module, by memory map as well.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::internal::crc32c::{crc32c, Crc32c};
use crate::sink::{ArrayView, ElemType, Element, Message, Payload};

/// The first 8 bytes of every cache file.
const MAGIC: [u8; 8] = *b"HLCACH\r\n";
/// The file format this build writes and reads.
const FORMAT: u16 = 1;
/// Bytes of the file header; the first frame starts here.
const FILE_HEADER: u64 = 64;
/// The first 4 bytes of every frame.
const FRAME_MAGIC: [u8; 4] = *b"HLFR";
/// Frames and payload data start at multiples of this.
const ALIGN: u64 = 64;
/// The fixed part of a frame header, and one payload descriptor.
const FIXED: usize = 32;
const DESCRIPTOR: usize = 32;
/// The longest topic a frame may have, in bytes.
pub const MAX_TOPIC: usize = 4096;
/// The most payloads one frame may have.
pub const MAX_PAYLOADS: usize = 1024;

/// What went wrong with a cache.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheError {
    /// The file could not be opened, read, mapped or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file does not start with a cache header (or is shorter than one).
    NotACache {
        /// The file.
        path: PathBuf,
    },
    /// A cache written in a format this build does not read.
    UnsupportedFormat {
        /// The file's format number.
        found: u16,
    },
    /// A frame index past the end.
    NoSuchFrame {
        /// The index asked for.
        index: usize,
        /// Frames in the cache.
        len: usize,
    },
    /// A frame's data does not match its checksum: the bytes were damaged after writing.
    Corrupt {
        /// The frame's index.
        index: usize,
        /// Its offset in the file.
        offset: u64,
        /// Which payload.
        payload: usize,
    },
    /// A frame that cannot be written: no payloads, too many, a topic too long, or an array
    /// that does not fit in memory's address space.
    InvalidFrame(&'static str),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CacheError::NotACache { path } => {
                write!(f, "{}: not a hostloop frame cache", path.display())
            }
            CacheError::UnsupportedFormat { found } => write!(
                f,
                "frame cache format {found}, this build reads format {FORMAT}"
            ),
            CacheError::NoSuchFrame { index, len } => {
                write!(f, "no frame {index}: the cache has {len}")
            }
            CacheError::Corrupt {
                index,
                offset,
                payload,
            } => write!(
                f,
                "frame {index} (at byte {offset}) is corrupt: payload {payload} does not match its checksum"
            ),
            CacheError::InvalidFrame(why) => write!(f, "invalid frame: {why}"),
        }
    }
}

impl std::error::Error for CacheError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CacheError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a cache stops being readable, and why: what [`Cache::damage`] reports. The frames
/// before `offset` are intact (their headers; their data is checked as they are read, or by
/// [`Cache::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The byte offset of the first frame that was not taken.
    pub offset: u64,
    /// The file's length.
    pub file_len: u64,
    /// Why it was not taken.
    pub reason: DamageReason,
}

/// Why a cache's tail was not read. See [`Damage`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageReason {
    /// The file ends inside a frame: a writer stopped mid-frame.
    Truncated,
    /// The bytes where a frame should start are not a valid frame header (wrong magic, a
    /// checksum that does not match, lengths that do not add up).
    BadHeader,
    /// The frame's header is intact, its data is not ([`Cache::verify`] found it).
    BadData {
        /// Which payload.
        payload: usize,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            DamageReason::Truncated => {
                "the file ends inside a frame (a writer stopped mid-frame)".to_string()
            }
            DamageReason::BadHeader => "a damaged frame header".to_string(),
            DamageReason::BadData { payload } => {
                format!("a frame whose payload {payload} fails its checksum")
            }
        };
        write!(
            f,
            "read up to byte {} of {}: {what}; the {} bytes after it were not read",
            self.offset,
            self.file_len,
            self.file_len - self.offset
        )
    }
}

/// One frame's place in the file and what its header said, checked against the file when the
/// cache was opened. Reads use only these checked values, never the header bytes again: a file
/// changed under the map cannot make a later read go out of bounds.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    len: u64,
    step: u64,
    /// Index into `Cache::topics`.
    topic: u32,
    /// `Cache::payloads[first_payload..first_payload + payloads]`.
    first_payload: usize,
    payloads: u32,
}

/// A cache opened for reading, by memory map. See the [module docs](self).
///
/// `Cache` is `Send + Sync`: frames may be read from any thread, concurrently.
pub struct Cache {
    path: PathBuf,
    map: Option<Mmap>,
    frames: Vec<Entry>,
    /// Every frame's payload descriptors, in frame order.
    payloads: Vec<Descriptor>,
    /// The distinct topics.
    topics: Vec<String>,
    damage: Option<Damage>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("path", &self.path)
            .field("frames", &self.frames.len())
            .field("damage", &self.damage)
            .finish()
    }
}

impl Cache {
    /// Opens the cache at `path`: maps it and reads the header of every frame (one page each;
    /// nothing of the data). A damaged or truncated tail is cut off and reported by
    /// [`damage`](Cache::damage), not returned as an error.
    ///
    /// # Errors
    ///
    /// [`CacheError::Io`] if the file cannot be opened or mapped, [`CacheError::NotACache`]
    /// if it has no valid cache header, [`CacheError::UnsupportedFormat`] for a format this
    /// build does not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Cache, CacheError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        if len < FILE_HEADER {
            return Err(CacheError::NotACache {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is read only through bounds-checked slices, and every length in it
        // is checked before use. Another process shrinking the file would make touching the
        // lost pages raise SIGBUS; the module docs say not to.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        check_file_header(&map, path)?;
        let mut cache = Cache {
            path: path.to_path_buf(),
            map: None,
            frames: Vec::new(),
            payloads: Vec::new(),
            topics: Vec::new(),
            damage: None,
        };
        cache.scan(&map);
        cache.map = Some(map);
        Ok(cache)
    }

    /// The file this cache was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of readable frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the cache has no readable frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Where and why the cache stopped being readable, if it did: `None` for a cache whose
    /// every byte was read as frames.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// The step of frame `index`, without touching its data.
    pub fn step(&self, index: usize) -> Option<u64> {
        self.frames.get(index).map(|e| e.step)
    }

    /// The first frame at `step`, if any (a binary search when steps only grow, as a runner
    /// writes them; a scan otherwise).
    pub fn find_step(&self, step: u64) -> Option<usize> {
        let sorted = self.frames.windows(2).all(|w| w[0].step <= w[1].step);
        if sorted {
            let i = self.frames.partition_point(|e| e.step < step);
            (self.frames.get(i)?.step == step).then_some(i)
        } else {
            self.frames.iter().position(|e| e.step == step)
        }
    }

    /// Frame `index`, its data checked against its checksums (this reads the whole frame).
    ///
    /// # Errors
    ///
    /// [`CacheError::NoSuchFrame`] past the end, [`CacheError::Corrupt`] if the data was
    /// damaged.
    pub fn frame(&self, index: usize) -> Result<Frame<'_>, CacheError> {
        let frame = self.frame_unverified(index)?;
        if let Some(payload) = frame.first_bad_payload() {
            return Err(CacheError::Corrupt {
                index,
                offset: self.frames[index].offset,
                payload,
            });
        }
        Ok(frame)
    }

    /// Frame `index` without checking its data (its header was checked at open): for scrubbing
    /// a large cache, where only the pages drawn are read. The views are still bounded by the
    /// frame; damaged data reads as whatever the bytes are.
    ///
    /// # Errors
    ///
    /// [`CacheError::NoSuchFrame`] past the end.
    pub fn frame_unverified(&self, index: usize) -> Result<Frame<'_>, CacheError> {
        let entry = self.frames.get(index).ok_or(CacheError::NoSuchFrame {
            index,
            len: self.frames.len(),
        })?;
        let at = entry.offset as usize;
        Ok(Frame {
            bytes: &self.bytes()[at..at + entry.len as usize],
            step: entry.step,
            topic: &self.topics[entry.topic as usize],
            payloads: &self.payloads
                [entry.first_payload..entry.first_payload + entry.payloads as usize],
        })
    }

    /// Reads every frame's data and checks it; at the first frame that fails, the cache is cut
    /// there (it and the frames after it are dropped) and the damage recorded. Returns the
    /// number of frames left.
    pub fn verify(&mut self) -> usize {
        for index in 0..self.frames.len() {
            let bad = self
                .frame_unverified(index)
                .ok()
                .and_then(|f| f.first_bad_payload());
            if let Some(payload) = bad {
                let offset = self.frames[index].offset;
                self.payloads.truncate(self.frames[index].first_payload);
                self.frames.truncate(index);
                self.damage = Some(Damage {
                    offset,
                    file_len: self.bytes().len() as u64,
                    reason: DamageReason::BadData { payload },
                });
                break;
            }
        }
        self.frames.len()
    }

    /// The frames, in file order, each checked as [`frame`](Cache::frame) does.
    pub fn iter(&self) -> impl Iterator<Item = Result<Frame<'_>, CacheError>> + '_ {
        (0..self.frames.len()).map(move |i| self.frame(i))
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Finds every frame from the file header on, up to the end or the first damage.
    fn scan(&mut self, map: &[u8]) {
        let mut at = FILE_HEADER;
        let file_len = map.len() as u64;
        while at < file_len {
            let b = &map[at as usize..];
            let h = match parse_header(b) {
                Ok(h) => h,
                Err(reason) => {
                    self.damage = Some(Damage {
                        offset: at,
                        file_len,
                        reason,
                    });
                    return;
                }
            };
            let topic_at = FIXED + DESCRIPTOR * h.payloads as usize;
            let topic = std::str::from_utf8(&b[topic_at..topic_at + h.topic_len as usize])
                .unwrap_or_default();
            let topic = match self.topics.iter().rposition(|t| t == topic) {
                Some(i) => i as u32,
                None => {
                    self.topics.push(topic.to_string());
                    (self.topics.len() - 1) as u32
                }
            };
            let first_payload = self.payloads.len();
            self.payloads.extend(h.descriptors(b));
            self.frames.push(Entry {
                offset: at,
                len: h.len,
                step: h.step,
                topic,
                first_payload,
                payloads: h.payloads,
            });
            at += h.len;
        }
    }

    /// Where the readable frames end: the length a writer may cut the file to.
    fn good_end(&self) -> u64 {
        self.damage
            .as_ref()
            .map(|d| d.offset)
            .unwrap_or(self.bytes().len() as u64)
    }
}

/// One frame of a [`Cache`]: its step, topic and payloads, borrowed from the map.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    bytes: &'a [u8],
    step: u64,
    topic: &'a str,
    payloads: &'a [Descriptor],
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("step", &self.step())
            .field("topic", &self.topic())
            .field("payloads", &self.len())
            .finish()
    }
}

impl<'a> Frame<'a> {
    /// The simulation step.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The topic, as it would have reached the sink live.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The number of payloads (at least 1).
    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    /// Always `false`: a frame has at least one payload.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Payload `index` as the sink would have received it, or `None` past the end.
    pub fn payload(&self, index: usize) -> Option<Payload<'a>> {
        let d = self.descriptor(index)?;
        let data = &self.bytes[d.offset..d.offset + d.len];
        Some(match d.elem {
            None => Payload::Bytes(data),
            // `len` is `count × components × size`, checked at open: the view always fits.
            Some(elem) => {
                match ArrayView::strided(
                    elem,
                    d.components,
                    d.count,
                    d.components * elem.size(),
                    data,
                ) {
                    Ok(view) => Payload::Array(view),
                    Err(_) => Payload::Bytes(data),
                }
            }
        })
    }

    /// Payload `index` as the sink would have received it with this frame's topic.
    pub fn message(&self, index: usize) -> Option<Message<'a>> {
        Some(Message::new(self.topic(), self.payload(index)?))
    }

    /// Payload `index` as a slice of `T`, if it is an array of `T` (the map keeps arrays
    /// aligned to 64 bytes, so no copy is needed).
    pub fn array<T: Element>(&self, index: usize) -> Option<&'a [T]> {
        let d = self.descriptor(index)?;
        if d.elem != Some(T::TYPE) {
            return None;
        }
        let data = &self.bytes[d.offset..d.offset + d.len];
        // SAFETY: `T` is a plain number type (`Element` is implemented only for those), every
        // bit pattern of which is a value; the data is aligned (the offset is a multiple of 64
        // from a frame that starts at a multiple of 64 of a page-aligned map, checked below) and
        // `len` bytes long, a multiple of `size_of::<T>()`.
        let (head, body, tail) = unsafe { data.align_to::<T>() };
        (head.is_empty() && tail.is_empty()).then_some(body)
    }

    /// Payload `index`'s bytes, whatever its type.
    pub fn bytes(&self, index: usize) -> Option<&'a [u8]> {
        let d = self.descriptor(index)?;
        Some(&self.bytes[d.offset..d.offset + d.len])
    }

    fn descriptor(&self, index: usize) -> Option<Descriptor> {
        self.payloads.get(index).copied()
    }

    /// The first payload whose data does not match its checksum.
    fn first_bad_payload(&self) -> Option<usize> {
        self.payloads
            .iter()
            .position(|d| crc32c(&self.bytes[d.offset..d.offset + d.len]) != d.crc)
    }
}

/// A frame header, checked against the bytes it came from.
#[derive(Debug, Clone, Copy)]
struct Header {
    payloads: u32,
    len: u64,
    step: u64,
    topic_len: u16,
}

impl Header {
    /// The descriptors of the frame at the start of `b` (which `parse_header` checked).
    fn descriptors(self, b: &[u8]) -> impl Iterator<Item = Descriptor> + '_ {
        (0..self.payloads as usize).filter_map(move |i| {
            let at = FIXED + DESCRIPTOR * i;
            parse_descriptor(&b[at..at + DESCRIPTOR])
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Descriptor {
    elem: Option<ElemType>,
    components: usize,
    count: usize,
    offset: usize,
    len: usize,
    crc: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn elem_type(code: u32) -> Option<Option<ElemType>> {
    Some(Some(match code {
        0 => return Some(None),
        1 => ElemType::U8,
        2 => ElemType::I32,
        3 => ElemType::U32,
        4 => ElemType::I64,
        5 => ElemType::U64,
        6 => ElemType::F32,
        7 => ElemType::F64,
        _ => return None,
    }))
}

fn check_file_header(map: &[u8], path: &Path) -> Result<(), CacheError> {
    let not = || CacheError::NotACache {
        path: path.to_path_buf(),
    };
    if map.len() < FILE_HEADER as usize || map[..8] != MAGIC {
        return Err(not());
    }
    if crc32c(&map[..12]) != u32_at(map, 12) {
        return Err(not());
    }
    let format = u16_at(map, 8);
    if format != FORMAT {
        return Err(CacheError::UnsupportedFormat { found: format });
    }
    Ok(())
}

/// Parses a descriptor (lengths not yet checked against a frame).
fn parse_descriptor(d: &[u8]) -> Option<Descriptor> {
    let elem = elem_type(u32_at(d, 0))?;
    let components = usize::try_from(u32_at(d, 4)).ok()?;
    let count = usize::try_from(u64_at(d, 8)).ok()?;
    let offset = usize::try_from(u64_at(d, 16)).ok()?;
    let size = elem.map_or(1, ElemType::size);
    if components == 0 || (elem.is_none() && components != 1) {
        return None;
    }
    let len = count.checked_mul(components)?.checked_mul(size)?;
    Some(Descriptor {
        elem,
        components,
        count,
        offset,
        len,
        crc: u32_at(d, 24),
    })
}

/// Parses and checks the header of the frame at the start of `b` (the rest of the file): its
/// checksum, its lengths against `b`, every descriptor's data inside the frame.
fn parse_header(b: &[u8]) -> Result<Header, DamageReason> {
    if b.len() < FIXED {
        return Err(DamageReason::Truncated);
    }
    if b[..4] != FRAME_MAGIC {
        return Err(DamageReason::BadHeader);
    }
    let payloads = u32_at(b, 4);
    let len = u64_at(b, 8);
    let step = u64_at(b, 16);
    let topic_len = u16_at(b, 24);
    if payloads == 0
        || payloads as usize > MAX_PAYLOADS
        || topic_len as usize > MAX_TOPIC
        || b[26..32] != [0; 6]
    {
        return Err(DamageReason::BadHeader);
    }
    let header_len = FIXED + DESCRIPTOR * payloads as usize + topic_len as usize;
    if b.len() < header_len + 4 {
        return Err(DamageReason::Truncated);
    }
    if crc32c(&b[..header_len]) != u32_at(b, header_len) {
        return Err(DamageReason::BadHeader);
    }
    // The header is what the writer wrote: now its claims must hold.
    let data_start = align(header_len as u64 + 4);
    if len < data_start || !len.is_multiple_of(ALIGN) {
        return Err(DamageReason::BadHeader);
    }
    if (b.len() as u64) < len {
        return Err(DamageReason::Truncated);
    }
    let topic_at = FIXED + DESCRIPTOR * payloads as usize;
    if std::str::from_utf8(&b[topic_at..header_len]).is_err() {
        return Err(DamageReason::BadHeader);
    }
    for i in 0..payloads as usize {
        let at = FIXED + DESCRIPTOR * i;
        let d = parse_descriptor(&b[at..at + DESCRIPTOR]).ok_or(DamageReason::BadHeader)?;
        let inside = (d.offset as u64) >= data_start
            && (d.offset as u64).is_multiple_of(ALIGN)
            && (d.offset as u64)
                .checked_add(d.len as u64)
                .is_some_and(|end| end <= len);
        if !inside {
            return Err(DamageReason::BadHeader);
        }
    }
    Ok(Header {
        payloads,
        len,
        step,
        topic_len,
    })
}

fn align(n: u64) -> u64 {
    n.next_multiple_of(ALIGN)
}

/// Appends frames to a cache file. See the [module docs](self).
///
/// Each [`write`](CacheWriter::write) goes straight to the file (the arrays are written from
/// the caller's memory, not copied first); a reader opening the file meanwhile sees every frame
/// written so far and, at worst, a torn last one, which it leaves out. Dropping the writer
/// closes the file; [`finish`](CacheWriter::finish) also flushes it to the disk.
#[derive(Debug)]
pub struct CacheWriter {
    path: PathBuf,
    file: File,
    end: u64,
    frames: u64,
    header: Vec<u8>,
}

impl CacheWriter {
    /// Creates a cache at `path`, replacing any file there.
    ///
    /// # Errors
    ///
    /// [`CacheError::Io`] if the file cannot be created or written.
    pub fn create(path: impl AsRef<Path>) -> Result<CacheWriter, CacheError> {
        let path = path.as_ref();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_error(path))?;
        let mut header = [0u8; FILE_HEADER as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..10].copy_from_slice(&FORMAT.to_le_bytes());
        let crc = crc32c(&header[..12]);
        header[12..16].copy_from_slice(&crc.to_le_bytes());
        file.write_all(&header).map_err(io_error(path))?;
        Ok(CacheWriter {
            path: path.to_path_buf(),
            file,
            end: FILE_HEADER,
            frames: 0,
            header: Vec::new(),
        })
    }

    /// Opens the cache at `path` to write more frames after its last good one, creating it if
    /// there is no file. A damaged tail (a writer killed mid-frame) is cut off the file first;
    /// the returned [`Damage`] says what was cut.
    ///
    /// # Errors
    ///
    /// [`CacheError::Io`], or [`CacheError::NotACache`]/[`CacheError::UnsupportedFormat`] if a
    /// file is there that is not a cache this build writes: it is left untouched.
    pub fn append(path: impl AsRef<Path>) -> Result<(CacheWriter, Option<Damage>), CacheError> {
        Self::append_through(path, u64::MAX)
    }

    /// As [`append`](CacheWriter::append), but also cuts every frame from the first one past
    /// `step` on: a run resumed from a snapshot of `step` writes the frames after it again,
    /// and its cache must not hold the ones a killed attempt wrote after its last snapshot.
    ///
    /// # Errors
    ///
    /// As [`append`](CacheWriter::append).
    pub fn append_through(
        path: impl AsRef<Path>,
        step: u64,
    ) -> Result<(CacheWriter, Option<Damage>), CacheError> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok((CacheWriter::create(path)?, None));
        }
        let mut cache = Cache::open(path)?;
        let keep = cache
            .frames
            .iter()
            .position(|e| e.step > step)
            .unwrap_or(cache.frames.len());
        let end = match cache.frames.get(keep) {
            Some(e) => e.offset,
            None => cache.good_end(),
        };
        let frames = keep as u64;
        let damage = cache.damage.take();
        drop(cache); // unmap before shrinking the file
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        file.set_len(end).map_err(io_error(path))?;
        file.seek(SeekFrom::Start(end)).map_err(io_error(path))?;
        Ok((
            CacheWriter {
                path: path.to_path_buf(),
                file,
                end,
                frames,
                header: Vec::new(),
            },
            damage,
        ))
    }

    /// Frames in the file (those found by [`append`](CacheWriter::append) included).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The file's length so far.
    pub fn bytes_written(&self) -> u64 {
        self.end
    }

    /// Appends one frame: `step`, `topic` and its payloads (bytes or arrays; a strided array is
    /// packed on the way).
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidFrame`] for no payloads, more than [`MAX_PAYLOADS`] or a topic
    /// longer than [`MAX_TOPIC`] bytes (nothing is written then); [`CacheError::Io`] if the write
    /// fails (the file may then end in a torn frame, which readers and
    /// [`append`](CacheWriter::append) leave out).
    pub fn write(
        &mut self,
        step: u64,
        topic: &str,
        payloads: &[Payload<'_>],
    ) -> Result<(), CacheError> {
        if payloads.is_empty() {
            return Err(CacheError::InvalidFrame(
                "a frame needs at least one payload",
            ));
        }
        if payloads.len() > MAX_PAYLOADS {
            return Err(CacheError::InvalidFrame("more than MAX_PAYLOADS payloads"));
        }
        if topic.len() > MAX_TOPIC {
            return Err(CacheError::InvalidFrame(
                "topic longer than MAX_TOPIC bytes",
            ));
        }
        let header_len = FIXED + DESCRIPTOR * payloads.len() + topic.len();
        let mut offset = align(header_len as u64 + 4);
        let h = &mut self.header;
        h.clear();
        h.extend_from_slice(&FRAME_MAGIC);
        h.extend_from_slice(&(payloads.len() as u32).to_le_bytes());
        h.extend_from_slice(&[0; 8]); // the frame's length, once known
        h.extend_from_slice(&step.to_le_bytes());
        h.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        h.extend_from_slice(&[0; 6]);
        let mut placed = Vec::with_capacity(payloads.len());
        for p in payloads {
            let (code, components, count, len, crc) = match p {
                Payload::Bytes(b) => (0u32, 1u32, b.len() as u64, b.len() as u64, crc32c(b)),
                Payload::Array(a) => {
                    let record = a.components() * a.elem().size();
                    let components = u32::try_from(a.components())
                        .map_err(|_| CacheError::InvalidFrame("more than 2^32 components"))?;
                    let mut crc = Crc32c::new();
                    for_each_record_run(a, |run| {
                        crc.update(run);
                    });
                    (
                        a.elem() as u32,
                        components,
                        a.count() as u64,
                        (a.count() * record) as u64,
                        crc.finish(),
                    )
                }
            };
            h.extend_from_slice(&code.to_le_bytes());
            h.extend_from_slice(&components.to_le_bytes());
            h.extend_from_slice(&count.to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&[0; 4]);
            placed.push(offset);
            offset = align(offset + len);
        }
        let len = offset.max(align(header_len as u64 + 4));
        h[8..16].copy_from_slice(&len.to_le_bytes());
        h.extend_from_slice(topic.as_bytes());
        let crc = crc32c(h);
        h.extend_from_slice(&crc.to_le_bytes());
        // Header, then each payload at its offset, zeros between.
        let mut written = h.len() as u64;
        let file = &mut self.file;
        let path = &self.path;
        file.write_all(h).map_err(io_error(path))?;
        for (p, &at) in payloads.iter().zip(&placed) {
            write_zeros(file, at - written).map_err(io_error(path))?;
            written = at;
            match p {
                Payload::Bytes(b) => {
                    file.write_all(b).map_err(io_error(path))?;
                    written += b.len() as u64;
                }
                Payload::Array(a) => {
                    let mut r = Ok(());
                    for_each_record_run(a, |run| {
                        if r.is_ok() {
                            r = file.write_all(run);
                            written += run.len() as u64;
                        }
                    });
                    r.map_err(io_error(path))?;
                }
            }
        }
        write_zeros(file, len - written).map_err(io_error(path))?;
        self.end += len;
        self.frames += 1;
        Ok(())
    }

    /// Appends one sink message as a frame of one payload.
    ///
    /// # Errors
    ///
    /// As [`write`](CacheWriter::write).
    pub fn write_message(&mut self, step: u64, message: &Message<'_>) -> Result<(), CacheError> {
        self.write(step, message.topic, &[message.payload])
    }

    /// Flushes the file to the disk (`fsync` of its data) and closes it.
    ///
    /// # Errors
    ///
    /// [`CacheError::Io`] if the flush fails.
    pub fn finish(self) -> Result<(), CacheError> {
        self.file.sync_data().map_err(io_error(&self.path))
    }
}

/// Calls `f` with the array's records as runs of packed bytes: the whole array at once when it
/// is packed, one record at a time otherwise.
fn for_each_record_run(a: &ArrayView<'_>, mut f: impl FnMut(&[u8])) {
    let record = a.components() * a.elem().size();
    let bytes = a.bytes();
    if a.stride() == record {
        f(&bytes[..a.count() * record]);
    } else {
        for i in 0..a.count() {
            f(&bytes[i * a.stride()..i * a.stride() + record]);
        }
    }
}

fn write_zeros(file: &mut File, n: u64) -> io::Result<()> {
    const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
    debug_assert!(n < ALIGN);
    file.write_all(&ZEROS[..n as usize])
}

/// Records a simulation's frames from the host sink into a cache: the `Every`-delivery export
/// of a host, and what `hostloop-worker run --cache` writes.
///
/// Feed it every sink message ([`record`](Recorder::record)); it follows the simulation
/// plugin protocol — a `<name>/step` message (the step, then the configuration, two `u64`)
/// starts each frame, and the messages after it until the next are that frame's — and appends
/// each of those messages to the cache as a frame of its step. The step messages themselves
/// and `<name>/error` are not recorded, nor are other plugins' topics (unless named with
/// [`topics`](Recorder::topics)). With `Delivery::Every` every frame reaches the sink,
/// so every step is recorded.
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
/// use hostloop::cache::{CacheWriter, Recorder};
///
/// # let rt = hostloop::Runtime::new()?;
/// let recorder = Arc::new(Mutex::new(Recorder::new(CacheWriter::create("run.hlcache")?, "particles")));
/// let r = recorder.clone();
/// rt.set_sink(Some(Box::new(move |m| {
///     let _ = r.lock().unwrap().record(m); // and show the frame as usual
/// })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Recorder {
    writer: CacheWriter,
    step_topic: String,
    error_topic: String,
    prefix: String,
    after: Option<u64>,
    min_configuration: u64,
    topics: Vec<String>,
    /// The step of the frame now arriving, if it is recorded.
    current: Option<u64>,
}

impl Recorder {
    /// Records the frames of the simulation plugin `name` into `writer`.
    pub fn new(writer: CacheWriter, name: &str) -> Recorder {
        Recorder {
            writer,
            step_topic: format!("{name}/step"),
            error_topic: format!("{name}/error"),
            prefix: format!("{name}/"),
            after: None,
            min_configuration: 0,
            topics: Vec::new(),
            current: None,
        }
    }

    /// Records only steps after `step` (a run resumed at `step` has its frames already).
    pub fn after(mut self, step: u64) -> Recorder {
        self.after = Some(step);
        self
    }

    /// Records only frames of configuration `n` or later (frames of the simulation a
    /// configure replaced are not the host's).
    pub fn min_configuration(mut self, n: u64) -> Recorder {
        self.min_configuration = n;
        self
    }

    /// Records only these topics (default: every topic of the frame).
    pub fn topics(mut self, topics: Vec<String>) -> Recorder {
        self.topics = topics;
        self
    }

    /// Feeds one sink message; returns whether it was appended to the cache.
    ///
    /// # Errors
    ///
    /// As [`CacheWriter::write`]: the message was not recorded.
    pub fn record(&mut self, m: &Message<'_>) -> Result<bool, CacheError> {
        if m.topic == self.step_topic {
            self.current = step_message(m)
                .filter(|&(step, configuration)| {
                    configuration >= self.min_configuration && self.after.is_none_or(|a| step > a)
                })
                .map(|(step, _)| step);
            return Ok(false);
        }
        let wanted = if self.topics.is_empty() {
            m.topic.starts_with(&self.prefix) && m.topic != self.error_topic
        } else {
            self.topics.iter().any(|t| t == m.topic)
        };
        match self.current {
            Some(step) if wanted => {
                self.writer.write_message(step, m)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The writer, e.g. for [`CacheWriter::frames`].
    pub fn writer(&self) -> &CacheWriter {
        &self.writer
    }

    /// Flushes the cache to the disk and closes it (see [`CacheWriter::finish`]).
    ///
    /// # Errors
    ///
    /// As [`CacheWriter::finish`].
    pub fn finish(self) -> Result<(), CacheError> {
        self.writer.finish()
    }
}

/// A `<name>/step` message's step and configuration (the configuration is 0 from a plugin that
/// sends only the step).
pub(crate) fn step_message(m: &Message<'_>) -> Option<(u64, u64)> {
    let Payload::Bytes(b) = m.payload else {
        return None;
    };
    let step = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let configuration = b
        .get(8..16)
        .map_or(0, |c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
    Some((step, configuration))
}
