//! Large payloads between a worker and its host: sealed memfds, not the socket.
//!
//! A sink message of at least [`INLINE_MAX`] bytes (a frame of a million particles is 12 MB)
//! is copied once, by the worker, into a *region*: a `memfd` it created, sized, and sealed
//! against shrinking and growing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`). The first time a
//! region is used its fd crosses the socket with `SCM_RIGHTS` beside a `region` frame; the host
//! checks the seals and the size and maps it read-only; the message's frame then only names the
//! region and the length. The host's sink reads the bytes from the mapping, in place.
//!
//! - **No copy through the socket, nothing allocated in steady playback**: the worker reuses a
//!   region once the host has acknowledged the pump whose messages used it (the worker pumps
//!   again only after that acknowledgement, so a region is never written while the host may
//!   read it). A `latest` simulation uses one region, over and over.
//! - **No leak, no SIGBUS**: a memfd has no name, so nothing is left in `/dev/shm` by a crash —
//!   the kernel frees it with its last fd or mapping. A sealed memfd cannot shrink, so a
//!   mapping of it cannot fault; the host refuses a region without the seals or of another size
//!   than announced, and at most [`MAX_REGIONS`] regions per worker (a fixed fd budget).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};
#[cfg(target_os = "linux")]
use rustix::fs::MemfdFlags;
use rustix::fs::SealFlags;

/// Payloads of this many bytes or more go through a region.
pub(crate) const INLINE_MAX: usize = 64 << 10;
/// The most regions a worker may have mapped in its host at once.
pub(crate) const MAX_REGIONS: usize = 64;
/// The largest region (a payload above it is refused by the sink's caller).
pub(crate) const MAX_REGION: u64 = 4 << 30;

const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A new sealed memfd of `size` bytes, mapped writable.
#[cfg(target_os = "linux")]
fn create(size: u64) -> io::Result<(OwnedFd, MmapMut)> {
    let fd = rustix::fs::memfd_create(
        "hostloop-payload",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, SEALS)?;
    // SAFETY: the memfd is ours, sealed against resizing (no SIGBUS), and only this process
    // writes it; the host maps it read-only.
    let map = unsafe { MmapMut::map_mut(&fd)? };
    Ok((fd, map))
}

/// Without memfds every payload goes inline.
#[cfg(not(target_os = "linux"))]
fn create(_size: u64) -> io::Result<(OwnedFd, MmapMut)> {
    Err(io::ErrorKind::Unsupported.into())
}

struct Writable {
    id: u32,
    map: MmapMut,
    /// The pump whose messages use it, until the host acknowledges that pump.
    busy: Option<u64>,
}

/// What [`Pool::put`] did.
pub(crate) struct Put {
    pub(crate) region: u32,
    /// A region made for this payload: its fd and size go to the host first.
    pub(crate) new: Option<(OwnedFd, u64)>,
    /// Regions dropped to make room: the host unmaps them.
    pub(crate) dropped: Vec<u32>,
}

/// The worker's regions, reused as a ring.
#[derive(Default)]
pub(crate) struct Pool {
    regions: Vec<Writable>,
    next_id: u32,
}

