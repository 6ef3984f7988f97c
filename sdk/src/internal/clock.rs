//! The pump's per-item deadline check, at a third of the cost of reading the clock.
//!
//! `pump` checks its deadline after every item, so that no item starts once the budget is spent.
//! Reading `Instant::now` (a vDSO `clock_gettime`) costs about 25 ns here, the largest per-item
//! cost of a drain of small items (7% of its throughput). On x86-64 with an invariant TSC, the
//! time-stamp counter costs about 10 ns: the check reads it against a deadline converted to
//! ticks, and confirms with the real clock before it says the budget is spent, so a TSC that
//! runs fast can never end a pump early. One that runs slow (a wrong calibration, a migrated
//! VM) can delay the end by at most [`CONFIRM_EVERY`] items: every that many items the real
//! clock is read regardless.
//!
//! Calibration costs nothing extra: every pump reads `Instant::now` at its start and end; each
//! reading is paired with a TSC reading, and the ratio is taken over the longest span seen
//! (from the first pump to the latest). Until that span is 1 ms long, and where there is no
//! TSC, every check reads the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Items between two real clock reads, whatever the TSC says.
const CONFIRM_EVERY: u32 = 32;

/// The shortest span of pumps the TSC's rate is taken from.
const MIN_SPAN_NS: u64 = 1_000_000;

/// A reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub(crate) at: Instant,
    tsc: u64,
}

impl Stamp {
    pub(crate) fn now() -> Stamp {
        Stamp {
            tsc: tsc(),
            at: Instant::now(),
        }
    }
}

/// The TSC's rate, learnt from the pumps of one runtime.
#[derive(Debug, Default)]
pub(crate) struct Calibration {
    /// The first pump's start (`OnceLock`: written once).
    first: OnceLock<Stamp>,
    /// Ticks per ns, times 2^20 (0: not known yet).
    ticks_per_ns_q20: AtomicU64,
}

impl Calibration {
    /// Learns from a pump's start or end.
    pub(crate) fn learn(&self, stamp: Stamp) {
        if stamp.tsc == 0 {
            return;
        }
        let first = *self.first.get_or_init(|| stamp);
        let ns = stamp.at.saturating_duration_since(first.at).as_nanos() as u64;
        let ticks = stamp.tsc.wrapping_sub(first.tsc);
        if ns >= MIN_SPAN_NS && ticks > 0 && ticks < (1 << 62) {
            let q20 = ((u128::from(ticks) << 20) / u128::from(ns)) as u64;
            self.ticks_per_ns_q20.store(q20, Ordering::Relaxed);
        }
    }

    /// The deadline `budget_ns` after `start`.
    pub(crate) fn deadline(&self, start: Stamp, deadline: Instant) -> Deadline {
        let q20 = self.ticks_per_ns_q20.load(Ordering::Relaxed);
        let tsc_at = if q20 == 0 || start.tsc == 0 {
            None
        } else {
            let ns = deadline.saturating_duration_since(start.at).as_nanos();
            let ticks = (ns.saturating_mul(u128::from(q20)) >> 20).min(u128::from(u64::MAX / 2));
            Some(start.tsc.wrapping_add(ticks as u64))
        };
        Deadline {
            at: deadline,
            tsc_at,
            unconfirmed: 0,
        }
    }
}

/// A pump's deadline, checked after every item.
#[derive(Debug)]
pub(crate) struct Deadline {
    at: Instant,
    tsc_at: Option<u64>,
    unconfirmed: u32,
}

impl Deadline {
    /// The deadline on the real clock.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// Whether the deadline has passed. Never says yes before the real clock does.
    pub(crate) fn passed(&mut self) -> bool {
        if let Some(tsc_at) = self.tsc_at {
            self.unconfirmed += 1;
            if self.unconfirmed < CONFIRM_EVERY && (tsc().wrapping_sub(tsc_at) as i64) < 0 {
                return false;
            }
            self.unconfirmed = 0;
        }
        Instant::now() >= self.at
    }
}

/// The time-stamp counter, or 0 where there is none we trust.
fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if invariant_tsc() {
            // SAFETY: `rdtsc` has no preconditions on x86-64.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
    }
    0
}

/// Whether the CPU says its TSC runs at a constant rate in every power state (CPUID
/// 0x8000_0007, EDX bit 8).
#[cfg(target_arch = "x86_64")]
#[allow(
    unused_unsafe,
    reason = "`__cpuid` is unsafe before Rust 1.94 (the MSRV is older), safe since"
)]
fn invariant_tsc() -> bool {
    static INVARIANT: OnceLock<bool> = OnceLock::new();
    *INVARIANT.get_or_init(|| {
        // SAFETY: `cpuid` is available on every x86-64 CPU; leaf 0x8000_0000 says which
        // extended leaves exist.
        let max = unsafe { core::arch::x86_64::__cpuid(0x8000_0000) }.eax;
        // SAFETY: leaf 0x8000_0007 exists (checked just before).
        max >= 0x8000_0007
            && unsafe { core::arch::x86_64::__cpuid(0x8000_0007) }.edx & (1 << 8) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deadline_never_passes_before_the_clock() {
        let cal = Calibration::default();
        let start = Stamp::now();
        cal.learn(start);
        // A span long enough to calibrate, waited for on the clock itself.
        while start.at.elapsed() < Duration::from_millis(2) {}
        cal.learn(Stamp::now());
        let s = Stamp::now();
        let mut d = cal.deadline(s, s.at + Duration::from_millis(3));
        let mut checks = 0u64;
        while !d.passed() {
            checks += 1;
        }
        assert!(s.at.elapsed() >= Duration::from_millis(3));
        assert!(checks > 0);
        // Past the deadline it stays passed.
        assert!(d.passed());
    }

    #[test]
    fn without_calibration_it_reads_the_clock() {
        let cal = Calibration::default();
        let s = Stamp::now();
        let mut d = cal.deadline(s, s.at);
        assert!(d.passed());
    }
}
