//! [`PluginError`]: what went wrong loading, unloading or reloading a plugin.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::abi::*;

/// What went wrong loading, unloading or reloading a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PluginErrorKind {
    /// No file at the path.
    FileNotFound,
    /// The file is not a loadable shared library (the loader's message says why).
    NotALibrary,
    /// The library does not export `hostloop_plugin_entry`.
    NoEntrySymbol,
    /// Built for another plugin ABI version (older or newer).
    VersionMismatch,
    /// The descriptor is too small, or a required field is NULL or not UTF-8, or a reload
    /// found a different plugin.
    BadDescriptor,
    /// A plugin of that name is loaded in this runtime already.
    AlreadyLoaded,
    /// The plugin's `load` (or `restore_state`, `save_state`) panicked.
    Panicked,
    /// The plugin's `load`, `save_state` or `restore_state` returned an error.
    Failed,
    /// The old build's work did not finish within the reload deadline.
    Timeout,
    /// Called off the main thread.
    WrongThread,
    /// Called from inside the plugin's own main-thread code.
    Reentrant,
    /// The runtime is shut down.
    ShutDown,
    /// Copying the library for a reload failed.
    Io,
    /// An isolated plugin's worker process could not be started, or was lost (crashed, killed,
    /// hung, restarting, down) before it answered.
    Worker,
}

impl PluginErrorKind {
    /// The kind whose [`PluginError::status`] is `status` (a worker reports its failures as
    /// statuses); [`Failed`](PluginErrorKind::Failed) for any other status.
    pub(crate) fn from_status(status: hl_status_t) -> Self {
        use PluginErrorKind::*;
        [
            FileNotFound,
            NotALibrary,
            NoEntrySymbol,
            VersionMismatch,
            BadDescriptor,
            AlreadyLoaded,
            Panicked,
            Failed,
            Timeout,
            WrongThread,
            Reentrant,
            ShutDown,
            Io,
        ]
        .into_iter()
        .find(|k| PluginError::new(*k, Path::new(""), "").status() == status)
        .unwrap_or(Failed)
    }
}

/// A plugin operation's failure: its kind, the path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub(super) kind: PluginErrorKind,
    pub(super) path: PathBuf,
    pub(super) reason: String,
}

impl PluginError {
    pub(crate) fn new(kind: PluginErrorKind, path: &Path, reason: impl Into<String>) -> Self {
        PluginError {
            kind,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> PluginErrorKind {
        self.kind
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why, in words (the loader's or the plugin's message).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The `HL_STATUS_*` the C API returns for it.
    pub fn status(&self) -> hl_status_t {
        match self.kind {
            PluginErrorKind::FileNotFound => HL_STATUS_FILE_NOT_FOUND,
            PluginErrorKind::NotALibrary => HL_STATUS_NOT_A_LIBRARY,
            PluginErrorKind::NoEntrySymbol => HL_STATUS_NO_ENTRY_SYMBOL,
            PluginErrorKind::VersionMismatch => HL_STATUS_VERSION_MISMATCH,
            PluginErrorKind::BadDescriptor => HL_STATUS_BAD_DESCRIPTOR,
            PluginErrorKind::AlreadyLoaded => HL_STATUS_ALREADY_LOADED,
            PluginErrorKind::Panicked => HL_STATUS_PANIC,
            PluginErrorKind::Failed => HL_STATUS_FAILED,
            PluginErrorKind::Timeout => HL_STATUS_TIMEOUT,
            PluginErrorKind::WrongThread => HL_STATUS_WRONG_THREAD,
            PluginErrorKind::Reentrant => HL_STATUS_REENTRANT,
            PluginErrorKind::ShutDown => HL_STATUS_SHUT_DOWN,
            PluginErrorKind::Io => HL_STATUS_OS,
            PluginErrorKind::Worker => HL_STATUS_WORKER,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PluginError {}
