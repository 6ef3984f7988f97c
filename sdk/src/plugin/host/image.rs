//! Plugin images: opening a library (from a fresh copy when a rebuilt file has the path of one
//! already mapped), identifying its content, and reading its descriptor.

use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::error::{PluginError, PluginErrorKind};
use crate::abi::*;
use crate::internal::sync::lock;

/// What identifies a file's content well enough to tell a rebuilt library from the one mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) len: u64,
    pub(super) modified: Option<std::time::SystemTime>,
}

pub(super) fn file_id(path: &Path) -> std::io::Result<FileId> {
    Ok(id_of(&std::fs::metadata(path)?))
}

fn id_of(m: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    FileId {
        dev,
        ino,
        len: m.len(),
        modified: m.modified().ok(),
    }
}

/// Libraries opened under their own path and never unmapped: the dynamic loader hands back the
/// mapped image for the same path, so a rebuilt file there must be loaded from a copy.
pub(super) fn mapped_paths() -> &'static Mutex<HashMap<PathBuf, FileId>> {
    static MAPPED: OnceLock<Mutex<HashMap<PathBuf, FileId>>> = OnceLock::new();
    MAPPED.get_or_init(Default::default)
}

pub(super) static COPIES: AtomicU64 = AtomicU64::new(0);

/// What identifies a build by its content: its length and a 128-bit digest of its bytes. A
/// rebuild writes a new file (a new inode), so going back to a build mapped before — a TD
/// alternating between two builds, or undoing a change — is recognised by its bytes, not by
/// its `FileId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct BuildId {
    len: u64,
    digest: [u64; 2],
}

