//! Noticing a rebuilt plugin: the file's identity (device, inode, length, modification time),
//! compared once per check. A build writes a library in steps (cargo links it in `deps/`, then
//! hard-links it into place), so a change is reported only once the file has stayed the same
//! for one more check.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt as _;
        (m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Some(Identity {
        dev,
        ino,
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing new (or a change still settling).
    None,
    /// The file is gone (reported once until it is back).
    Gone,
    /// The file changed and stayed so since the last check: reload it.
    Settled,
}

/// Watches one file by polling.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    seen: Option<Identity>,
    settling: Option<Identity>,
    gone: bool,
}

impl Watcher {
    /// Takes the file as it is now as the one loaded.
    pub fn new(path: &Path) -> Self {
        Watcher {
            path: path.to_path_buf(),
            seen: identity(path),
            settling: None,
            gone: false,
        }
    }

    /// One check.
    pub fn check(&mut self) -> Change {
        let now = identity(&self.path);
        if now == self.seen {
            self.settling = None;
            self.gone = false;
            return Change::None;
        }
        let Some(now) = now else {
            self.settling = None;
            if std::mem::replace(&mut self.gone, true) {
                return Change::None;
            }
            return Change::Gone;
        };
        self.gone = false;
        if self.settling == Some(now) {
            self.settling = None;
            Change::Settled
        } else {
            self.settling = Some(now);
            Change::None
        }
    }

    /// After a reload (whatever its outcome): the file as it is now is the one tried.
    pub fn tried(&mut self) {
        self.seen = identity(&self.path);
        self.settling = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once_the_file_has_settled_and_a_removal_once() {
        let dir = std::env::temp_dir().join(format!("hostloop-host-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plugin.so");
        std::fs::write(&file, b"one").unwrap();
        let mut w = Watcher::new(&file);
        assert_eq!(w.check(), Change::None);
        std::fs::write(dir.join("next"), b"second build").unwrap();
        std::fs::rename(dir.join("next"), &file).unwrap();
        assert_eq!(w.check(), Change::None, "settling");
        assert_eq!(w.check(), Change::Settled);
        w.tried();
        assert_eq!(w.check(), Change::None);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(w.check(), Change::Gone);
        assert_eq!(w.check(), Change::None, "reported once");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
