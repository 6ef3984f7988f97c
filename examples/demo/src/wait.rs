//! The few system calls the host loop needs, declared here rather than through a libc crate:
//! sleeping on the doorbell (`ppoll` on Linux, `poll` elsewhere) and the terminal's width.

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
    #[cfg(target_os = "linux")]
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
}

/// `struct winsize` of `TIOCGWINSZ`.
#[cfg(target_os = "linux")]
#[repr(C)]
struct WinSize {
    rows: u16,
    cols: u16,
    x_pixels: u16,
    y_pixels: u16,
}

/// Columns of the terminal on stdout, if it is one and says.
pub fn terminal_width() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        const TIOCGWINSZ: c_ulong = 0x5413;
        let mut ws = WinSize {
            rows: 0,
            cols: 0,
            x_pixels: 0,
            y_pixels: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `struct winsize` to the pointer, which is valid.
        let r = unsafe { ioctl(1, TIOCGWINSZ, &mut ws as *mut WinSize) };
        (r == 0 && ws.cols > 0).then_some(ws.cols as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
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