impl BuildId {
    /// Two independent multiply-rotate lanes over the little-endian words of `bytes`. Each
    /// step is a bijection of the lane's state, so builds differing in one word always differ;
    /// anything else collides with probability about 2^-128. Not cryptographic: it tells
    /// builds apart, plugins are trusted code anyway. (A loop of plain integer operations
    /// hashes a 25 MiB debug build in tens of milliseconds even unoptimised.)
    fn of(bytes: &[u8]) -> BuildId {
        let len = bytes.len() as u64;
        let (mut a, mut b) = (0x243f_6a88_85a3_08d3 ^ len, 0x1319_8a2e_0370_7344 ^ len);
        let (words, tail) = bytes.as_chunks::<8>();
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        for w in words.iter().chain(std::iter::once(&last)) {
            let w = u64::from_le_bytes(*w);
            a = (a ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
            b = (b ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(37);
        }
        let fmix = |mut h: u64| {
            h ^= h >> 33;
            h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            h ^ (h >> 33)
        };
        BuildId {
            len,
            digest: [fmix(a), fmix(b)],
        }
    }
}

/// The builds of files already read, so that reloading an unchanged file does not read it
/// again. Cleared when it grows large: a miss only costs a read.
fn known_builds() -> &'static Mutex<HashMap<FileId, BuildId>> {
    static KNOWN: OnceLock<Mutex<HashMap<FileId, BuildId>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// Retired copies that no instance uses and no call runs in, by the build each was copied
/// from. Opening a file of that build again (a reload back to a build mapped before, whatever
/// file it is in now) takes the image from here instead of mapping one more copy, so a
/// retired image costs its mapping once per build, not once per reload. Only copies are kept:
/// each is a mapping of its own, so one taken from here is in no other instance (a library
/// opened under its own path may share its mapping with another runtime's instance through
/// `dlopen`).
fn idle_images() -> &'static Mutex<HashMap<BuildId, Vec<Image>>> {
    static IDLE: OnceLock<Mutex<HashMap<BuildId, Vec<Image>>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

/// Retired images mapped in this process for good: each copy retired at least once (idle,
/// reused or kept) counts once, and each library path retired while opened directly (its
/// mapping is shared by every `dlopen` of that path) counts once.
static RETAINED: AtomicU64 = AtomicU64::new(0);

fn retained_direct() -> &'static Mutex<std::collections::HashSet<(PathBuf, FileId)>> {
    static DIRECT: OnceLock<Mutex<std::collections::HashSet<(PathBuf, FileId)>>> = OnceLock::new();
    DIRECT.get_or_init(Default::default)
}

/// How many retired images stay mapped in this process (see `PluginStats::images_retained`).
pub(super) fn images_retained() -> u64 {
    RETAINED.load(Ordering::Relaxed)
}

/// Serialises the copy directory's life: created for a copy, removed once empty, so that no
/// `hostloop-plugins-<pid>` directory outlives the copies (which are removed as soon as they
/// are mapped).
static COPY_DIR: Mutex<()> = Mutex::new(());

/// A loaded library and how it was opened.
pub(super) struct Image {
    pub(super) lib: Option<libloading::Library>,
    /// The path opened directly (not a copy): recorded in `mapped_paths` while mapped.
    pub(super) direct: Option<(PathBuf, FileId)>,
    /// The build a copy was made from (`None` for a library opened directly).
    build: Option<BuildId>,
    /// Whether this copy was counted in `RETAINED` (at its first retirement).
    retained: bool,
}

impl Image {
    /// Releases the library: retired (kept mapped) or unmapped. Returns whether it was retired.
    /// A retired copy that is `reusable` (nothing of the plugin runs in it any more) is kept
    /// for the next open of the same build; any other retired image stays mapped for good.
    pub(super) fn release(mut self, retire: bool, reusable: bool) -> bool {
        if self.lib.is_none() {
            return true;
        }
        if retire {
            let first = match &self.direct {
                Some(key) => lock(retained_direct()).insert(key.clone()),
                None => !std::mem::replace(&mut self.retained, true),
            };
            if first {
                RETAINED.fetch_add(1, Ordering::Relaxed);
            }
            match self.build {
                Some(build) if reusable && self.direct.is_none() => {
                    lock(idle_images()).entry(build).or_default().push(self);
                }
                _ => {
                    if let Some(lib) = self.lib.take() {
                        std::mem::forget(lib);
                    }
                }
            }
            return true;
        }
        let Some(lib) = self.lib.take() else {
            return true;
        };
        if let Some((path, id)) = self.direct.take() {
            let mut mapped = lock(mapped_paths());
            if mapped.get(&path) == Some(&id) {
                mapped.remove(&path);
            }
        }
        // A failed dlclose leaves the image mapped, which is harmless.
        let _ = lib.close();
        false
    }
}

/// Reads `path` and identifies its build; the bytes are `None` when the build was known.
fn read_build(path: &Path, id: FileId) -> std::io::Result<(BuildId, Option<Vec<u8>>)> {
    if let Some(build) = lock(known_builds()).get(&id) {
        return Ok((*build, None));
    }
    let mut file = std::fs::File::open(path)?;
    // The identity of the file read, which a rebuild may have replaced since `id` was taken.
    let read_id = id_of(&file.metadata()?);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    let build = BuildId::of(&bytes);
    let mut known = lock(known_builds());
    if known.len() >= 256 {
        known.clear();
    }
    known.insert(read_id, build);
    Ok((build, Some(bytes)))
}

/// Opens `path` (from a fresh copy when `copy`, or when a different file with that path is
/// mapped already) and reads its descriptor.
pub(super) fn open(
    path: &Path,
    copy: bool,
) -> Result<(Image, hl_plugin_descriptor_t), PluginError> {
    let err = |kind, reason: String| PluginError::new(kind, path, reason);
    let id = match file_id(path) {
        Ok(id) => id,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                PluginErrorKind::FileNotFound,
                "no such file".to_owned(),
            ))
        }
        Err(e) => return Err(err(PluginErrorKind::NotALibrary, e.to_string())),
    };
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(err(
            PluginErrorKind::NotALibrary,
            "is a directory".to_owned(),
        ));
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stale = lock(mapped_paths())
        .get(&canonical)
        .is_some_and(|mapped| *mapped != id);
    let copying = copy || stale;
    let read = |e: std::io::Error| err(PluginErrorKind::Io, format!("cannot read it: {e}"));
    // The build matters only to a copy, or to find an idle copy of it.
    let (build, bytes) = if copying || !lock(idle_images()).is_empty() {
        let (build, bytes) = read_build(path, id).map_err(read)?;
        (Some(build), bytes)
    } else {
        (None, None)
    };
    let idle = build.and_then(|b| {
        let mut idle = lock(idle_images());
        let images = idle.get_mut(&b)?;
        let image = images.pop();
        if images.is_empty() {
            idle.remove(&b);
        }
        image
    });
    if let Some(image) = idle {
        return match read_descriptor(&image, path) {
            Ok(desc) => Ok((image, desc)),
            Err(e) => {
                image.release(true, true);
                Err(e)
            }
        };
    }
    let (opened, direct) = if copying {
        (
            copy_of(path, bytes.as_deref()).map_err(|(k, r)| err(k, r))?,
            None,
        )
    } else {
        (canonical.clone(), Some((canonical, id)))
    };
    // SAFETY: loading a library runs its initialisers: plugins are trusted native code (see
    // the module docs).
    let lib = unsafe { libloading::Library::new(&opened) };
    if direct.is_none() {
        // The mapping outlives the file; nothing is left behind in the temporary directory.
        remove_copy(&opened);
    }
    let lib = lib.map_err(|e| err(PluginErrorKind::NotALibrary, e.to_string()))?;
    let image = Image {
        lib: Some(lib),
        build: if direct.is_none() { build } else { None },
        direct,
        retained: false,
    };
    let desc = read_descriptor(&image, path);
    match desc {
        Ok(desc) => {
            if let Some((p, id)) = &image.direct {
                lock(mapped_paths()).insert(p.clone(), *id);
            }
            Ok((image, desc))
        }
        Err(e) => {
            // No plugin code but initialisers ran: unmapping is safe.
            image.release(false, false);
            Err(e)
        }
    }
}

