//! Shared read-only blobs: big data (a model of millions of triangles, a baked cache) made once
//! by the host and read by every plugin — in the host's process or in any worker — as a `&[u8]`
//! without a copy.
//!
//! A blob is a sealed `memfd` (its size and contents can no longer change: `F_SEAL_SHRINK |
//! F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`), mapped read-only. A plugin asks its host for it by
//! name through the services table and maps a duplicate of the fd; a worker process receives
//! the fd over its socket (`SCM_RIGHTS`) when it starts and whenever the host makes a new blob.
//! Every mapping shares the same pages, so memory grows once, however many processes read it,
//! and nothing is left in `/dev/shm` if any of them crashes (the kernel frees the pages with
//! the last fd or mapping).
//!
//! ```no_run
//! let rt = hostloop::Runtime::new()?;
//! let mesh = rt.create_blob("shot042/mesh", &std::fs::read("mesh.bin")?)?;
//! assert_eq!(rt.blob("shot042/mesh").unwrap().len(), mesh.len());
//! // In a plugin: `ctx.handle().blob("shot042/mesh")` maps the same pages.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Write as _;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::internal::sync::lock;

/// A shared read-only blob: derefs to its bytes. Cheap to clone; the mapping lives while any
/// clone does.
#[derive(Clone)]
pub struct Blob(Arc<Mapped>);

struct Mapped {
    name: String,
    fd: OwnedFd,
    /// `None` for an empty blob (which maps nothing).
    map: Option<Mmap>,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("name", &self.0.name)
            .field("len", &self.len())
            .finish()
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.map.as_deref().unwrap_or(&[])
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Blob {
    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// A new fd of the blob (for a plugin or a worker to map).
    pub(crate) fn dup_fd(&self) -> std::io::Result<OwnedFd> {
        self.0.fd.try_clone()
    }

    /// Its memfd, to pass to another process (`SCM_RIGHTS`) while the blob lives.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.fd.as_fd()
    }

    /// A blob of its own (named `name`, in no runtime's table) holding a copy of `bytes`,
    /// sealed: how large bytes cross to another process.
    pub(crate) fn sealed(name: &str, bytes: &[u8]) -> Result<Blob> {
        seal(name, |f| f.write_all(bytes))
    }

    /// Maps a blob received as `fd` (from a host), after checking it cannot change under the
    /// mapping: a memfd sealed against shrinking, growing and writing, of `len` bytes.
    pub(crate) fn from_fd(name: &str, fd: OwnedFd, len: u64) -> Result<Blob> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::SealFlags;
            let seals = rustix::fs::fcntl_get_seals(&fd)
                .map_err(|_| Error::InvalidArgument("a blob must be a sealed memfd"))?;
            if !seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE) {
                return Err(Error::InvalidArgument("a blob must be sealed read-only"));
            }
        }
        let file = File::from(fd);
        let actual = file.metadata().map_err(io_error)?.len();
        if actual != len {
            return Err(Error::InvalidArgument(
                "a blob of another size than announced",
            ));
        }
        map(name, file)
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::failed(format!("blob: {e}"))
}

fn map(name: &str, file: File) -> Result<Blob> {
    let len = file.metadata().map_err(io_error)?.len();
    let map = if len == 0 {
        None
    } else {
        // SAFETY: the memfd is sealed against shrinking and writing (checked or done by the
        // caller), so the mapping can neither fault nor change under a reader.
        Some(unsafe { Mmap::map(&file) }.map_err(io_error)?)
    };
    Ok(Blob(Arc::new(Mapped {
        name: name.to_owned(),
        fd: file.into(),
        map,
    })))
}

/// A new blob holding `bytes`, sealed.
#[cfg(target_os = "linux")]
fn seal(name: &str, fill: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<Blob> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "hostloop-blob",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io_error(e.into()))?;
    let mut file = File::from(fd);
    fill(&mut file).map_err(io_error)?;
    let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(file.as_fd(), seals).map_err(|e| io_error(e.into()))?;
    map(name, file)
}

