//! Where a runtime's work runs, chosen once when the runtime is made, and matched only here
//! (as mio keeps its platform choice in `sys/` and crossbeam-channel one file per flavor in
//! `flavors/`):
//!
//! - [`local`]: this process's own worker pool, IO lane and main-thread queue, drained by the
//!   host's [`pump`](crate::Handle::pump) — a runtime built with [`crate::Builder`];
//! - [`proxy`]: a plugin's runtime, which has no threads of its own: jobs, main-thread work,
//!   sink messages and events go to the host's runtime through `hl_plugin_services_t`.
//!
//! A backend that runs a tool in a worker process is a third variant here. Everything above
//! this module (jobs, the main thread, sinks, events, simulations) is written once against
//! these operations and never asks which backend it has.

pub(crate) mod local;
pub(crate) mod proxy;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::internal::stats::{QueueDepths, Stats, WorkerStats};
use crate::job::JobRef;
use crate::main_thread::MainItem;
use crate::shared::Shared;
use crate::sink::Message;

pub(crate) use local::Local;
pub(crate) use proxy::Proxy;

/// One runtime's backend.
#[expect(
    clippy::large_enum_variant,
    reason = "one per runtime, inside its Arc; boxing `Local` would add a pointer chase to every spawn"
)]
pub(crate) enum Backend {
    Local(Local),
    Proxy(Proxy),
}

impl Backend {
    /// Queues `job` to run on a worker (or the IO lane).
    pub(crate) fn submit(&self, shared: &Arc<Shared>, job: JobRef) {
        match self {
            Backend::Local(l) => l.submit(shared, job),
            Backend::Proxy(p) => p.spawn(shared, job),
        }
    }

    /// Queues main-thread work for the next pump (the caller checked for shutdown).
    pub(crate) fn post_main(&self, shared: &Arc<Shared>, item: MainItem) -> Result<()> {
        match self {
            Backend::Local(_) => shared.main.push(item),
            Backend::Proxy(p) => p.post_main(shared, item),
        }
    }

    /// Main thread: hands `msg` to the host sink. Returns whether a sink took it.
    pub(crate) fn emit(&self, shared: &Shared, msg: &Message<'_>) -> Result<bool> {
        match self {
            Backend::Local(_) => shared.sink.deliver(&shared.stats, msg),
            Backend::Proxy(p) => p.emit(msg),
        }
    }

    /// Posts a host event (the caller checked for shutdown).
    /// `limited`: refused at the backlog limit (see `main_thread::Limits`).
    pub(crate) fn post_event(
        &self,
        shared: &Arc<Shared>,
        event: Event,
        limited: bool,
    ) -> Result<()> {
        match self {
            Backend::Local(_) => crate::event::post_here(shared, event, limited),
            // The host's hub fans it out, to this plugin's subscribers too.
            Backend::Proxy(p) => p.post_event(&event),
        }
    }

    /// A new fd of the host's blob `name` and its length (a plugin's runtime asks its host).
    #[cfg(unix)]
    pub(crate) fn host_blob(&self, name: &str) -> Option<(std::os::fd::OwnedFd, u64)> {
        match self {
            Backend::Local(_) => None,
            Backend::Proxy(p) => p.blob(name),
        }
    }

    /// Main-thread items this runtime queued that have not run yet, as the backlog limit
    /// counts them for a post (a plugin's: those it handed its host). A host event posted
    /// counts the events waiting too.
    pub(crate) fn main_backlog(&self, shared: &Shared) -> usize {
        match self {
            // Without the events (counted where an event is posted): no lock on a post.
            Backend::Local(_) => shared.main.list_len(),
            Backend::Proxy(p) => p.outstanding(),
        }
    }

    /// The host's closing flag (a plugin's host may shut down before the plugin does).
    pub(crate) fn is_closing(&self) -> bool {
        match self {
            Backend::Local(_) => false,
            Backend::Proxy(p) => p.is_closing(),
        }
    }

    pub(crate) fn is_main_thread(&self, shared: &Shared) -> bool {
        match self {
            Backend::Local(_) => std::thread::current().id() == shared.main_thread,
            Backend::Proxy(p) => p.is_main_thread(),
        }
    }

    pub(crate) fn is_worker_thread(&self) -> bool {
        match self {
            Backend::Local(l) => l.scheduler.is_own_worker(),
            Backend::Proxy(p) => p.is_worker_thread(),
        }
    }

    pub(crate) fn workers(&self) -> usize {
        match self {
            Backend::Local(l) => l.scheduler.workers,
            Backend::Proxy(p) => p.workers(),
        }
    }

    /// Whether the host pumps this runtime itself; a plugin's runtime is pumped by its host.
    pub(crate) fn check_can_pump(&self) -> Result<()> {
        match self {
            Backend::Local(_) => Ok(()),
            Backend::Proxy(_) => Err(Error::InvalidArgument(
                "a plugin's runtime is pumped by its host",
            )),
        }
    }

    /// Whether this runtime has a sink of its own (a plugin's messages go to its host's).
    pub(crate) fn owns_sink(&self) -> bool {
        matches!(self, Backend::Local(_))
    }

    /// The fd the host watches, or -1 for a plugin (its host owns the doorbell).
    #[cfg(unix)]
    pub(crate) fn doorbell_fd(&self, shared: &Shared) -> std::os::unix::io::RawFd {
        match self {
            Backend::Local(_) => shared.main.doorbell.fd(),
            Backend::Proxy(_) => -1,
        }
    }

    /// The local backend, if this is one (the runtime's own threads and shutdown use it).
    pub(crate) fn local(&self) -> Option<&Local> {
        match self {
            Backend::Local(l) => Some(l),
            Backend::Proxy(_) => None,
        }
    }

    pub(crate) fn is_proxy(&self) -> bool {
        matches!(self, Backend::Proxy(_))
    }

    /// Whether simulation driver threads are kept to be joined when this runtime shuts down
    /// (a plugin must not be unmapped while a driver still runs its code).
    pub(crate) fn joins_sim_threads(&self) -> bool {
        matches!(self, Backend::Proxy(_))
    }

    /// Fills the queue depths and per-thread stats this backend knows of (a plugin's runtime
    /// has no threads or queues of its own: the host's stats show its work).
    pub(crate) fn fill_stats(&self, s: &mut Stats) {
        match self {
            Backend::Local(l) => {
                let sched = &l.scheduler;
                let (d, io) = sched.depths();
                s.queued = QueueDepths {
                    high: d[0],
                    normal: d[1],
                    low: d[2],
                    background: d[3],
                    io,
                    main: 0,
                };
                s.sleeping_workers = sched.sleep.sleeping();
                let busy = |i: usize| WorkerStats {
                    busy: sched.slots[i].busy(sched.epoch),
                };
                let w = sched.workers;
                s.workers = (0..w).map(busy).collect();
                s.io_threads = (w..w + sched.io_threads).map(busy).collect();
            }
            Backend::Proxy(_) => {}
        }
    }
}