/// Writes a copy of `path` (its `bytes` if read already) into the copy directory, created for
/// it. Returns the copy's path.
fn copy_of(path: &Path, bytes: Option<&[u8]>) -> Result<PathBuf, (PluginErrorKind, String)> {
    let dir = copy_dir();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("so");
    let n = COPIES.fetch_add(1, Ordering::Relaxed);
    let copy_path = dir.join(format!("{stem}.{n}.{ext}"));
    let _dir = lock(&COPY_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| {
        (
            PluginErrorKind::Io,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let written = match bytes {
        Some(bytes) => std::fs::write(&copy_path, bytes),
        None => std::fs::copy(path, &copy_path).map(drop),
    };
    written.map_err(|e| {
        let _ = std::fs::remove_file(&copy_path);
        let _ = std::fs::remove_dir(&dir);
        (
            PluginErrorKind::Io,
            format!("cannot copy to {}: {e}", copy_path.display()),
        )
    })?;
    Ok(copy_path)
}

/// The directory copies are mapped from: `hostloop-plugins-<pid>` in the temporary directory.
fn copy_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hostloop-plugins-{}", std::process::id()))
}

/// Removes a mapped copy, and the copy directory once no other copy is in it.
fn remove_copy(copy: &Path) {
    let _dir = lock(&COPY_DIR);
    let _ = std::fs::remove_file(copy);
    // Fails while another thread's copy is waiting there to be mapped: that thread removes it.
    let _ = std::fs::remove_dir(copy_dir());
}

pub(super) fn read_descriptor(
    image: &Image,
    path: &Path,
) -> Result<hl_plugin_descriptor_t, PluginError> {
    let err = |kind, reason: String| PluginError::new(kind, path, reason);
    let lib = image.lib.as_ref().expect("an open image");
    // SAFETY: the symbol's type is the ABI's `hl_plugin_entry_fn`; a library exporting the name
    // with another type is a broken plugin, which the descriptor checks below mostly catch.
    let entry =
        unsafe { lib.get::<hl_plugin_entry_fn>(HL_PLUGIN_ENTRY_SYMBOL.to_bytes_with_nul()) }
            .map_err(|e| {
                err(
                    PluginErrorKind::NoEntrySymbol,
                    format!("no `hostloop_plugin_entry` symbol: {e}"),
                )
            })?;
    let Some(entry) = *entry else {
        return Err(err(
            PluginErrorKind::NoEntrySymbol,
            "`hostloop_plugin_entry` is NULL".to_owned(),
        ));
    };
    // SAFETY: calling the plugin's entry, `[main-thread]`, no arguments.
    let ptr = unsafe { entry() };
    if ptr.is_null() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "hostloop_plugin_entry returned NULL".to_owned(),
        ));
    }
    // SAFETY: the descriptor starts with two u32s in every ABI version.
    let (size, abi) = unsafe { (*ptr.cast::<u32>(), *ptr.cast::<u32>().add(1)) };
    if abi != HL_PLUGIN_ABI_VERSION {
        let age = if abi < HL_PLUGIN_ABI_VERSION {
            "older"
        } else {
            "newer"
        };
        return Err(err(
            PluginErrorKind::VersionMismatch,
            format!(
                "built for plugin ABI {abi} ({age} than this runtime's {HL_PLUGIN_ABI_VERSION}): rebuild it against this hostloop"
            ),
        ));
    }
    let least = HL_PLUGIN_DESCRIPTOR_MIN_SIZE;
    if (size as usize) < least {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            format!("the descriptor is {size} bytes; plugin ABI {abi} needs at least {least}"),
        ));
    }
    // An older plugin's descriptor ends before the optional fields: copy what it has, and
    // leave the rest NULL (all-zero bytes are `None` for every field after the first layout).
    let mut desc = std::mem::MaybeUninit::<hl_plugin_descriptor_t>::zeroed();
    let have = (size as usize).min(std::mem::size_of::<hl_plugin_descriptor_t>());
    // SAFETY: the plugin's static descriptor has at least `size >= have` bytes; `desc` has
    // room for `have`; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), desc.as_mut_ptr().cast::<u8>(), have)
    };
    // SAFETY: every field is an integer, a pointer or an `Option` of a function pointer, for
    // which all-zero bytes are valid; the first `have` bytes are the plugin's.
    let desc = unsafe { desc.assume_init() };
    let text = |p: *const c_char, field: &str| -> Result<String, PluginError> {
        // SAFETY: the ABI says both are NUL-terminated static strings (NULL is checked).
        unsafe { utf8(p, field) }
            .map(str::to_owned)
            .map_err(|e| err(PluginErrorKind::BadDescriptor, e.message))
    };
    let name = text(desc.name, "descriptor->name")?;
    text(desc.version, "descriptor->version")?;
    if name.is_empty() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "the name is empty".to_owned(),
        ));
    }
    if desc.load.is_none() || desc.unload.is_none() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "load and unload must not be NULL".to_owned(),
        ));
    }
    if desc.save_state.is_some() && desc.restore_state.is_none() {
        return Err(err(
            PluginErrorKind::BadDescriptor,
            "save_state without restore_state".to_owned(),
        ));
    }
    Ok(desc)
}

pub(super) fn descriptor_text(p: *const c_char) -> String {
    // SAFETY: validated by `read_descriptor`; static in the (still mapped) image.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