#[cfg(not(target_os = "linux"))]
fn seal(_name: &str, _fill: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<Blob> {
    Err(Error::failed("blobs need memfds (Linux)"))
}

/// The blobs of one runtime (host side), by name. A blob stays until the runtime is dropped:
/// plugins may hold mappings of it.
#[derive(Default)]
pub(crate) struct Blobs {
    by_name: Mutex<HashMap<String, Blob>>,
}

impl Blobs {
    pub(crate) fn get(&self, name: &str) -> Option<Blob> {
        lock(&self.by_name).get(name).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Blob> {
        lock(&self.by_name).values().cloned().collect()
    }

    fn insert(&self, blob: Blob) -> Result<()> {
        let mut map = lock(&self.by_name);
        if map.contains_key(blob.name()) {
            return Err(Error::InvalidArgument(
                "a blob of that name exists in this runtime",
            ));
        }
        map.insert(blob.name().to_owned(), blob);
        Ok(())
    }

    /// A blob received from this (worker) runtime's host.
    pub(crate) fn adopt(&self, blob: Blob) {
        lock(&self.by_name).insert(blob.name().to_owned(), blob);
    }
}

impl Handle {
    /// Creates the blob `name` holding a copy of `bytes`, sealed read-only, for every plugin of
    /// this runtime — in-process or isolated — to read with [`Handle::blob`] without a copy.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty name, one taken already, or inside a plugin (the
    /// host makes blobs); [`Error::Failed`] if the memfd cannot be made (no memory, no fds, not
    /// Linux).
    pub fn create_blob(&self, name: &str, bytes: &[u8]) -> Result<Blob> {
        self.create_blob_with(name, |f| f.write_all(bytes))
    }

    /// Creates the blob `name` from the file at `path`, copied once into sealed memory (a
    /// mapping of the file itself would fault if someone truncated it).
    ///
    /// # Errors
    ///
    /// As [`create_blob`](Handle::create_blob); [`Error::Failed`] if the file cannot be read.
    pub fn create_blob_from_file(&self, name: &str, path: impl AsRef<Path>) -> Result<Blob> {
        let path = path.as_ref();
        self.create_blob_with(name, |f| {
            let mut src = File::open(path)?;
            std::io::copy(&mut src, f).map(drop)
        })
    }

    fn create_blob_with(
        &self,
        name: &str,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<Blob> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("a blob needs a name"));
        }
        if self.is_plugin() {
            return Err(Error::InvalidArgument(
                "blobs are made by the host; a plugin reads them with Handle::blob",
            ));
        }
        if self.shared().blobs.get(name).is_some() {
            return Err(Error::InvalidArgument(
                "a blob of that name exists in this runtime",
            ));
        }
        let blob = seal(name, fill)?;
        self.shared().blobs.insert(blob.clone())?;
        #[cfg(unix)]
        self.shared().workers.share_blob(&blob);
        Ok(blob)
    }

    /// The blob `name` of this runtime — or, inside a plugin, of its host's runtime — mapped
    /// read-only: the same pages every other reader maps.
    pub fn blob(&self, name: &str) -> Option<Blob> {
        let shared = self.shared();
        if let Some(b) = shared.blobs.get(name) {
            return Some(b);
        }
        #[cfg(unix)]
        if let Some((fd, len)) = shared.backend.host_blob(name) {
            let blob = Blob::from_fd(name, fd, len).ok()?;
            // Kept, so later calls map nothing new.
            shared.blobs.adopt(blob.clone());
            return Some(blob);
        }
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_sealed_mapped_once_and_found_by_name() {
        let rt = crate::Runtime::builder().workers(1).build().unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let blob = rt.create_blob("model", &bytes).unwrap();
        assert_eq!(&blob[..], &bytes[..]);
        assert_eq!(blob.name(), "model");
        let again = rt.blob("model").unwrap();
        assert_eq!(again.as_ptr(), blob.as_ptr(), "the same mapping");
        assert!(rt.blob("nothing").is_none());
        assert!(matches!(
            rt.create_blob("model", b"x"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            rt.create_blob("", b"x"),
            Err(Error::InvalidArgument(_))
        ));
        // Sealed: it can be neither written nor resized, by anyone holding the fd.
        let fd = blob.dup_fd().unwrap();
        assert!(rustix::io::write(&fd, b"overwrite").is_err());
        assert!(rustix::fs::ftruncate(&fd, 1).is_err());
        // A received fd is checked: a plain memfd is refused, the blob's own fd accepted.
        let plain = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(Blob::from_fd("plain", plain, 0).is_err());
        let copy = Blob::from_fd("model", blob.dup_fd().unwrap(), bytes.len() as u64).unwrap();
        assert_eq!(&copy[..], &bytes[..]);
        assert!(Blob::from_fd("model", blob.dup_fd().unwrap(), 5).is_err());
        let empty = rt.create_blob("empty", b"").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_blob_from_a_file_is_a_copy_that_the_file_cannot_change() {
        let rt = crate::Runtime::builder().workers(1).build().unwrap();
        let path = std::env::temp_dir().join(format!("hostloop-blob-test-{}", std::process::id()));
        std::fs::write(&path, b"triangles").unwrap();
        let blob = rt.create_blob_from_file("mesh", &path).unwrap();
        std::fs::write(&path, b"").unwrap(); // truncated: a mapping of the file would fault
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&blob[..], b"triangles");
        assert!(matches!(
            rt.create_blob_from_file("gone", &path),
            Err(Error::Failed(_))
        ));
    }
}
