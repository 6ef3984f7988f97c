//! [`Shared`]: the state of one runtime, a composition of the state each concept owns in its
//! own file, plus the runtime's life cycle (running → shutting down).
//!
//! | field     | type                       | file                  |
//! |-----------|----------------------------|-----------------------|
//! | `backend` | where work runs            | `backend/`            |
//! | `main`    | main queue and pump state  | `main_thread.rs`      |
//! | `latest`  | the latest-job map         | `job.rs`              |
//! | `sink`    | the host sink slot         | `sink.rs`             |
//! | `events`  | the event registry         | `event.rs`            |
//! | `sims`    | simulation driver threads  | `sim.rs`              |
//! | `plugins` | plugins loaded here        | `plugin/host/`        |
//! | `stats`   | counters                   | `internal/stats.rs`   |
//! | `life`    | shutdown flag and signal   | here                  |

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::CachePadded;

use crate::backend::Backend;
use crate::event::Events;
use crate::internal::doorbell::Doorbell;
use crate::internal::stats::StatsCore;
use crate::internal::sync::lock;
use crate::job::LatestJobs;
use crate::main_thread::MainQueue;
use crate::sim::SimThreads;
use crate::sink::SinkSlot;

/// State shared by the runtime, its handles, its threads and its jobs.
pub(crate) struct Shared {
    /// Where jobs and main-thread work run: this process's threads, or a plugin's host.
    pub(crate) backend: Backend,
    pub(crate) main: MainQueue,
    pub(crate) life: Lifecycle,
    pub(crate) latest: LatestJobs,
    pub(crate) sink: SinkSlot,
    pub(crate) events: Events,
    pub(crate) sims: SimThreads,
    /// Plugins loaded into this runtime (host side).
    pub(crate) plugins: Mutex<crate::plugin::host::Registry>,
    /// Shared read-only blobs, by name.
    pub(crate) blobs: crate::blob::Blobs,
    /// The worker processes of isolated plugins (host side), started by the first one.
    #[cfg(unix)]
    pub(crate) workers: crate::isolate::Workers,
    /// Padded: the pump's counters must not share a line with what producers read.
    pub(crate) stats: CachePadded<StatsCore>,
    /// The thread that built the runtime (for a plugin: the host's main thread, where plugins
    /// are loaded).
    pub(crate) main_thread: ThreadId,
    /// Raised when `main_thread` exits (by a thread-local guard on it, see `watch_exit`).
    pub(crate) main_thread_exited: Arc<AtomicBool>,
    pub(crate) call_timeout: Duration,
}

impl Shared {
    pub(crate) fn new(backend: Backend, doorbell: Doorbell, call_timeout: Duration) -> Shared {
        let main_thread_exited = Arc::new(AtomicBool::new(false));
        watch_exit(&main_thread_exited);
        Shared {
            backend,
            main: MainQueue::new(doorbell),
            life: Lifecycle::new(),
            latest: LatestJobs::default(),
            sink: SinkSlot::default(),
            events: Events::default(),
            sims: SimThreads::new(),
            plugins: Mutex::new(Default::default()),
            blobs: Default::default(),
            #[cfg(unix)]
            workers: Default::default(),
            stats: CachePadded::new(StatsCore::new()),
            main_thread: std::thread::current().id(),
            main_thread_exited,
            call_timeout,
        }
    }

