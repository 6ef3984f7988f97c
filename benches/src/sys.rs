//! The little Linux the benchmarks need: waiting on a file descriptor, an eventfd, and pinning
//! every thread of the process to one CPU.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until `fd` is readable or `timeout` passes (`None`: no timeout). Returns whether it is
/// readable.
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `pfd` is one valid pollfd and `ts_ptr` is null or points to a live timespec;
        // a null signal mask leaves the mask unchanged.
        let n = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
        if n >= 0 {
            return Ok(n > 0 && pfd.revents & libc::POLLIN != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A Linux eventfd: the raw wake-up the doorbell is compared with.
#[derive(Debug)]
pub struct EventFd(RawFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall with constant flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    pub fn fd(&self) -> RawFd {
        self.0
    }

    /// Makes the fd readable.
    pub fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let n = unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
        debug_assert_eq!(n, 8);
    }

    /// Makes the fd non-readable.
    pub fn clear(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our own eventfd.
        let _ = unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// The ids of every thread of this process.
fn threads() -> io::Result<Vec<libc::pid_t>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// The CPUs this process may run on, as it started (read once, before any pinning).
fn original_cpus() -> io::Result<libc::cpu_set_t> {
    static ORIGINAL: std::sync::OnceLock<Result<libc::cpu_set_t, i32>> = std::sync::OnceLock::new();
    let r = ORIGINAL.get_or_init(|| {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable cpu set of the size passed.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if r == 0 {
            Ok(set)
        } else {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// Remembers the process's CPUs; call it before the first [`pin_process`].
pub fn remember_cpus() -> io::Result<()> {
    original_cpus().map(|_| ())
}

/// With `pin`, restricts every current thread of the process (and so the threads they start
/// later) to the first CPU it was allowed to use; without, gives every thread all of its
/// original CPUs back. Threads that exit meanwhile are skipped.
pub fn pin_process(pin: bool) -> io::Result<()> {
    let original = original_cpus()?;
    let set = if pin {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let first = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, within the set.
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &original) })
            .unwrap_or(0);
        // SAFETY: `first` is below CPU_SETSIZE, within the set.
        unsafe { libc::CPU_SET(first, &mut one) };
        one
    } else {
        original
    };
    for tid in threads()? {
        // SAFETY: `set` is a valid cpu set of the size passed.
        let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if r != 0 {
            let e = io::Error::last_os_error();
            // ESRCH: the thread exited since we listed it.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Whether this process may raise thread priorities back after lowering them (root, or an
/// `RLIMIT_NICE` that allows nice 0).
pub fn can_restore_priority() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls; `lim` is a valid, writable rlimit.
    unsafe {
        libc::geteuid() == 0
            || (libc::getrlimit(libc::RLIMIT_NICE, &mut lim) == 0 && lim.rlim_cur >= 20)
    }
}

/// Sets the nice value of every thread of the process except the calling one.
pub fn nice_other_threads(nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    let me = unsafe { libc::gettid() };
    for tid in threads()? {
        if tid == me {
            continue;
        }
        // SAFETY: plain syscall on a thread id of this process.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}
