//! Sleeping on the doorbell: `ppoll` (Linux) or `poll` with a timeout, declared here rather than
//! through a libc crate.

use std::ffi::{c_int, c_short, c_ulong};
use std::io;
use std::time::Duration;

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

const POLLIN: c_short = 0x001;

#[cfg(target_os = "linux")]
#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    #[cfg(target_os = "linux")]
    fn ppoll(
        fds: *mut PollFd,
        nfds: c_ulong,
        timeout: *const Timespec,
        sigmask: *const std::ffi::c_void,
    ) -> c_int;
    #[cfg(not(target_os = "linux"))]
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
}

/// Waits until `fd` is readable or `timeout` has passed: `Ok(true)` when readable, `Ok(false)`
/// on timeout or when a signal interrupted the wait (the caller's loop just waits again).
pub fn readable(fd: c_int, timeout: Duration) -> io::Result<bool> {
    let mut p = PollFd {
        fd,
        events: POLLIN,
        revents: 0,
    };
    #[cfg(target_os = "linux")]
    let n = {
        // Nanosecond timeout: `poll`'s milliseconds would shift a 16.7 ms frame by up to 1 ms.
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as i64,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask; all outlive the call.
        unsafe { ppoll(&mut p, 1, &ts, std::ptr::null()) }
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: one valid pollfd that outlives the call.
    let n = unsafe {
        poll(
            &mut p,
            1,
            timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as c_int,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0 && p.revents & POLLIN != 0)
}
