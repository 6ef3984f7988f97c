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
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Ok(FileId {
        dev,
        ino,
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// Libraries opened under their own path and never unmapped: the dynamic loader hands back the
/// mapped image for the same path, so a rebuilt file there must be loaded from a copy.
pub(super) fn mapped_paths() -> &'static Mutex<HashMap<PathBuf, FileId>> {
    static MAPPED: OnceLock<Mutex<HashMap<PathBuf, FileId>>> = OnceLock::new();
    MAPPED.get_or_init(Default::default)
}

pub(super) static COPIES: AtomicU64 = AtomicU64::new(0);

/// Retired copies that no instance uses and no call runs in, by the identity of the file each
/// was copied from. Opening a file of that identity again (a reload back to a build mapped
/// before) takes the image from here instead of mapping one more copy, so a retired image costs
/// its mapping once per build, not once per reload. Only copies are kept: each is a mapping of
/// its own, so one taken from here is in no other instance (a library opened under its own
/// path may share its mapping with another runtime's instance through `dlopen`).
fn idle_images() -> &'static Mutex<HashMap<FileId, Vec<Image>>> {
    static IDLE: OnceLock<Mutex<HashMap<FileId, Vec<Image>>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

/// A loaded library and how it was opened.
pub(super) struct Image {
    pub(super) lib: Option<libloading::Library>,
    /// The path opened directly (not a copy): recorded in `mapped_paths` while mapped.
    pub(super) direct: Option<(PathBuf, FileId)>,
    /// The identity of the file it was opened from (directly or through a copy).
    source: FileId,
}

impl Image {
    /// Releases the library: retired (kept mapped) or unmapped. Returns whether it was retired.
    /// A retired copy that is `reusable` (nothing of the plugin runs in it any more) is kept
    /// for the next open of the same file; any other retired image stays mapped for good.
    pub(super) fn release(mut self, retire: bool, reusable: bool) -> bool {
        if self.lib.is_none() {
            return true;
        }
        if retire {
            if reusable && self.direct.is_none() {
                lock(idle_images())
                    .entry(self.source)
                    .or_default()
                    .push(self);
            } else if let Some(lib) = self.lib.take() {
                std::mem::forget(lib);
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
    let idle = lock(idle_images()).get_mut(&id).and_then(Vec::pop);
    if let Some(image) = idle {
        return match read_descriptor(&image, path) {
            Ok(desc) => Ok((image, desc)),
            Err(e) => {
                image.release(true, true);
                Err(e)
            }
        };
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stale = lock(mapped_paths())
        .get(&canonical)
        .is_some_and(|mapped| *mapped != id);
    let (opened, direct) = if copy || stale {
        let dir = std::env::temp_dir().join(format!("hostloop-plugins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            err(
                PluginErrorKind::Io,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("so");
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let copy_path = dir.join(format!("{stem}.{n}.{ext}"));
        std::fs::copy(path, &copy_path).map_err(|e| {
            err(
                PluginErrorKind::Io,
                format!("cannot copy to {}: {e}", copy_path.display()),
            )
        })?;
        (copy_path, None)
    } else {
        (canonical.clone(), Some((canonical, id)))
    };
    // SAFETY: loading a library runs its initialisers: plugins are trusted native code (see
    // the module docs).
    let lib = unsafe { libloading::Library::new(&opened) };
    if direct.is_none() {
        // The mapping outlives the file; nothing is left behind in the temporary directory.
        let _ = std::fs::remove_file(&opened);
    }
    let lib = lib.map_err(|e| err(PluginErrorKind::NotALibrary, e.to_string()))?;
    let image = Image {
        lib: Some(lib),
        direct,
        source: id,
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
