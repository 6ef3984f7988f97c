//! A process pool for plugin tasks: N worker processes that each load one plugin and run its
//! named tasks (bytes in, bytes out; [`Plugin::task`](crate::plugin::Plugin::task)), started,
//! progressing, finishing and failing on the host's main thread like a job.
//!
//! - Each task runs exactly once to an answer: its result, its error, cancelled, or — when the
//!   process running it crashed twice (the task is retried once on a fresh worker) — poisoned,
//!   with the crash's cause.
//! - A crashed worker is restarted (the pool refills itself); its other work is unaffected.
//! - Cancel reaches a running task at once: the worker sets the flag its `check` reads.
//! - A pool's workers run tasks only: host events are not sent to their plugin instances.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::supervisor::{Cmd, Reply, Supervisor};
use super::LoadOptions;
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::main_thread::Main;
use crate::plugin::{PluginError, PluginErrorKind};

/// Why a pool task has no result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task returned an error (or panicked, or does not exist): its text.
    Failed(String),
    /// [`Task::cancel`] stopped it (or it never started).
    Cancelled,
    /// Its worker crashed while running it, twice: the cause of the last crash.
    Poisoned(String),
    /// The pool was stopped (or its runtime shut down) first.
    ShutDown,
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Failed(why) => write!(f, "the task failed: {why}"),
            TaskError::Cancelled => write!(f, "the task was cancelled"),
            TaskError::Poisoned(why) => {
                write!(f, "the task crashed its worker twice (poisoned): {why}")
            }
            TaskError::ShutDown => write!(f, "the pool was stopped"),
        }
    }
}

impl std::error::Error for TaskError {}

/// What a task's answer is.
pub type TaskResult = std::result::Result<Vec<u8>, TaskError>;

type OnDone = Box<dyn FnOnce(TaskResult, &mut Main<'_>) + Send>;

/// One task, as the submitter's handle and the isolation thread both see it.
pub(crate) struct TaskShared {
    pub(crate) name: String,
    pub(crate) input: Arc<Vec<u8>>,
    pub(crate) cancelled: AtomicBool,
    /// f32 bits of the last progress.
    pub(crate) progress: AtomicU32,
    pub(crate) attempts: AtomicU32,
    host: Handle,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    result: Option<TaskResult>,
    on_done: Option<OnDone>,
}

impl TaskShared {
    /// Resolves the task, once: later calls do nothing. The continuation runs on the host's
    /// main thread.
    pub(crate) fn finish(&self, result: TaskResult) {
        let mut st = lock(&self.state);
        if st.result.is_some() {
            return;
        }
        st.result = Some(result.clone());
        let on_done = st.on_done.take();
        drop(st);
        // A main-thread item either way: the continuation, or a wake-up for a host that polls
        // `try_result` from its loop (the doorbell rings for it like for a job's answer).
        let _ = match on_done {
            Some(f) => self.host.post_promised(move |main| f(result, main)),
            None => self.host.post_promised(|_| {}),
        };
    }

    pub(crate) fn is_finished(&self) -> bool {
        lock(&self.state).result.is_some()
    }
}

/// A submitted pool task. Dropping it does not cancel it.
#[derive(Clone)]
pub struct Task(pub(crate) Arc<TaskShared>);

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.0.name)
            .field("finished", &self.0.is_finished())
            .finish_non_exhaustive()
    }
}

impl Task {
    /// Runs `f` with the answer on the host's main thread, at a pump (at once at the next pump
    /// if the task has finished already).
    pub fn on_main<F>(&self, f: F)
    where
        F: FnOnce(TaskResult, &mut Main<'_>) + Send + 'static,
    {
        let mut st = lock(&self.0.state);
        match st.result.clone() {
            Some(result) => {
                drop(st);
                let _ = self.0.host.post_promised(move |main| f(result, main));
            }
            None => st.on_done = Some(Box::new(f)),
        }
    }

    /// The answer, if there is one yet.
    pub fn try_result(&self) -> Option<TaskResult> {
        lock(&self.0.state).result.clone()
    }

    /// Cancels the task: a queued one never runs, a running one sees its `check` fail.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
        if let Some(sup) = self.0.host.shared().workers.supervisor() {
            sup.send(Cmd::CancelTask(self.0.clone()));
        }
    }

