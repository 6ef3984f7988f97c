//! Ctrl-C (and `kill`): the first `SIGINT` or `SIGTERM` asks the host loop to stop, so the
//! plugin is unloaded and the summary printed; a second one ends the process at once (exit
//! status 130), in case the unload itself hangs.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

#[cfg(unix)]
mod sys {
    use std::ffi::c_int;

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;

    unsafe extern "C" {
        /// `signal(2)`: the previous handler, or `SIG_ERR`, as an address.
        pub fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        /// `_exit(2)`, async-signal-safe.
        pub fn _exit(status: c_int) -> !;
    }
}

#[cfg(unix)]
extern "C" fn on_signal(_: std::ffi::c_int) {
    // Only async-signal-safe work here: an atomic swap, and `_exit`.
    if STOP.swap(true, Ordering::Relaxed) {
        // SAFETY: `_exit` is async-signal-safe and takes any status.
        unsafe { sys::_exit(130) }
    }
}

/// Installs the handler.
pub fn install() {
    #[cfg(unix)]
    for signum in [sys::SIGINT, sys::SIGTERM] {
        // SAFETY: `on_signal` has the handler's signature and only does async-signal-safe work;
        // SIGINT and SIGTERM are valid signal numbers on every Unix.
        unsafe { sys::signal(signum, on_signal) };
    }
}
