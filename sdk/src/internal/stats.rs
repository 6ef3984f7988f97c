//! Counters and pump-time percentiles, readable at any time from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::internal::sync::lock;

/// How many recent pumps the pump-time percentiles cover.
pub const PUMP_WINDOW: usize = 1024;

pub(crate) enum Outcome {
    Finished,
    Failed,
    Cancelled,
    Panicked,
}

#[derive(Debug)]
pub(crate) struct StatsCore {
    spawned: CachePadded<AtomicU64>,
    outcomes: [CachePadded<AtomicU64>; 4],
    pumps: AtomicU64,
    overruns: AtomicU64,
    main_items: AtomicU64,
    main_panics: AtomicU64,
    sink_messages: AtomicU64,
    sink_dropped: AtomicU64,
    /// Durations (ns) of the last `PUMP_WINDOW` pumps, a ring indexed by `pumps`.
    pump_ns: Mutex<Vec<u64>>,
}

impl StatsCore {
    pub(crate) fn new() -> Self {
        StatsCore {
            spawned: Default::default(),
            outcomes: Default::default(),
            pumps: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            main_items: AtomicU64::new(0),
            main_panics: AtomicU64::new(0),
            sink_messages: AtomicU64::new(0),
            sink_dropped: AtomicU64::new(0),
            pump_ns: Mutex::new(Vec::with_capacity(PUMP_WINDOW)),
        }
    }

    /// Counts a spawn and returns the new job's id (ids start at 1).
    pub(crate) fn next_job_id(&self) -> u64 {
        self.spawned.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn record_outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_main_panic(&self) {
        self.main_panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_sink(&self, delivered: bool) {
        let c = if delivered {
            &self.sink_messages
        } else {
            &self.sink_dropped
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_pump(&self, elapsed: Duration, overrun: Duration, ran: u64, panics: u64) {
        let n = self.pumps.fetch_add(1, Ordering::Relaxed);
        if !overrun.is_zero() {
            self.overruns.fetch_add(1, Ordering::Relaxed);
        }
        self.main_items.fetch_add(ran, Ordering::Relaxed);
        self.main_panics.fetch_add(panics, Ordering::Relaxed);
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        let mut ring = lock(&self.pump_ns);
        if ring.len() < PUMP_WINDOW {
            ring.push(ns);
        } else {
            ring[n as usize % PUMP_WINDOW] = ns;
        }
    }

    pub(crate) fn fill(&self, s: &mut Stats) {
        let o = |i: usize| self.outcomes[i].load(Ordering::Relaxed);
        s.jobs_spawned = self.spawned.load(Ordering::Relaxed);
        s.jobs_finished = o(Outcome::Finished as usize);
        s.jobs_failed = o(Outcome::Failed as usize);
        s.jobs_cancelled = o(Outcome::Cancelled as usize);
        s.jobs_panicked = o(Outcome::Panicked as usize);
        s.pumps = self.pumps.load(Ordering::Relaxed);
        s.budget_overruns = self.overruns.load(Ordering::Relaxed);
        s.main_items_run = self.main_items.load(Ordering::Relaxed);
        s.main_items_panicked = self.main_panics.load(Ordering::Relaxed);
        s.sink_messages = self.sink_messages.load(Ordering::Relaxed);
        s.sink_dropped = self.sink_dropped.load(Ordering::Relaxed);
        let mut window = lock(&self.pump_ns).clone();
        window.sort_unstable();
        let pct = |p: f64| -> Duration {
            if window.is_empty() {
                return Duration::ZERO;
            }
            let i = ((window.len() - 1) as f64 * p).round() as usize;
            Duration::from_nanos(window[i])
        };
        s.pump_p50 = pct(0.50);
        s.pump_p99 = pct(0.99);
    }
}

/// Queue depths at the moment [`Handle::stats`](crate::Handle::stats) was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDepths {
    /// CPU jobs queued per lane.
    pub high: usize,
    /// Includes jobs in the workers' own deques.
    pub normal: usize,
    pub low: usize,
    pub background: usize,
    /// Jobs queued on the IO lane.
    pub io: usize,
    /// Main-thread items waiting for a pump (a chunked item carried over included), each
    /// undelivered host event counted as one.
    pub main: usize,
}

/// One worker thread's utilisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Time the worker spent awake (running or looking for jobs), as opposed to parked.
    pub busy: Duration,
}

/// A snapshot of the runtime's counters. Counters only grow; depths are instantaneous.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    pub jobs_spawned: u64,
    /// Jobs that returned `Ok`.
    pub jobs_finished: u64,
    /// Jobs that returned an error of their own.
    pub jobs_failed: u64,
    pub jobs_cancelled: u64,
    pub jobs_panicked: u64,
    pub queued: QueueDepths,
    pub pumps: u64,
    /// Median pump duration over the last [`PUMP_WINDOW`] pumps.
    pub pump_p50: Duration,
    /// 99th percentile pump duration over the last [`PUMP_WINDOW`] pumps.
    pub pump_p99: Duration,
    /// Pumps that ran past their budget.
    pub budget_overruns: u64,
    pub main_items_run: u64,
    /// Main-thread items (continuations, posted closures, stream handlers) that panicked.
    pub main_items_panicked: u64,
    /// Messages delivered to the host sink.
    pub sink_messages: u64,
    /// Messages emitted while no sink was registered (dropped).
    pub sink_dropped: u64,
    /// Host events a full background subscriber channel could not take.
    pub events_dropped: u64,
    /// Calls refused with [`Error::Backlog`](crate::Error::Backlog) because the host had not
    /// pumped and the main-thread backlog was at its limit.
    pub main_refused: u64,
    /// The backlog limit, in items ([`Builder::main_backlog_limit`](crate::Builder::main_backlog_limit)).
    pub main_backlog_limit: usize,
    /// Bytes of payloads emitted from other threads waiting for a pump.
    pub main_queued_bytes: usize,
    /// Times the doorbell was rung: by the first post after a pump parked the queue, and by a
    /// pump that left work behind.
    pub doorbell_rings: u64,
    /// CPU workers currently parked.
    pub sleeping_workers: usize,
    /// CPU workers, in index order.
    pub workers: Vec<WorkerStats>,
    /// IO-lane threads, in index order.
    pub io_threads: Vec<WorkerStats>,
}
