//! Helpers shared by the integration tests: a host loop that waits on the doorbell fd.
#![allow(dead_code)]

use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use hostloop::{Handle, Runtime};

/// A bound that only a hang reaches: tests wait on events, never on the clock.
pub const HANG: Duration = Duration::from_secs(20);

/// A runtime with `workers` CPU workers and the given thread-name prefix.
pub fn runtime(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .io_threads(1)
        .build()
        .expect("runtime builds")
}

/// Whether `fd` is readable right now, as `poll(2)` would say (a fresh registration reports the
/// current state even though mio registers edge-triggered).
pub fn is_readable(fd: RawFd) -> bool {
    wait_readable(fd, Duration::ZERO)
}

/// Blocks until `fd` is readable or `timeout` passes; returns whether it became readable.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut poll = mio::Poll::new().unwrap();
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(1),
            mio::Interest::READABLE,
        )
        .unwrap();
    let mut events = mio::Events::with_capacity(1);
    let _ = poll.poll(&mut events, Some(timeout));
    !events.is_empty()
}

/// A host loop: waits on the doorbell, pumps with a 2 ms budget, until `done()` or a hang.
pub fn pump_until(rt: &Handle, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        rt.pump(Duration::from_millis(2)).expect("pump");
        if done() {
            return;
        }
        assert!(start.elapsed() < HANG, "host loop waited {HANG:?}: hang");
        wait_readable(rt.doorbell_fd(), Duration::from_millis(50));
    }
}

/// Spins (yielding) until `cond()` holds; panics after [`HANG`]. For waiting on a state another
/// thread reaches, where no event is available to block on.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG, "waited {HANG:?} for {what}: hang");
        std::thread::yield_now();
    }
}

/// CRC-32C bit by bit, from the definition in the snapshot module's docs: an oracle
/// independent of the crate's table-driven implementation, for tests that check or reseal
/// snapshot checksums.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
