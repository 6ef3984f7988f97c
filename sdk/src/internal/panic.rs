//! Catching the panics of code hostloop runs for others, without the panic hook's report.
//!
//! Every boundary where hostloop calls code it did not write — jobs, main-thread items, sinks,
//! event and stream handlers, host and plugin callbacks, the C exports — catches panics with
//! [`catch`], and the panic's message goes on into an error, a status or a counter. The
//! default panic hook would also print that message, and with `RUST_BACKTRACE=1` in the host's
//! environment a whole backtrace, to the host's stderr for every caught panic: millions of lines
//! and seconds of symbolisation for a tool that panics per item.
//!
//! So the first [`catch`] (or the first runtime built) installs a process-wide hook that stays
//! silent while the panicking thread is inside a `catch` (a per-thread depth counter), and hands
//! every other panic to the hook that was installed before it, which prints as usual. A panic
//! that escapes hostloop's boundaries is therefore reported exactly as before.
//!
//! For diagnostics, `HOSTLOOP_PANIC_BACKTRACE=1` (read once, when the hook would be installed)
//! leaves the previous hook in charge of caught panics too.
//!
//! Limits: a hook a program sets *after* hostloop's replaces it and decides for itself; a panic
//! that user code inside a boundary catches on its own is silent too. A plugin built with its
//! own copy of `std` has its own hook, installed by its own copy of this module.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

/// The environment variable that keeps the panic hook's report for caught panics.
pub(crate) const BACKTRACE_VAR: &str = "HOSTLOOP_PANIC_BACKTRACE";

thread_local! {
    /// How many `catch` frames the thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`, catching a panic as [`catch_unwind`] does, with the panic hook silent for it.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    install();
    let _inside = Depth::set(depth() + 1);
    catch_unwind(AssertUnwindSafe(f))
}

/// Runs `f` as if inside a boundary when `quiet`, else as if outside any: for work a caller
/// hands to another thread whose panic is resumed in the caller (`parallel_for`), so that the
/// hook's verdict is the caller's, not the helper thread's.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn relay<R>(quiet: bool, f: impl FnOnce() -> R) -> R {
    let _as_caller = Depth::set(u32::from(quiet));
    f()
}

/// Whether the calling thread is inside a boundary (a panic now would be silent).
pub(crate) fn is_inside() -> bool {
    depth() > 0
}

fn depth() -> u32 {
    DEPTH.try_with(Cell::get).unwrap_or(0)
}

/// Sets the thread's depth until dropped, then restores the previous one (also on unwind).
struct Depth(u32);

impl Depth {
    fn set(depth: u32) -> Depth {
        Depth(DEPTH.try_with(|d| d.replace(depth)).unwrap_or(0))
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(self.0));
    }
}

/// Installs the hook once per process (per copy of `std`). Not while the thread is panicking
/// (`take_hook` would panic then): a `catch` in a destructor during unwinding leaves it to the
/// next call.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    if ONCE.is_completed() || std::thread::panicking() {
        return;
    }
    ONCE.call_once(|| {
        let keep = std::env::var_os(BACKTRACE_VAR).is_some_and(|v| !v.is_empty() && v != "0");
        if keep {
            return;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !is_inside() {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_keeps_the_payload_and_restores_the_depth() {
        assert!(!is_inside());
        let r = catch(|| -> u32 {
            assert!(is_inside());
            let inner = catch(|| panic!("inner"));
            assert!(inner.is_err());
            assert!(is_inside(), "still inside the outer boundary");
            panic!("outer {}", 7)
        });
        let payload = r.unwrap_err();
        assert_eq!(crate::error::panic_message(payload.as_ref()), "outer 7");
        assert!(!is_inside());
        assert_eq!(catch(|| 5).unwrap(), 5);
    }

    #[test]
    fn relay_takes_the_callers_verdict_and_restores_the_threads_own() {
        let _ = catch(|| {
            assert!(!relay(false, is_inside));
            assert!(is_inside());
        });
        assert!(relay(true, is_inside));
        assert!(!is_inside());
    }
}
