//! `hostloop/cache.h`: frame caches read from C, by memory map.
//!
//! A handle owns one [`sdk::cache::Cache`] behind a lock (`hl_cache_verify` cuts it; every
//! other call reads it) and a NUL-terminated copy of each distinct topic, made once at open: the
//! pointers C receives point into the map or into those copies, both of which live until the
//! handle is freed.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::io;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use sdk::cache::{Cache, CacheError, DamageReason};
use sdk::Payload;

use super::common::*;
use super::guard::{check_size, guard, utf8, write_sized, Failure, FfiResult};
use super::handles::Registry;

/// The opaque cache type of the header. Values of `*mut hl_cache_t` are registry tokens.
#[derive(Debug)]
pub enum hl_cache_t {}

/// `hl_cache_damage_t::reason`: the cache was read to its end.
pub const HL_CACHE_DAMAGE_NONE: u32 = 0;
/// `hl_cache_damage_t::reason`: the file ends inside a frame.
pub const HL_CACHE_DAMAGE_TRUNCATED: u32 = 1;
/// `hl_cache_damage_t::reason`: a frame header is damaged.
pub const HL_CACHE_DAMAGE_BAD_HEADER: u32 = 2;
/// `hl_cache_damage_t::reason`: a frame's data fails its checksum (found by `hl_cache_verify`).
pub const HL_CACHE_DAMAGE_BAD_DATA: u32 = 3;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_cache_damage_t {
    pub struct_size: u32,
    pub damaged: u32,
    pub offset: u64,
    pub file_len: u64,
    pub reason: u32,
    pub payload: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_cache_frame_t {
    pub struct_size: u32,
    pub payload_count: u32,
    pub step: u64,
    pub topic: *const c_char,
    pub topic_len: usize,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_cache_payload_t {
    pub struct_size: u32,
    pub elem: u32,
    pub components: u32,
    pub reserved: u32,
    pub count: u64,
    pub data: *const c_void,
    pub len: usize,
}

struct CacheState {
    cache: RwLock<Cache>,
    /// Each distinct topic with a NUL appended (a `Box<[u8]>` rather than a `CString`: a topic
    /// may hold a NUL of its own; C has `topic_len`).
    topics: Vec<Box<[u8]>>,
    /// Frame `i`'s topic is `topics[frame_topics[i]]`. Made at open; `hl_cache_verify` only
    /// ever drops frames from the end, so it stays right for every frame left.
    frame_topics: Vec<u32>,
}

impl CacheState {
    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn topic(&self, index: usize) -> &[u8] {
        &self.topics[self.frame_topics[index] as usize]
    }
}

static CACHES: Registry<CacheState> = Registry::new("hl_cache_t");

/// The status and message of a cache error.
fn failure(err: CacheError) -> Failure {
    let status = match &err {
        CacheError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            HL_STATUS_FILE_NOT_FOUND
        }
        CacheError::Io { .. } => HL_STATUS_OS,
        CacheError::NotACache { .. } | CacheError::NoSuchFrame { .. } => HL_STATUS_INVALID_ARG,
        CacheError::UnsupportedFormat { .. } => HL_STATUS_VERSION_MISMATCH,
        CacheError::Corrupt { .. } => HL_STATUS_FAILED,
        _ => HL_STATUS_FAILED,
    };
    Failure::new(status, err.to_string())
}

/// NULL_ARG for a NULL out-parameter.
fn not_null<T>(ptr: *const T, name: &str) -> FfiResult {
    if ptr.is_null() {
        return Err(Failure::new(HL_STATUS_NULL_ARG, format!("{name} is NULL")));
    }
    Ok(())
}

/// Frame `index` as a `usize`, or INVALID_ARG past the end.
fn frame_index(cache: &Cache, index: u64) -> FfiResult<usize> {
    match usize::try_from(index) {
        Ok(i) if i < cache.len() => Ok(i),
        _ => Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!("no frame {index}: the cache has {}", cache.len()),
        )),
    }
}

/// See `hl_cache_open` in `hostloop/cache.h`.
///
/// # Safety
///
/// `path` is NULL or NUL-terminated; `cache` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_cache_open(
    path: *const c_char,
    cache: *mut *mut hl_cache_t,
) -> hl_status_t {
    guard("hl_cache_open", || {
        // SAFETY: per this function's contract.
        let path = unsafe { utf8(path, "path") }?;
        not_null(cache, "cache")?;
        let c = Cache::open(path).map_err(failure)?;
        let mut topics: Vec<Box<[u8]>> = Vec::new();
        let mut frame_topics = Vec::with_capacity(c.len());
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for i in 0..c.len() {
            let topic = c.frame_unverified(i).map_err(failure)?.topic();
            let at = *seen.entry(topic).or_insert_with(|| {
                let mut t = Vec::with_capacity(topic.len() + 1);
                t.extend_from_slice(topic.as_bytes());
                t.push(0);
                topics.push(t.into_boxed_slice());
                (topics.len() - 1) as u32
            });
            frame_topics.push(at);
        }
        drop(seen);
        let handle: *mut hl_cache_t = CACHES.insert(CacheState {
            cache: RwLock::new(c),
            topics,
            frame_topics,
        });
        // SAFETY: non-NULL (checked above) and writable per the contract.
        unsafe { *cache = handle };
        Ok(())
    })
}