impl Pool {
    /// Copies `bytes` into a free region that fits — making one if none does — for the pump
    /// `seq`. `Ok(None)` when every region is busy and no more may be made (the caller sends
    /// the payload inline).
    pub(crate) fn put(&mut self, bytes: &[u8], seq: u64) -> io::Result<Option<Put>> {
        let need = bytes.len();
        let mut dropped = Vec::new();
        let fit = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.busy.is_none() && r.map.len() >= need)
            .min_by_key(|(_, r)| r.map.len())
            .map(|(i, _)| i);
        let (index, new) = match fit {
            Some(i) => (i, None),
            None => {
                // Free regions too small for it are dropped before a bigger one is made.
                self.regions.retain(|r| {
                    let keep = r.busy.is_some();
                    if !keep {
                        dropped.push(r.id);
                    }
                    keep
                });
                if self.regions.len() >= MAX_REGIONS {
                    return Ok(None);
                }
                // Room to grow: a payload that grows a little (a larger simulation) reuses it.
                let size = (need as u64).next_multiple_of(1 << 20).min(MAX_REGION);
                let (fd, map) = create(size)?;
                self.next_id = self.next_id.wrapping_add(1);
                self.regions.push(Writable {
                    id: self.next_id,
                    map,
                    busy: None,
                });
                (self.regions.len() - 1, Some((fd, size)))
            }
        };
        let r = &mut self.regions[index];
        r.map[..need].copy_from_slice(bytes);
        r.busy = Some(seq);
        Ok(Some(Put {
            region: r.id,
            new,
            dropped,
        }))
    }

    /// The host acknowledged the pumps up to `seq`: their regions are free again.
    pub(crate) fn release(&mut self, seq: u64) {
        for r in &mut self.regions {
            if r.busy.is_some_and(|s| s <= seq) {
                r.busy = None;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.regions.len()
    }
}

/// The host's mappings of one worker's regions.
#[derive(Default)]
pub(crate) struct Mapped {
    regions: HashMap<u32, Arc<Mmap>>,
}

impl Mapped {
    /// Maps region `id`, received as `fd`, after checking that it is what a region must be: a
    /// sealed memfd of exactly `size` bytes.
    pub(crate) fn accept(&mut self, id: u32, size: u64, fd: OwnedFd) -> Result<(), String> {
        if self.regions.len() >= MAX_REGIONS && !self.regions.contains_key(&id) {
            return Err(format!("more than {MAX_REGIONS} shared-memory regions"));
        }
        #[cfg(target_os = "linux")]
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|e| format!("a region that is not a sealable memfd ({e})"))?;
        #[cfg(not(target_os = "linux"))]
        let seals = SealFlags::empty();
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err("a region not sealed against shrinking and growing".to_owned());
        }
        let file = File::from(fd);
        let actual = file
            .metadata()
            .map_err(|e| format!("a region whose size cannot be read ({e})"))?
            .len();
        if actual != size || size > MAX_REGION || size == 0 {
            return Err(format!(
                "a region of {actual} bytes announced as {size} (at most {MAX_REGION})"
            ));
        }
        // SAFETY: sealed against shrinking (checked above), so no access can fault; mapped
        // read-only, and the worker writes it only while no message of it is being delivered.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("mapping a region: {e}"))?;
        self.regions.insert(id, Arc::new(map));
        Ok(())
    }

    pub(crate) fn unmap(&mut self, id: u32) {
        self.regions.remove(&id);
    }

    /// Region `id`, if its first `len` bytes exist.
    pub(crate) fn get(&self, id: u32, len: u64) -> Result<Arc<Mmap>, String> {
        let map = self
            .regions
            .get(&id)
            .ok_or_else(|| format!("a message in region {id}, which it never sent"))?;
        if len > map.len() as u64 {
            return Err(format!(
                "a message of {len} bytes in a region of {}",
                map.len()
            ));
        }
        Ok(map.clone())
    }

    pub(crate) fn clear(&mut self) {
        self.regions.clear();
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::fs::MemfdFlags;

    #[test]
    fn steady_payloads_reuse_one_region_and_busy_ones_are_never_written() {
        let mut pool = Pool::default();
        let frame = vec![7u8; 100 << 10];
        let first = pool.put(&frame, 1).unwrap().unwrap();
        assert!(first.new.is_some(), "the first payload makes a region");
        // Busy until pump 1 is acknowledged: a second payload of the same pump gets another.
        let second = pool.put(&frame, 1).unwrap().unwrap();
        assert_ne!(second.region, first.region);
        pool.release(1);
        for seq in 2..100 {
            let p = pool.put(&frame, seq).unwrap().unwrap();
            assert!(
                p.new.is_none() && p.dropped.is_empty(),
                "pump {seq} reuses a region"
            );
            pool.release(seq);
        }
        assert_eq!(pool.len(), 2);
        // A bigger payload drops the free regions too small for it and makes one that fits.
        let big = vec![1u8; 3 << 20];
        let p = pool.put(&big, 100).unwrap().unwrap();
        assert_eq!(p.dropped.len(), 2);
        let (fd, size) = p.new.unwrap();
        assert!(size >= big.len() as u64);
        // The host accepts it: sealed, and of the announced size.
        let mut mapped = Mapped::default();
        mapped.accept(p.region, size, fd).unwrap();
        let map = mapped.get(p.region, big.len() as u64).unwrap();
        assert!(
            map[..big.len()].iter().all(|&b| b == 1),
            "the bytes, in place"
        );
        assert!(mapped.get(p.region, size + 1).is_err());
        assert!(mapped.get(999, 1).is_err());
    }

    #[test]
    fn the_host_refuses_unsealed_or_missized_regions_and_too_many() {
        let mut mapped = Mapped::default();
        // An unsealed memfd could be truncated under the host's mapping (SIGBUS).
        let fd =
            rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(mapped.accept(1, 4096, fd).unwrap_err().contains("sealed"));
        // A sealed one of another size than announced.
        let (fd, _) = create(8192).unwrap();
        assert!(mapped
            .accept(2, 4096, fd)
            .unwrap_err()
            .contains("announced"));
        // Not a memfd at all.
        let file = File::open("/dev/null").unwrap();
        assert!(mapped.accept(3, 1, OwnedFd::from(file)).is_err());
        // A fixed budget of regions.
        for id in 0..MAX_REGIONS as u32 {
            let (fd, _) = create(4096).unwrap();
            mapped.accept(100 + id, 4096, fd).unwrap();
        }
        let (fd, _) = create(4096).unwrap();
        assert!(mapped
            .accept(1000, 4096, fd)
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn a_pool_with_every_region_busy_says_so_instead_of_growing() {
        let mut pool = Pool::default();
        let frame = vec![0u8; INLINE_MAX];
        for _ in 0..MAX_REGIONS {
            assert!(pool.put(&frame, 1).unwrap().is_some());
        }
        assert!(pool.put(&frame, 1).unwrap().is_none(), "inline instead");
    }
}