    /// Whether shutdown has begun (for a plugin: its own, or its host's).
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.life.is_shutting_down() || self.backend.is_closing()
    }

    pub(crate) fn is_main_thread(&self) -> bool {
        self.backend.is_main_thread(self)
    }

    /// Shuts down a plugin's runtime (at unload): later spawns and posts fail, running jobs see
    /// cancellation, blocked stream senders wake, simulation drivers exit, and the worker
    /// processes the plugin started (its task pools, the plugins it isolated) end, with the
    /// thread that supervised them; waits for them until `deadline` and returns how many
    /// simulation drivers were still running then. (A local runtime shuts down through
    /// [`Runtime::shutdown`](crate::Runtime::shutdown).)
    pub(crate) fn shutdown_proxy(self: &Arc<Self>, deadline: std::time::Instant) -> usize {
        self.life.begin();
        // The isolation thread runs this plugin's code: it must be gone before the image is.
        #[cfg(unix)]
        let workers = self.workers.begin_shutdown(self, deadline);
        let running = self.sims.shutdown(deadline);
        self.latest.clear();
        #[cfg(unix)]
        if let Some(w) = workers {
            w.wait(deadline);
        }
        running
    }

    /// Queues a job where this runtime's jobs run.
    pub(crate) fn submit(self: &Arc<Self>, job: crate::job::JobRef) {
        self.backend.submit(self, job);
    }

    /// Queues an internal task (see `job::Task`).
    pub(crate) fn submit_internal<F>(self: &Arc<Self>, lane: crate::job::Lane, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        if !self.is_shutting_down() {
            self.submit(Arc::new(crate::job::Task::new(lane, f)));
        }
    }
}

/// The exit flags of the runtimes built on this thread, raised when the thread exits (its
/// thread-locals are destroyed), so that a runtime whose main thread is gone can tell.
struct ExitFlags(std::cell::RefCell<Vec<Arc<AtomicBool>>>);

impl Drop for ExitFlags {
    fn drop(&mut self) {
        for flag in self.0.borrow().iter() {
            flag.store(true, Ordering::Release);
        }
    }
}

thread_local! {
    static EXIT_FLAGS: ExitFlags = const { ExitFlags(std::cell::RefCell::new(Vec::new())) };
}

/// Raises `flag` when the calling thread exits. (If the thread is exiting already, its
/// thread-locals are gone: the flag stays down, as if the thread lived on.)
fn watch_exit(flag: &Arc<AtomicBool>) {
    let _ = EXIT_FLAGS.try_with(|flags| {
        let mut flags = flags.0.borrow_mut();
        // Flags no runtime holds any more: a thread that builds runtime after runtime keeps a
        // list as long as the runtimes alive, not as long as all it ever built.
        flags.retain(|f| Arc::strong_count(f) > 1);
        flags.push(flag.clone());
    });
}

/// Running → shutting down, and what the shutdown counts.
pub(crate) struct Lifecycle {
    shutting_down: AtomicBool,
    /// Queued jobs resolved as cancelled without running because of shutdown, by whichever
    /// thread took them (the shutting-down thread's sweep, a worker, a racing spawn).
    pub(crate) cancelled_at_shutdown: AtomicUsize,
    /// Dropped at shutdown, which disconnects `shutdown_signal` and wakes blocked senders.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    pub(crate) shutdown_signal: Receiver<()>,
}

impl Lifecycle {
    fn new() -> Self {
        let (shutdown_tx, shutdown_signal) = crossbeam_channel::bounded(0);
        Lifecycle {
            shutting_down: AtomicBool::new(false),
            cancelled_at_shutdown: AtomicUsize::new(0),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            shutdown_signal,
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Raises the flag (later spawns and posts fail) and disconnects `shutdown_signal` (blocked
    /// stream senders wake). The SeqCst fence pairs with the one in the local backend's
    /// `submit`: a spawn racing with shutdown either is seen by shutdown's sweep or sees the
    /// flag and sweeps itself.
    pub(crate) fn begin(&self) {
        self.shutting_down.store(true, Ordering::Release);
        std::sync::atomic::fence(Ordering::SeqCst);
        drop(lock(&self.shutdown_tx).take());
    }

    /// The flag as the local backend's `submit` reads it, after its own SeqCst fence.
    pub(crate) fn raised_relaxed(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn cancelled_count(&self) -> usize {
        self.cancelled_at_shutdown.load(Ordering::Relaxed)
    }

    pub(crate) fn count_cancelled(&self) {
        self.cancelled_at_shutdown.fetch_add(1, Ordering::Relaxed);
    }
}