/// See `hl_cache_free` in `hostloop/cache.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_cache_free(cache: *mut hl_cache_t) -> hl_status_t {
    guard("hl_cache_free", || {
        CACHES.remove(cache, "cache")?;
        Ok(())
    })
}

/// See `hl_cache_frame_count` in `hostloop/cache.h`.
///
/// # Safety
///
/// `count` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_cache_frame_count(
    cache: *const hl_cache_t,
    count: *mut u64,
) -> hl_status_t {
    guard("hl_cache_frame_count", || {
        let state = CACHES.get(cache, "cache")?;
        not_null(count, "count")?;
        let n = state.read().len() as u64;
        // SAFETY: non-NULL (checked above) and writable per the contract.
        unsafe { *count = n };
        Ok(())
    })
}

/// See `hl_cache_damage` in `hostloop/cache.h`.
///
/// # Safety
///
/// `damage` is NULL or points to a writable `hl_cache_damage_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_cache_damage(
    cache: *const hl_cache_t,
    damage: *mut hl_cache_damage_t,
) -> hl_status_t {
    guard("hl_cache_damage", || {
        let state = CACHES.get(cache, "cache")?;
        not_null(damage, "damage")?;
        let mut out = hl_cache_damage_t {
            struct_size: std::mem::size_of::<hl_cache_damage_t>() as u32,
            damaged: 0,
            offset: 0,
            file_len: 0,
            reason: HL_CACHE_DAMAGE_NONE,
            payload: 0,
        };
        if let Some(d) = state.read().damage() {
            out.damaged = 1;
            out.offset = d.offset;
            out.file_len = d.file_len;
            (out.reason, out.payload) = match d.reason {
                DamageReason::Truncated => (HL_CACHE_DAMAGE_TRUNCATED, 0),
                DamageReason::BadData { payload } => (HL_CACHE_DAMAGE_BAD_DATA, payload as u32),
                // `BadHeader`, and whatever a later sdk adds: the tail is unreadable either way.
                _ => (HL_CACHE_DAMAGE_BAD_HEADER, 0),
            };
        }
        // SAFETY: non-NULL (checked above) and sized per the contract.
        unsafe { write_sized(damage, out, "damage") }
    })
}

/// See `hl_cache_verify` in `hostloop/cache.h`.
///
/// # Safety
///
/// `frames_left` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_cache_verify(
    cache: *mut hl_cache_t,
    frames_left: *mut u64,
) -> hl_status_t {
    guard("hl_cache_verify", || {
        let state = CACHES.get(cache, "cache")?;
        let left = state
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .verify() as u64;
        if !frames_left.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { *frames_left = left };
        }
        Ok(())
    })
}

/// See `hl_cache_frame` in `hostloop/cache.h`.
///
/// # Safety
///
/// `frame` is NULL or points to a writable `hl_cache_frame_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_cache_frame(
    cache: *const hl_cache_t,
    index: u64,
    verify: u32,
    frame: *mut hl_cache_frame_t,
) -> hl_status_t {
    guard("hl_cache_frame", || {
        let state = CACHES.get(cache, "cache")?;
        not_null(frame, "frame")?;
        // SAFETY: non-NULL (checked above), its `struct_size` set per the contract.
        unsafe { check_size(frame, "frame") }?;
        let c = state.read();
        let i = frame_index(&c, index)?;
        let f = if verify != 0 {
            c.frame(i)
        } else {
            c.frame_unverified(i)
        }
        .map_err(failure)?;
        let topic = state.topic(i);
        let out = hl_cache_frame_t {
            struct_size: std::mem::size_of::<hl_cache_frame_t>() as u32,
            payload_count: f.len() as u32,
            step: f.step(),
            topic: topic.as_ptr().cast(),
            topic_len: topic.len() - 1,
        };
        // SAFETY: non-NULL (checked above) and sized per the contract.
        unsafe { write_sized(frame, out, "frame") }
    })
}

/// See `hl_cache_payload` in `hostloop/cache.h`.
///
/// # Safety
///
/// `payload` is NULL or points to a writable `hl_cache_payload_t` with its `struct_size` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_cache_payload(
    cache: *const hl_cache_t,
    frame: u64,
    index: u32,
    payload: *mut hl_cache_payload_t,
) -> hl_status_t {
    guard("hl_cache_payload", || {
        let state = CACHES.get(cache, "cache")?;
        not_null(payload, "payload")?;
        // SAFETY: non-NULL (checked above), its `struct_size` set per the contract.
        unsafe { check_size(payload, "payload") }?;
        let c = state.read();
        let i = frame_index(&c, frame)?;
        let f = c.frame_unverified(i).map_err(failure)?;
        let j = index as usize;
        let (Some(p), Some(bytes)) = (f.payload(j), f.bytes(j)) else {
            return Err(Failure::new(
                HL_STATUS_INVALID_ARG,
                format!("no payload {index}: frame {i} has {}", f.len()),
            ));
        };
        let (elem, components, count) = match p {
            Payload::Bytes(b) => (0, 1, b.len() as u64),
            Payload::Array(a) => (a.elem() as u32, a.components() as u32, a.count() as u64),
        };
        let out = hl_cache_payload_t {
            struct_size: std::mem::size_of::<hl_cache_payload_t>() as u32,
            elem,
            components,
            reserved: 0,
            count,
            data: bytes.as_ptr().cast(),
            len: bytes.len(),
        };
        // SAFETY: non-NULL (checked above) and sized per the contract.
        unsafe { write_sized(payload, out, "payload") }
    })
}
