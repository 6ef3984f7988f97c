//! The local backend: this process's worker pool and IO lane (the [`Scheduler`]), whose
//! threads run the runtime's jobs, and the `JoinHandle`s of those threads.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::internal::scheduler::{self, Scheduler};
use crate::internal::sync::lock;
use crate::job::JobRef;
use crate::shared::Shared;

/// A runtime's own threads.
pub(crate) struct Local {
    pub(crate) scheduler: Scheduler<JobRef>,
    /// CPU workers first, then IO threads (the order of the scheduler's slots).
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Starts a named thread (with the builder's stack size).
pub(crate) type Spawner<'a> =
    &'a dyn Fn(String, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>>;

impl Local {
    pub(crate) fn new(scheduler: Scheduler<JobRef>) -> Self {
        Local {
            scheduler,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Starts the worker and IO threads of `shared`'s local backend, each running jobs with
    /// `shared` as their runtime.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        deques: Vec<crossbeam_deque::Worker<JobRef>>,
        prefix: &str,
        spawn: Spawner<'_>,
    ) -> std::io::Result<()> {
        let Some(local) = shared.backend.local() else {
            return Ok(());
        };
        let workers = local.scheduler.workers;
        for (index, deque) in deques.into_iter().enumerate() {
            let s = shared.clone();
            let h = spawn(
                format!("{prefix}-worker-{index}"),
                Box::new(move || {
                    if let Some(l) = s.backend.local() {
                        scheduler::worker_main(&l.scheduler, index, deque, |job| job.run(job, &s));
                    }
                }),
            )?;
            lock(&local.threads).push(h);
        }
        for i in 0..local.scheduler.io_threads {
            let s = shared.clone();
            let index = workers + i;
            let h = spawn(
                format!("{prefix}-io-{i}"),
                Box::new(move || {
                    if let Some(l) = s.backend.local() {
                        scheduler::io_main(&l.scheduler, index, |job| job.run(job, &s));
                    }
                }),
            )?;
            lock(&local.threads).push(h);
        }
        Ok(())
    }

    pub(crate) fn submit(&self, shared: &Arc<Shared>, job: JobRef) {
        self.scheduler.submit(job);
        // A spawn racing with shutdown: either shutdown's sweep (after its flag store and
        // fence) sees this job, or this load sees the flag and the sweep is done here, so a
        // job never sits forever in a queue no thread will ever read again.
        std::sync::atomic::fence(Ordering::SeqCst);
        if shared.life.raised_relaxed() {
            self.abandon_queued(shared);
        }
    }

    /// Resolves every queued job as cancelled, on the calling thread (counted in
    /// `cancelled_at_shutdown`).
    pub(crate) fn abandon_queued(&self, shared: &Arc<Shared>) {
        while let Some(job) = self
            .scheduler
            .steal_any()
            .or_else(|| self.scheduler.steal_io())
        {
            job.abandon(shared);
            shared.life.count_cancelled();
        }
    }

    /// The thread handles, taken once at shutdown.
    pub(crate) fn take_threads(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.threads))
    }
}
