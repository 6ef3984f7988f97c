//! [`Handle`]: the cloneable reference to a runtime that every part of the API hangs off.
//!
//! This file holds the handle itself and what it says about its runtime (threads, doorbell,
//! stats). Its other methods sit with the concept they belong to:
//!
//! | methods                                                  | file             |
//! |----------------------------------------------------------|------------------|
//! | `spawn`, `spawn_with`, `spawn_io`, `spawn_latest`, `job`, `group` | `job.rs` |
//! | `pump`, `run_until`, `post`, `post_chunked`, `call_on_main*` | `main_thread.rs` |
//! | `stream`                                                 | `stream.rs`      |
//! | `set_sink`, `emit`                                       | `sink.rs`        |
//! | `post_event`, `subscribe`, `subscribe_channel`, `unsubscribe` | `event.rs`  |
//! | `simulate`                                               | `sim.rs`         |
//! | `parallel_for`, `parallel_for_mut`, `join`, ...          | `parallel.rs`    |
//! | `load_plugin`, `plugin_stats`, ...                       | `plugin/host/`   |
//! | `run_on_farm`, `play_cache`                              | `farm/host.rs`   |

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::internal::stats::Stats;
use crate::shared::Shared;

/// A cheap, cloneable, `Send + Sync` reference to a runtime: spawn jobs, post to the main thread
/// and read stats from anywhere. Main-thread-only calls ([`pump`](Handle::pump)) check the
/// calling thread and return [`Error::WrongThread`](crate::Error::WrongThread) elsewhere.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.shared.backend.workers())
            .field("shut_down", &self.shared.is_shutting_down())
            .finish()
    }
}

impl Handle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the calling thread is the runtime's main thread (the one that built it).
    pub fn is_main_thread(&self) -> bool {
        self.shared.is_main_thread()
    }

    /// Whether the runtime's main thread (the one that built it) has exited. No thread can
    /// pass the main-thread checks of such a runtime any more; the C API then lets any thread
    /// free it (`hl_runtime_free`). Always `false` inside a plugin (the host's thread counts).
    pub fn main_thread_exited(&self) -> bool {
        !self.shared.backend.is_proxy() && self.shared.main_thread_exited.load(Ordering::Acquire)
    }

    /// Whether the calling thread is one of this runtime's CPU workers.
    pub fn is_worker_thread(&self) -> bool {
        self.shared.backend.is_worker_thread()
    }

    /// Whether [`Runtime::shutdown`](crate::Runtime::shutdown) has begun.
    pub fn is_shut_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// Number of CPU workers.
    pub fn workers(&self) -> usize {
        self.shared.backend.workers()
    }

    /// The doorbell fd: watch it for readability (`QSocketNotifier`, `g_unix_fd_add`, `poll`)
    /// and call [`pump`](Handle::pump) when it is readable. `pump` clears it. Do not read from
    /// or close it; it lives as long as the runtime's shared state. Inside a plugin it is -1:
    /// the host owns the doorbell.
    #[cfg(unix)]
    pub fn doorbell_fd(&self) -> std::os::unix::io::RawFd {
        self.shared.backend.doorbell_fd(&self.shared)
    }

    /// Whether this handle belongs to a plugin: its jobs and main-thread work run on the host's
    /// runtime (see [`crate::plugin`]).
    pub fn is_plugin(&self) -> bool {
        self.shared.backend.is_proxy()
    }

    /// Sets (or with `None`, removes) the `request_pump` callback; see
    /// [`Builder::request_pump`](crate::Builder::request_pump).
    pub fn set_request_pump(&self, f: Option<Arc<dyn Fn() + Send + Sync>>) {
        self.shared.main.doorbell.set_request_pump(f);
    }

    /// A snapshot of the runtime's counters.
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let mut s = Stats::default();
        shared.stats.fill(&mut s);
        shared.backend.fill_stats(&mut s);
        s.queued.main = shared.main.backlog(shared, shared.main.is_carrying());
        s.doorbell_rings = shared.main.doorbell.rings();
        s.events_dropped = shared.events.dropped();
        let limits = &shared.main.limits;
        s.main_refused = limits.refused.load(std::sync::atomic::Ordering::Relaxed);
        s.main_backlog_limit = limits.items.load(std::sync::atomic::Ordering::Relaxed);
        s.main_queued_bytes = limits
            .queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        s
    }
}