    /// The last progress it reported, in [0, 1].
    pub fn progress(&self) -> f32 {
        f32::from_bits(self.0.progress.load(Ordering::Acquire))
    }

    /// How many times it was started (2 after a crash and its retry).
    pub fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Acquire)
    }
}

/// A pool of worker processes running one plugin's tasks. Dropping it stops its workers (their
/// unfinished tasks resolve as [`TaskError::ShutDown`]).
pub struct TaskPool {
    pub(crate) id: u64,
    host: Handle,
    sup: Arc<Supervisor>,
    stopped: bool,
}

impl std::fmt::Debug for TaskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPool")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TaskPool {
    /// Queues task `name` with `input` for the next free worker.
    pub fn submit(&self, name: &str, input: Vec<u8>) -> Task {
        let task = Arc::new(TaskShared {
            name: name.to_owned(),
            input: Arc::new(input),
            cancelled: AtomicBool::new(false),
            progress: AtomicU32::new(0),
            attempts: AtomicU32::new(0),
            host: self.host.clone(),
            state: Mutex::new(State::default()),
        });
        if !self.sup.send(Cmd::Submit {
            pool: self.id,
            task: task.clone(),
        }) {
            task.finish(Err(TaskError::ShutDown));
        }
        Task(task)
    }

    /// The pids of its workers running now.
    pub fn pids(&self) -> Vec<u32> {
        match self
            .sup
            .call(Duration::from_secs(10), |reply| Cmd::PoolPids {
                pool: self.id,
                reply,
            }) {
            Reply::Done(bytes) => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Stops the workers within `deadline` (quit, terminate, kill); unfinished tasks resolve as
    /// [`TaskError::ShutDown`].
    pub fn stop(mut self, deadline: Duration) {
        self.stop_inner(deadline);
    }

    fn stop_inner(&mut self, deadline: Duration) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.sup
            .call(deadline + Duration::from_secs(5), |reply| Cmd::PoolStop {
                pool: self.id,
                deadline,
                reply,
            });
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.stop_inner(Duration::from_secs(2));
    }
}

impl Handle {
    /// Starts a pool of `size` worker processes (0: one per core but one) that each load the
    /// plugin at `path` and run its [tasks](crate::plugin::Plugin::task); `options` as for
    /// [`load_plugin_with`](Handle::load_plugin_with) (its isolation is ignored: every worker is
    /// its own process). Returns once every worker has loaded the plugin.
    ///
    /// A plugin may start pools too, from its own handle (in-process or isolated): the
    /// continuations of its tasks run on the host's main thread, like the rest of its
    /// main-thread work, and the pool's workers end when the plugin is unloaded.
    ///
    /// # Errors
    ///
    /// As `load_plugin_with`: the worker program or the plugin cannot be loaded.
    pub fn task_pool(
        &self,
        path: impl AsRef<std::path::Path>,
        size: usize,
        options: &LoadOptions,
    ) -> Result<TaskPool, PluginError> {
        let path = path.as_ref();
        self.check_plugin_call(path)?;
        if !path.is_file() {
            return Err(PluginError::new(
                PluginErrorKind::FileNotFound,
                path,
                "no plugin library at this path",
            ));
        }
        let size = match size {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n,
        };
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let sup = self.shared().workers.get(self).map_err(|e| {
            PluginError::new(
                PluginErrorKind::Worker,
                path,
                format!("cannot start the isolation thread: {e}"),
            )
        })?;
        let mut opts = options.clone();
        // A pool refills itself: its workers are restarted however often they crash.
        opts.restart_limit = u32::MAX;
        let opts = Arc::new(opts);
        let id = self.shared().workers.next_pool_id();
        let reply = sup.call(opts.timeout, |reply| Cmd::PoolStart {
            pool: id,
            path: abs,
            size,
            opts: opts.clone(),
            reply,
        });
        let pool = TaskPool {
            id,
            host: self.clone(),
            sup,
            stopped: false,
        };
        match reply {
            Reply::Done(_) => Ok(pool),
            Reply::Failed { status, reason } => Err(PluginError::new(
                PluginErrorKind::from_status(status),
                path,
                reason,
            )),
            other => Err(PluginError::new(
                PluginErrorKind::Worker,
                path,
                format!("starting the pool failed: {other:?}"),
            )),
        }
    }
}
