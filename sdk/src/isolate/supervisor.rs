//! The host's side of its worker processes: one thread per runtime (`hostloop-isolation`), never
//! the host's main thread, owning every worker's socket, pidfd and stderr in one `mio` poll.
//!
//! # What it guarantees
//!
//! - **No wait without a liveness check.** Every request the main thread makes waits on a reply
//!   channel that this thread resolves: with the worker's answer, or with the reason the worker
//!   was lost (it died, was killed, stopped answering, sent a damaged frame) — never never.
//! - **No signal, no zombie, no leak.** Writes use `send(MSG_NOSIGNAL)` from non-blocking
//!   sockets, so a dead worker is an `EPIPE` here, not a `SIGPIPE` in the host. An exit is seen
//!   on the worker's pidfd and reaped at once (`waitid` through [`Child::try_wait`]). Each worker
//!   costs the host three fds — socket, pidfd, stderr pipe — closed when it is reaped. The child
//!   end of the socket is made inheritable only inside the child (between `fork` and `exec`),
//!   so no other child the host starts can hold it open and hide a worker's death.
//! - **Faults are events.** A worker lost for any reason is reported to the host's sink on its
//!   main thread (`hostloop/plugin/crashed`, with the signal or exit status and the last lines
//!   the worker wrote to stderr), and restarted with its plugins' last saved states, with a
//!   backoff, up to a limit — after which it stays down and says why (`hostloop/plugin/down`).

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::pool::{TaskError, TaskResult, TaskShared};
use super::shm::Mapped;
use super::wire::{Inbox, Msg, Outbox, WireBytes, WirePayload};
use super::{LoadOptions, Remote};
use crate::abi::elem_type;
use crate::event::Event;
use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::shared::Shared;
use crate::sink::{ArrayView, Payload};

const WAKER: Token = Token(1);
/// How much of a worker's stderr is kept, and how much of it is its last words.
const TAIL: usize = 64 << 10;
const LAST_WORDS: usize = 4096;
/// The longest wait before a restart, however many came before (unless the first is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After this long up, a worker's restart count starts again from zero.
const HEALTHY: Duration = Duration::from_secs(60);

/// What a request to a worker came to.
#[derive(Debug)]
pub(crate) enum Reply {
    Loaded {
        name: String,
        version: String,
        flags: u32,
    },
    Done(Vec<u8>),
    Failed {
        status: u32,
        reason: String,
    },
    /// The worker was lost (or never started) before it answered.
    Lost(String),
}

pub(crate) enum Cmd {
    /// Loads `plugin` into a new worker, or into the running worker of `group`.
    Load {
        opts: Arc<LoadOptions>,
        plugin: Arc<Remote>,
        reply: Sender<Reply>,
    },
    /// Sends a request made by `make(req)` to the worker of `plugin`.
    Request {
        plugin: Arc<Remote>,
        make: Box<dyn FnOnce(u64) -> Msg + Send>,
        reply: Sender<Reply>,
    },
    /// Unloads `plugin` from its worker, ending the worker if it hosts nothing else.
    Unload {
        plugin: Arc<Remote>,
        deadline: Duration,
        reply: Sender<Reply>,
    },
    Ack {
        proc: u64,
        seq: u64,
    },
    Event(Event),
    /// A new blob of the host, for every running worker.
    Blob(crate::blob::Blob),
    /// Starts pool `pool`: `size` workers loading `path`; answers once all did (or one failed).
    PoolStart {
        pool: u64,
        path: std::path::PathBuf,
        size: usize,
        opts: Arc<LoadOptions>,
        reply: Sender<Reply>,
    },
    /// Queues a task of pool `pool`.
    Submit {
        pool: u64,
        task: Arc<TaskShared>,
    },
    CancelTask(Arc<TaskShared>),
    /// The pids of pool `pool`'s running workers, as u32s.
    PoolPids {
        pool: u64,
        reply: Sender<Reply>,
    },
    /// Stops pool `pool`'s workers; its tasks resolve as shut down.
    PoolStop {
        pool: u64,
        deadline: Duration,
        reply: Sender<Reply>,
    },
    Shutdown {
        deadline: Duration,
        reply: Sender<()>,
    },
}

/// A runtime's worker processes: the command channel to their thread.
pub(crate) struct Supervisor {
    cmds: Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Supervisor {
    pub(crate) fn start(shared: &Arc<Shared>) -> io::Result<Supervisor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (cmds, rx) = crossbeam_channel::unbounded();
        let state = Thread {
            poll,
            rx,
            cmds: cmds.clone(),
            waker: waker.clone(),
            host: Arc::downgrade(shared),
            procs: HashMap::new(),
            pools: HashMap::new(),
            next_proc: 1,
            next_req: 1,
            next_pool_slot: u32::MAX / 2,
            shutdown: None,
        };
        let thread = std::thread::Builder::new()
            .name("hostloop-isolation".to_owned())
            .spawn(move || state.run())?;
        Ok(Supervisor {
            cmds,
            waker,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Sends `cmd` to the thread. `false` once it has stopped.
    pub(crate) fn send(&self, cmd: Cmd) -> bool {
        self.cmds.send(cmd).is_ok() && self.waker.wake().is_ok()
    }

    /// Sends a command that answers on a reply channel and waits for the answer, at most
    /// `timeout`.
    pub(crate) fn call(&self, timeout: Duration, cmd: impl FnOnce(Sender<Reply>) -> Cmd) -> Reply {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.send(cmd(tx)) {
            return Reply::Lost("the runtime's isolation thread has stopped".to_owned());
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Reply::Lost(format!("the worker did not answer within {timeout:?}"))
            }
            Err(_) => Reply::Lost("the runtime's isolation thread has stopped".to_owned()),
        }
    }

    /// Asks the thread to end every worker within `deadline` (quit, terminate at 3/4 of it,
    /// kill at its end). The receiver hears when all were reaped.
    pub(crate) fn begin_shutdown(&self, deadline: Duration) -> Option<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Cmd::Shutdown {
            deadline,
            reply: tx,
        })
        .then_some(rx)
    }

    /// Waits (until `until`) for the end `begin_shutdown` asked for, then joins the thread.
    pub(crate) fn finish_shutdown(&self, done: Option<Receiver<()>>, until: Instant) {
        let ended = done.is_some_and(|rx| {
            rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                .is_ok()
        });
        if let Some(t) = lock(&self.thread).take() {
            // It answers just before it returns; otherwise it is left to finish (detached).
            if ended || t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Where a worker is in its life.
enum Phase {
    /// Running (or starting: `hello` says whether it spoke yet).
    Up { since: Instant, hello: bool },
    /// Lost: waiting for its exit to reap it. `cause` says why, when the exit status will not.
    Exiting {
        cause: Option<String>,
        kill_at: Instant,
    },
    /// Asked to quit; terminated at `term_at`, killed at `kill_at`.
    Stopping {
        term_at: Instant,
        kill_at: Instant,
        termed: bool,
        killed: bool,
        notify: Vec<Sender<Reply>>,
    },
    /// Reaped after a crash; starts again at `at`.
    Waiting { at: Instant },
    /// Reaped for good (the restart limit, or a restart that failed).
    Down,
}

/// What `message` leaves for its caller to do.
enum After {
    Nothing,
    Stop(Duration, Option<Sender<Reply>>),
    /// A pool worker answered its first load (with the failure, if it failed).
    PoolLoaded(Option<(u32, String)>),
    /// A pool worker is ready again (restarted): hand it work.
    Dispatch(u64),
}

enum Pending {
    /// A main-thread caller waits for the answer.
    Caller(Sender<Reply>),
    /// Restarting: the plugin in this slot is being loaded (then restored).
    RestartLoad(u32),
    /// Restarting: the plugin in this slot is being restored.
    RestartRestore(u32),
    /// The periodic save of this slot.
    Save(u32),
    /// A pool worker loading its plugin (the first time).
    PoolLoad,
    /// An unload; the worker ends if it hosts nothing after it.
    Unload {
        slot: u32,
        deadline: Instant,
        reply: Sender<Reply>,
    },
}

struct Live {
    child: Child,
    sock: UnixStream,
    pidfd: Option<OwnedFd>,
    stderr: Option<ChildStderr>,
}

struct Proc {
    opts: Arc<LoadOptions>,
    live: Option<Live>,
    pid: u32,
    phase: Phase,
    inbox: Inbox,
    outbox: Outbox,
    pending: HashMap<u64, Pending>,
    batch: Vec<(String, Body)>,
    /// Its shared-memory regions, mapped read-only.
    mapped: Mapped,
    plugins: Vec<Arc<Remote>>,
    last_heard: Instant,
    next_ping: Instant,
    next_save: Instant,
    /// Checkpoints asked for and not answered yet: the next round is asked for only after all
    /// of them, `save_interval` after the last answer (a slow save never piles up).
    saving: usize,
    ping_seq: u64,
    restarts: u32,
    tail: Vec<u8>,
    /// The task pool this worker belongs to, if it is a pool worker.
    pool: Option<u64>,
    /// A pool worker whose plugin is loaded (after each start).
    ready: bool,
    /// The pool task it runs: its request id and the task.
    running: Option<(u64, Arc<TaskShared>)>,
}

/// A task pool: its workers and the tasks waiting for one.
struct PoolState {
    procs: Vec<u64>,
    queue: std::collections::VecDeque<Arc<TaskShared>>,
    /// Until every worker loaded the plugin: who waits, and how many answered.
    starting: Option<(Sender<Reply>, usize)>,
}

struct Thread {
    poll: Poll,
    rx: Receiver<Cmd>,
    cmds: Sender<Cmd>,
    waker: Arc<Waker>,
    host: Weak<Shared>,
    procs: HashMap<u64, Proc>,
    pools: HashMap<u64, PoolState>,
    next_proc: u64,
    next_req: u64,
    /// Slots of pool workers' plugins (apart from the runtime's own slot numbers).
    next_pool_slot: u32,
    shutdown: Option<Sender<()>>,
}

/// A worker not started yet.
fn new_proc(opts: Arc<LoadOptions>, pool: Option<u64>) -> Proc {
    let now = Instant::now();
    Proc {
        opts,
        live: None,
        pid: 0,
        phase: Phase::Down,
        inbox: Inbox::default(),
        outbox: Outbox::default(),
        pending: HashMap::new(),
        batch: Vec::new(),
        mapped: Mapped::default(),
        plugins: Vec::new(),
        last_heard: now,
        next_ping: now,
        next_save: now,
        saving: 0,
        ping_seq: 0,
        restarts: 0,
        tail: Vec::new(),
        pool,
        ready: false,
        running: None,
    }
}

impl Proc {
    /// One checkpoint of the round answered.
    fn saved_one(&mut self) {
        self.saving = self.saving.saturating_sub(1);
        if self.saving == 0 {
            self.next_save = Instant::now() + self.opts.save_interval;
        }
    }
}

fn token(proc: u64, which: usize) -> Token {
    Token(proc as usize * 4 + which)
}

const SOCK: usize = 0;
const PIDFD: usize = 1;
const STDERR: usize = 2;

impl Thread {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = self.next_timer().map(|t| {
                t.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500))
            });
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            let mut ready: Vec<(u64, usize)> = Vec::new();
            for ev in events.iter() {
                if ev.token() != WAKER {
                    ready.push(((ev.token().0 / 4) as u64, ev.token().0 % 4));
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                self.command(cmd);
            }
            for (id, which) in ready {
                match which {
                    SOCK => self.readable(id),
                    PIDFD => self.exited(id),
                    STDERR => self.read_stderr(id),
                    _ => {}
                }
            }
            self.timers();
            self.flush_all();
            if self.shutdown.is_some() && self.procs.is_empty() {
                if let Some(tx) = self.shutdown.take() {
                    let _ = tx.send(());
                }
                break;
            }
        }
    }

    fn host(&self) -> Option<Handle> {
        self.host.upgrade().map(Handle::from_shared)
    }

    fn next_timer(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for p in self.procs.values() {
            match &p.phase {
                Phase::Up { .. } => {
                    at(p.next_ping);
                    if p.saving == 0 {
                        at(p.next_save);
                    }
                    at(p.last_heard + p.opts.heartbeat);
                }
                Phase::Exiting { kill_at, .. } => at(*kill_at),
                Phase::Stopping {
                    term_at, kill_at, ..
                } => {
                    at(*term_at);
                    at(*kill_at);
                }
                Phase::Waiting { at: t } => at(*t),
                Phase::Down => {}
            }
            if p.live.as_ref().is_some_and(|l| l.pidfd.is_none()) {
                // No pidfd (an old kernel): look for the exit every 50 ms.
                at(Instant::now() + Duration::from_millis(50));
            }
        }
        next
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Load {
                opts,
                plugin,
                reply,
            } => self.load(opts, plugin, reply),
            Cmd::Request {
                plugin,
                make,
                reply,
            } => {
                let Some(id) = self.proc_of(&plugin) else {
                    let _ = reply.send(Reply::Lost(plugin.gone_reason()));
                    return;
                };
                let req = self.req();
                let p = self.procs.get_mut(&id).expect("proc_of found it");
                if !matches!(p.phase, Phase::Up { .. }) {
                    let _ = reply.send(Reply::Lost(plugin.gone_reason()));
                    return;
                }
                p.outbox.push(&make(req));
                p.pending.insert(req, Pending::Caller(reply));
            }
            Cmd::Unload {
                plugin,
                deadline,
                reply,
            } => self.unload(plugin, deadline, reply),
            Cmd::Ack { proc, seq } => {
                if let Some(p) = self.procs.get_mut(&proc) {
                    if matches!(p.phase, Phase::Up { .. }) {
                        p.outbox.push(&Msg::Ack { seq });
                    }
                }
            }
            Cmd::PoolStart {
                pool,
                path,
                size,
                opts,
                reply,
            } => self.pool_start(pool, path, size, opts, reply),
            Cmd::Submit { pool, task } => {
                if task.cancelled.load(std::sync::atomic::Ordering::Acquire) {
                    task.finish(Err(TaskError::Cancelled));
                } else if let Some(p) = self.pools.get_mut(&pool) {
                    p.queue.push_back(task);
                    self.dispatch(pool);
                } else {
                    task.finish(Err(TaskError::ShutDown));
                }
            }
            Cmd::CancelTask(task) => self.cancel_task(&task),
            Cmd::PoolPids { pool, reply } => {
                let pids: Vec<u8> = self
                    .pools
                    .get(&pool)
                    .map(|p| p.procs.clone())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|id| self.procs.get(id))
                    .filter(|p| p.live.is_some())
                    .flat_map(|p| p.pid.to_le_bytes())
                    .collect();
                let _ = reply.send(Reply::Done(pids));
            }
            Cmd::PoolStop {
                pool,
                deadline,
                reply,
            } => {
                self.pool_stop(pool, deadline);
                let _ = reply.send(Reply::Done(Vec::new()));
            }
            Cmd::Blob(blob) => {
                for p in self.procs.values_mut() {
                    if matches!(p.phase, Phase::Up { .. }) {
                        send_blob(p, &blob);
                    }
                }
            }
            Cmd::Event(e) => {
                let frame = Msg::Event(e);
                // A pool's workers run tasks only: host events are for loaded plugins (a
                // pool's plugin reacting to the event that made the pool would make another).
                for p in self.procs.values_mut() {
                    if p.pool.is_none() && matches!(p.phase, Phase::Up { .. }) {
                        p.outbox.push(&frame);
                    }
                }
            }
            Cmd::Shutdown { deadline, reply } => {
                self.shutdown = Some(reply);
                let pools: Vec<u64> = self.pools.keys().copied().collect();
                for pool in pools {
                    self.pool_stop(pool, deadline);
                }
                let ids: Vec<u64> = self.procs.keys().copied().collect();
                for id in ids {
                    self.stop(id, deadline, None);
                }
            }
        }
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn proc_of(&self, plugin: &Arc<Remote>) -> Option<u64> {
        self.procs
            .iter()
            .find(|(_, p)| p.plugins.iter().any(|q| Arc::ptr_eq(q, plugin)))
            .map(|(id, _)| *id)
    }

    fn load(&mut self, opts: Arc<LoadOptions>, plugin: Arc<Remote>, reply: Sender<Reply>) {
        if self.shutdown.is_some() {
            let _ = reply.send(Reply::Lost("the runtime is shutting down".to_owned()));
            return;
        }
        let group = opts.group();
        let existing = group.and_then(|g| {
            self.procs
                .iter()
                .find(|(_, p)| p.opts.group() == Some(g) && matches!(p.phase, Phase::Up { .. }))
                .map(|(id, _)| *id)
        });
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_proc;
                self.next_proc += 1;
                let mut p = new_proc(opts.clone(), None);
                if let Err(e) = self.spawn(id, &mut p) {
                    let _ = reply.send(Reply::Lost(format!(
                        "cannot start the worker {}: {e}",
                        opts.program().display()
                    )));
                    return;
                }
                self.procs.insert(id, p);
                id
            }
        };
        let req = self.req();
        let p = self.procs.get_mut(&id).expect("inserted above");
        let path = lock(&plugin.path).to_string_lossy().into_owned();
        p.outbox.push(&Msg::Load {
            req,
            slot: plugin.slot,
            path,
        });
        p.pending.insert(req, Pending::Caller(reply));
        lock(&plugin.status).pid = Some(p.pid);
        p.plugins.push(plugin);
    }

    fn unload(&mut self, plugin: Arc<Remote>, deadline: Duration, reply: Sender<Reply>) {
        let Some(id) = self.proc_of(&plugin) else {
            let _ = reply.send(Reply::Done(Vec::new()));
            return;
        };
        let req = self.req();
        let p = self.procs.get_mut(&id).expect("proc_of found it");
        if matches!(p.phase, Phase::Up { .. }) {
            p.outbox.push(&Msg::Unload {
                req,
                slot: plugin.slot,
                deadline_ms: deadline.as_millis() as u64,
            });
            p.pending.insert(
                req,
                Pending::Unload {
                    slot: plugin.slot,
                    deadline: Instant::now() + deadline,
                    reply,
                },
            );
            return;
        }
        // Not running (restarting, down, exiting): nothing of the plugin runs anywhere.
        p.plugins.retain(|q| !Arc::ptr_eq(q, &plugin));
        if p.plugins.is_empty() {
            self.stop(id, deadline, Some(reply));
        } else {
            let _ = reply.send(Reply::Done(Vec::new()));
        }
    }

    fn pool_start(
        &mut self,
        pool: u64,
        path: std::path::PathBuf,
        size: usize,
        opts: Arc<LoadOptions>,
        reply: Sender<Reply>,
    ) {
        if self.shutdown.is_some() {
            let _ = reply.send(Reply::Lost("the runtime is shutting down".to_owned()));
            return;
        }
        let mut ids = Vec::new();
        for _ in 0..size {
            let id = self.next_proc;
            self.next_proc += 1;
            let mut p = new_proc(opts.clone(), Some(pool));
            self.next_pool_slot = self.next_pool_slot.wrapping_add(1);
            p.plugins.push(Arc::new(Remote {
                slot: self.next_pool_slot,
                name: Mutex::new(String::new()),
                path: Mutex::new(path.clone()),
                state: Mutex::new(None),
                status: Mutex::new(Default::default()),
            }));
            if let Err(e) = self.spawn(id, &mut p) {
                let _ = reply.send(Reply::Lost(format!(
                    "cannot start the worker {}: {e}",
                    opts.program().display()
                )));
                for id in ids {
                    self.stop(id, Duration::from_secs(1), None);
                }
                return;
            }
            let req = self.req();
            p.outbox.push(&Msg::Load {
                req,
                slot: p.plugins[0].slot,
                path: path.to_string_lossy().into_owned(),
            });
            p.pending.insert(req, Pending::PoolLoad);
            self.procs.insert(id, p);
            ids.push(id);
        }
        self.pools.insert(
            pool,
            PoolState {
                procs: ids,
                queue: Default::default(),
                starting: Some((reply, 0)),
            },
        );
    }

    /// A pool worker answered its first load.
    fn pool_loaded(&mut self, id: u64, failure: Option<(u32, String)>) {
        let Some(pool) = self.procs.get(&id).and_then(|p| p.pool) else {
            return;
        };
        let Some(state) = self.pools.get_mut(&pool) else {
            return;
        };
        match failure {
            None => {
                if let Some((_, answered)) = &mut state.starting {
                    *answered += 1;
                    if *answered == state.procs.len() {
                        if let Some((tx, _)) = state.starting.take() {
                            let _ = tx.send(Reply::Done(Vec::new()));
                        }
                    }
                }
                self.dispatch(pool);
            }
            Some((status, reason)) => {
                if let Some((tx, _)) = state.starting.take() {
                    let _ = tx.send(Reply::Failed { status, reason });
                }
                self.pool_stop(pool, Duration::from_secs(1));
            }
        }
    }

    fn pool_stop(&mut self, pool: u64, deadline: Duration) {
        let Some(state) = self.pools.remove(&pool) else {
            return;
        };
        for task in state.queue {
            task.finish(Err(TaskError::ShutDown));
        }
        if let Some((tx, _)) = state.starting {
            let _ = tx.send(Reply::Lost("the pool was stopped".to_owned()));
        }
        for id in state.procs {
            if let Some(p) = self.procs.get_mut(&id) {
                p.pool = None; // no restart, no dispatch
                if let Some((_, task)) = p.running.take() {
                    task.finish(Err(TaskError::ShutDown));
                }
            }
            self.stop(id, deadline, None);
        }
    }

    /// Hands queued tasks of `pool` to its idle workers.
    fn dispatch(&mut self, pool: u64) {
        loop {
            let Some(state) = self.pools.get_mut(&pool) else {
                return;
            };
            if state.queue.is_empty() {
                return;
            }
            let idle = state.procs.iter().copied().find(|id| {
                self.procs.get(id).is_some_and(|p| {
                    matches!(p.phase, Phase::Up { .. }) && p.ready && p.running.is_none()
                })
            });
            let Some(id) = idle else { return };
            let task = state.queue.pop_front().expect("not empty");
            if task.cancelled.load(std::sync::atomic::Ordering::Acquire) {
                task.finish(Err(TaskError::Cancelled));
                continue;
            }
            self.next_req += 1;
            let req = self.next_req;
            let p = self.procs.get_mut(&id).expect("found above");
            task.attempts
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            p.outbox.push(&Msg::RunTask {
                req,
                slot: p.plugins[0].slot,
                name: task.name.clone(),
                input: WireBytes::copy_of(&task.input),
            });
            p.running = Some((req, task));
        }
    }

    fn cancel_task(&mut self, task: &Arc<TaskShared>) {
        for state in self.pools.values_mut() {
            if let Some(i) = state.queue.iter().position(|t| Arc::ptr_eq(t, task)) {
                state.queue.remove(i);
                task.finish(Err(TaskError::Cancelled));
                return;
            }
        }
        for p in self.procs.values_mut() {
            if let Some((req, running)) = &p.running {
                if Arc::ptr_eq(running, task) {
                    p.outbox.push(&Msg::CancelTask { req: *req });
                    return;
                }
            }
        }
    }

    /// A pool worker's answer to its running task `req`, if that is what `req` is.
    fn task_answer(&mut self, id: u64, req: u64, result: TaskResult) -> bool {
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        if p.running.as_ref().is_none_or(|(r, _)| *r != req) {
            return false;
        }
        let (_, task) = p.running.take().expect("checked");
        if result.is_ok() {
            // A worker that answers is healthy: its restart backoff starts again.
            p.restarts = 0;
        }
        task.finish(result);
        if let Some(pool) = p.pool {
            self.dispatch(pool);
        }
        true
    }

    /// An unload of `slot` was not answered by its deadline: the worker is killed (a worker
    /// that cannot unload a plugin cannot be trusted with the others either; they are
    /// restarted as after a crash).
    fn unload_overdue(&mut self, id: u64, slot: u32, reply: Sender<Reply>) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.plugins.retain(|q| q.slot != slot);
        if p.plugins.is_empty() {
            let now = Instant::now();
            if let Some(live) = &mut p.live {
                let _ = live.child.kill();
            }
            p.phase = Phase::Stopping {
                term_at: now,
                kill_at: now + Duration::from_secs(1),
                termed: true,
                killed: true,
                notify: vec![reply],
            };
            self.exited(id);
        } else {
            let _ = reply.send(Reply::Lost(
                "it did not unload by its deadline, so its worker was killed".to_owned(),
            ));
            let why = "it did not unload a plugin by the unload's deadline, so it was killed";
            self.fault(id, Some(why.to_owned()), true);
        }
    }

    fn spawn(&mut self, id: u64, p: &mut Proc) -> io::Result<()> {
        let (host_end, child_end) = UnixStream::pair()?;
        let child_fd: RawFd = child_end.as_raw_fd();
        let mut cmd = Command::new(p.opts.program());
        cmd.arg("--fd")
            .arg(child_fd.to_string())
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = p.opts.worker_threads {
            cmd.arg("--workers").arg(n.to_string());
        }
        // SAFETY: between fork and exec only `fcntl`, which is async-signal-safe, runs; it makes
        // the child's copy of its socket end survive exec (every fd std and we open is
        // close-on-exec, so no other child inherits it).
        unsafe {
            cmd.pre_exec(move || {
                let fd = std::os::fd::BorrowedFd::borrow_raw(child_fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(child_end);
        host_end.set_nonblocking(true)?;
        let pid = child.id();
        #[cfg(target_os = "linux")]
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        #[cfg(not(target_os = "linux"))]
        let pidfd: Option<OwnedFd> = None;
        let stderr = child.stderr.take();
        let reg = self.poll.registry();
        let sock_fd = host_end.as_raw_fd();
        let registered = (|| {
            reg.register(
                &mut SourceFd(&sock_fd),
                token(id, SOCK),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            if let Some(fd) = &pidfd {
                reg.register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    token(id, PIDFD),
                    Interest::READABLE,
                )?;
            }
            if let Some(err) = &stderr {
                let fd = err.as_raw_fd();
                // SAFETY: `fd` is the open pipe `err` owns, for the duration of the call.
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                rustix::io::ioctl_fionbio(borrowed, true)?;
                reg.register(&mut SourceFd(&fd), token(id, STDERR), Interest::READABLE)?;
            }
            io::Result::Ok(())
        })();
        if let Err(e) = registered {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let now = Instant::now();
        p.live = Some(Live {
            child,
            sock: host_end,
            pidfd,
            stderr,
        });
        p.pid = pid;
        p.phase = Phase::Up {
            since: now,
            hello: false,
        };
        p.inbox = Inbox::default();
        p.outbox = Outbox::default();
        p.batch.clear();
        p.mapped.clear();
        p.last_heard = now;
        p.next_ping = now + p.opts.heartbeat / 4;
        p.next_save = now + p.opts.save_interval;
        p.saving = 0;
        p.tail.clear();
        for plugin in &p.plugins {
            lock(&plugin.status).pid = Some(pid);
        }
        // The host's blobs first: a plugin may read them in its `load`.
        if let Some(host) = self.host.upgrade() {
            for blob in host.blobs.all() {
                send_blob(p, &blob);
            }
        }
        Ok(())
    }

    fn readable(&mut self, id: u64) {
        loop {
            let Some(p) = self.procs.get_mut(&id) else {
                return;
            };
            let Some(live) = &p.live else { return };
            if !matches!(p.phase, Phase::Up { .. } | Phase::Stopping { .. }) {
                return;
            }
            // A read error is treated as EOF: the exit status then says what happened.
            let open = p.inbox.fill(&live.sock).unwrap_or(false);
            loop {
                let p = self.procs.get_mut(&id).expect("checked above");
                match p.inbox.next() {
                    Ok(Some(msg)) => {
                        p.last_heard = Instant::now();
                        match self.message(id, msg) {
                            Ok(After::Nothing) => {}
                            Ok(After::Stop(deadline, reply)) => self.stop(id, deadline, reply),
                            Ok(After::PoolLoaded(failure)) => self.pool_loaded(id, failure),
                            Ok(After::Dispatch(pool)) => self.dispatch(pool),
                            Err(why) => {
                                self.fault(id, Some(why), true);
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.fault(id, Some(format!("it sent {e}")), true);
                        return;
                    }
                }
            }
            if !open {
                // EOF: the worker is exiting (or closed its socket); its exit status says why.
                self.fault(id, None, false);
                return;
            }
            let p = self.procs.get(&id).expect("checked above");
            if !p.inbox.is_full() {
                return;
            }
        }
    }

    /// One message from worker `id`. `Err` is a protocol violation.
    fn message(&mut self, id: u64, msg: Msg) -> Result<After, String> {
        // A pool worker's answers about its running task come first.
        let running = self
            .procs
            .get(&id)
            .and_then(|p| p.running.as_ref().map(|(r, t)| (*r, t.clone())));
        let msg = match (msg, running) {
            (Msg::TaskProgress { req, fraction }, Some((r, task))) if req == r => {
                task.progress.store(
                    fraction.clamp(0.0, 1.0).to_bits(),
                    std::sync::atomic::Ordering::Release,
                );
                return Ok(After::Nothing);
            }
            (Msg::TaskProgress { .. }, _) => return Ok(After::Nothing),
            (Msg::Done { req, bytes }, Some((r, _))) if req == r => {
                self.task_answer(id, req, Ok(bytes.into_vec()));
                return Ok(After::Nothing);
            }
            (
                Msg::Failed {
                    req,
                    status,
                    reason,
                },
                Some((r, _)),
            ) if req == r => {
                let result = if status == crate::abi::HL_STATUS_CANCELLED {
                    Err(TaskError::Cancelled)
                } else {
                    Err(TaskError::Failed(reason))
                };
                self.task_answer(id, req, result);
                return Ok(After::Nothing);
            }
            (msg, _) => msg,
        };
        let host = self.host();
        let p = self.procs.get_mut(&id).expect("the caller checked");
        match msg {
            Msg::Hello { .. } => {
                if let Phase::Up { hello, .. } = &mut p.phase {
                    *hello = true;
                }
            }
            Msg::Pong { .. } => {}
            Msg::Loaded {
                req,
                name,
                version,
                flags,
            } => match p.pending.remove(&req) {
                Some(Pending::Caller(tx)) => {
                    let _ = tx.send(Reply::Loaded {
                        name,
                        version,
                        flags,
                    });
                }
                Some(Pending::PoolLoad) => {
                    p.ready = true;
                    if let Some(q) = p.plugins.first() {
                        *lock(&q.name) = name;
                    }
                    return Ok(After::PoolLoaded(None));
                }
                Some(Pending::RestartLoad(slot)) if p.pool.is_some() => {
                    p.ready = true;
                    restarted(
                        host.as_ref(),
                        p,
                        slot,
                        "(a pool worker: tasks keep no state)",
                    );
                    return Ok(After::Dispatch(p.pool.expect("checked")));
                }
                Some(Pending::RestartLoad(slot)) => {
                    let state = p
                        .plugins
                        .iter()
                        .find(|q| q.slot == slot)
                        .and_then(|q| lock(&q.state).clone());
                    if let Some(state) = state {
                        let req = self.next_req + 1;
                        self.next_req = req;
                        p.outbox.push(&Msg::Restore { req, slot, state });
                        p.pending.insert(req, Pending::RestartRestore(slot));
                    } else {
                        restarted(host.as_ref(), p, slot, "without a saved state (none yet)");
                    }
                }
                _ => return Err(format!("an answer to request {req} nobody made")),
            },
            Msg::Done { req, bytes } => match p.pending.remove(&req) {
                Some(Pending::Caller(tx)) => {
                    let _ = tx.send(Reply::Done(bytes.into_vec()));
                }
                Some(Pending::Save(slot)) => {
                    p.saved_one();
                    if let Some(q) = p.plugins.iter().find(|q| q.slot == slot) {
                        if !bytes.is_empty() {
                            *lock(&q.state) = Some(bytes);
                            lock(&q.status).saves += 1;
                        }
                    }
                }
                Some(Pending::RestartRestore(slot)) => {
                    restarted(host.as_ref(), p, slot, "from its last saved state");
                }
                Some(Pending::Unload {
                    slot,
                    deadline,
                    reply,
                }) => {
                    p.plugins.retain(|q| q.slot != slot);
                    if p.plugins.is_empty() {
                        let left = deadline.saturating_duration_since(Instant::now());
                        return Ok(After::Stop(left, Some(reply)));
                    }
                    let _ = reply.send(Reply::Done(Vec::new()));
                }
                Some(Pending::RestartLoad(_) | Pending::PoolLoad) | None => {
                    return Err(format!("an answer to request {req} nobody made"))
                }
            },
            Msg::Failed {
                req,
                status,
                reason,
            } => match p.pending.remove(&req) {
                Some(Pending::Caller(tx)) => {
                    let _ = tx.send(Reply::Failed { status, reason });
                }
                Some(Pending::Unload { reply, slot, .. }) => {
                    p.plugins.retain(|q| q.slot != slot);
                    let _ = reply.send(Reply::Failed { status, reason });
                }
                // A failed periodic save keeps the previous state.
                Some(Pending::Save(_)) => p.saved_one(),
                Some(Pending::PoolLoad) => return Ok(After::PoolLoaded(Some((status, reason)))),
                Some(Pending::RestartLoad(slot)) => {
                    let why = format!("its restart could not load it again: {reason}");
                    if let Some(q) = p.plugins.iter().find(|q| q.slot == slot).cloned() {
                        p.plugins.retain(|x| x.slot != slot);
                        went_down(host.as_ref(), &q, &why);
                    }
                    if p.plugins.is_empty() {
                        return Ok(After::Stop(Duration::from_secs(1), None));
                    }
                }
                Some(Pending::RestartRestore(slot)) => {
                    let why = format!("restarted without its state, which it refused: {reason}");
                    restarted(host.as_ref(), p, slot, &why);
                }
                None => return Err(format!("an answer to request {req} nobody made")),
            },
            Msg::Emit { topic, payload } => {
                let body = Body::new(payload, &p.mapped)?;
                if body.is_shared() {
                    for q in &p.plugins {
                        lock(&q.status).shared_payloads += 1;
                    }
                }
                p.batch.push((topic, body));
            }
            Msg::Region { id, size } => {
                let fd = p
                    .inbox
                    .fds
                    .pop_front()
                    .ok_or("a region frame without its fd")?;
                p.mapped.accept(id, size, fd)?;
            }
            Msg::Unmap { id } => p.mapped.unmap(id),
            Msg::Flushed { seq } => {
                let batch = std::mem::take(&mut p.batch);
                let (cmds, waker) = (self.cmds.clone(), self.waker.clone());
                let posted = host.as_ref().map(|h| {
                    h.post_promised(move |main| {
                        for (topic, body) in &batch {
                            let _ = main.emit(topic, body.view());
                        }
                        let _ = cmds.send(Cmd::Ack { proc: id, seq });
                        let _ = waker.wake();
                    })
                });
                if !matches!(posted, Some(Ok(()))) {
                    // The host is shutting down: acknowledge, so the worker is not stuck.
                    p.outbox.push(&Msg::Ack { seq });
                }
            }
            other => return Err(format!("a message only a host sends ({})", other.name())),
        }
        Ok(After::Nothing)
    }

    /// Worker `id` is broken or exiting. With `kill`, it is killed now; otherwise it has a
    /// second to exit by itself (its exit status is the better report).
    fn fault(&mut self, id: u64, cause: Option<String>, kill: bool) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        match &p.phase {
            Phase::Up { .. } => {}
            // Expected: it is quitting. Its exit is reaped by `exited`.
            Phase::Stopping { .. } | Phase::Exiting { .. } => return,
            Phase::Waiting { .. } | Phase::Down => return,
        }
        if let Some(live) = &mut p.live {
            // Nothing more is read from it; its exit (pidfd) is what is waited for now.
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&live.sock.as_raw_fd()));
            if kill {
                let _ = live.child.kill();
            }
        }
        p.phase = Phase::Exiting {
            cause,
            kill_at: Instant::now() + Duration::from_secs(1),
        };
        // Without a pidfd the exit is found by polling; with one, it is an event.
        self.exited(id);
    }

    /// Reaps worker `id` if it has exited.
    fn exited(&mut self, id: u64) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(live) = &mut p.live else { return };
        let status = match live.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(_) => ExitStatus::from_raw(0),
        };
        let mut live = p.live.take().expect("checked above");
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut SourceFd(&live.sock.as_raw_fd()));
        if let Some(fd) = &live.pidfd {
            let _ = reg.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        if let Some(err) = &mut live.stderr {
            let _ = reg.deregister(&mut SourceFd(&err.as_raw_fd()));
            drain_stderr(err, &mut p.tail, p.opts.echo_stderr);
        }
        drop(live); // closes the socket, pidfd and pipe
        let phase = std::mem::replace(&mut p.phase, Phase::Down);
        match phase {
            Phase::Stopping {
                notify,
                termed,
                killed,
                ..
            } => {
                if let Some((_, task)) = p.running.take() {
                    task.finish(Err(TaskError::ShutDown));
                }
                for tx in notify {
                    let _ = tx.send(if killed || termed {
                        Reply::Lost(format!(
                            "it did not quit by its deadline, so it was {}",
                            if killed { "killed" } else { "terminated" }
                        ))
                    } else {
                        Reply::Done(Vec::new())
                    });
                }
                self.resolve_all(id, "the worker was stopped");
                self.procs.remove(&id);
            }
            Phase::Up { since, .. } => self.crashed(id, None, status, since),
            Phase::Exiting { cause, .. } => {
                let since = Instant::now();
                self.crashed(id, cause, status, since)
            }
            Phase::Waiting { .. } | Phase::Down => {}
        }
    }

    /// Fails every pending request of worker `id`.
    fn resolve_all(&mut self, id: u64, why: &str) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        for (_, pending) in p.pending.drain() {
            match pending {
                Pending::Caller(tx) | Pending::Unload { reply: tx, .. } => {
                    let _ = tx.send(Reply::Lost(why.to_owned()));
                }
                _ => {}
            }
        }
    }

    fn crashed(&mut self, id: u64, cause: Option<String>, status: ExitStatus, since: Instant) {
        let host = self.host();
        let p = self.procs.get_mut(&id).expect("the caller checked");
        let cause = match cause {
            Some(c) => format!("{c}; {}", describe(status)),
            None => describe(status),
        };
        // A pool still starting fails: its plugin crashes its workers as they load it.
        if let Some(pool) = p.pool {
            if self.pools.get(&pool).is_some_and(|s| s.starting.is_some()) {
                if let Some((tx, _)) = self.pools.get_mut(&pool).and_then(|s| s.starting.take()) {
                    let _ = tx.send(Reply::Lost(format!(
                        "a worker of the pool was lost while loading the plugin: {cause}"
                    )));
                }
                self.pool_stop(pool, Duration::from_secs(1));
            }
        }
        // (Stopping the pool removed this reaped worker: nothing is left to restart.)
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        // A pool task it was running: retried once on a fresh worker, then poisoned.
        p.ready = false;
        if let Some((_, task)) = p.running.take() {
            let pool = p.pool.and_then(|pool| self.pools.get_mut(&pool));
            match pool {
                Some(pool) if task.attempts.load(std::sync::atomic::Ordering::Acquire) < 2 => {
                    pool.queue.push_front(task);
                }
                Some(_) => task.finish(Err(TaskError::Poisoned(cause.clone()))),
                None => task.finish(Err(TaskError::ShutDown)),
            }
        }
        let p = self.procs.get_mut(&id).expect("the caller checked");
        let why = format!("its worker (pid {}) was lost: {cause}", p.pid);
        if since.elapsed() >= HEALTHY {
            p.restarts = 0;
        }
        let last_words = last_words(&p.tail);
        p.batch.clear();
        p.mapped.clear();
        let can_restart = p.restarts < p.opts.restart_limit && self.shutdown.is_none();
        let backoff = (p.opts.restart_backoff * 2u32.saturating_pow(p.restarts.min(16)))
            .min(MAX_BACKOFF.max(p.opts.restart_backoff));
        let then = if can_restart {
            format!(
                "restarting in {backoff:?} (restart {} of {})",
                p.restarts + 1,
                p.opts.restart_limit
            )
        } else {
            format!(
                "staying down: {} restarts were allowed",
                p.opts.restart_limit
            )
        };
        for q in &p.plugins {
            let mut st = lock(&q.status);
            st.crashes += 1;
            st.pid = None;
            st.last_crash = Some(cause.clone());
            drop(st);
            let text = format!(
                "plugin: {}\npid: {}\ncause: {cause}\nthen: {then}\nlast words:\n{last_words}",
                q.name(),
                p.pid
            );
            emit_text(host.as_ref(), "hostloop/plugin/crashed", text);
        }
        if can_restart {
            p.restarts += 1;
            p.phase = Phase::Waiting {
                at: Instant::now() + backoff,
            };
        } else {
            let plugins = std::mem::take(&mut p.plugins);
            for q in &plugins {
                went_down(
                    host.as_ref(),
                    q,
                    &format!("{why}, after {} restarts", p.opts.restart_limit),
                );
            }
        }
        self.resolve_all(id, &why);
        let p = self.procs.get(&id).expect("present");
        if p.plugins.is_empty() {
            self.procs.remove(&id);
        }
    }

    fn restart(&mut self, id: u64) {
        let Some(mut p) = self.procs.remove(&id) else {
            return;
        };
        if let Err(e) = self.spawn(id, &mut p) {
            let host = self.host();
            let why = format!("its worker could not be started again: {e}");
            for q in &p.plugins {
                went_down(host.as_ref(), q, &why);
            }
            return;
        }
        let plugins = p.plugins.clone();
        for q in plugins {
            let req = self.req();
            let path = lock(&q.path).to_string_lossy().into_owned();
            p.outbox.push(&Msg::Load {
                req,
                slot: q.slot,
                path,
            });
            p.pending.insert(req, Pending::RestartLoad(q.slot));
            lock(&q.status).restarts += 1;
        }
        self.procs.insert(id, p);
    }

    /// Asks worker `id` to quit; terminates it at 3/4 of `deadline`, kills it at `deadline`.
    fn stop(&mut self, id: u64, deadline: Duration, reply: Option<Sender<Reply>>) {
        let Some(p) = self.procs.get_mut(&id) else {
            if let Some(tx) = reply {
                let _ = tx.send(Reply::Done(Vec::new()));
            }
            return;
        };
        if p.live.is_none() {
            // Not running (waiting to restart, or down): nothing to end.
            let plugins = std::mem::take(&mut p.plugins);
            for q in plugins {
                lock(&q.status).pid = None;
            }
            self.procs.remove(&id);
            if let Some(tx) = reply {
                let _ = tx.send(Reply::Done(Vec::new()));
            }
            return;
        }
        let now = Instant::now();
        match &mut p.phase {
            Phase::Stopping { notify, .. } => {
                notify.extend(reply);
            }
            _ => {
                p.outbox.push(&Msg::Quit);
                p.phase = Phase::Stopping {
                    term_at: now + deadline * 3 / 4,
                    kill_at: now + deadline,
                    termed: false,
                    killed: false,
                    notify: reply.into_iter().collect(),
                };
            }
        }
    }

    fn read_stderr(&mut self, id: u64) {
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(err) = p.live.as_mut().and_then(|l| l.stderr.as_mut()) {
                drain_stderr(err, &mut p.tail, p.opts.echo_stderr);
            }
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            if self
                .procs
                .get(&id)
                .is_some_and(|p| p.live.as_ref().is_some_and(|l| l.pidfd.is_none()))
            {
                self.exited(id);
            }
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            let mut hung = None;
            let mut restart = false;
            let mut overdue = None;
            match &mut p.phase {
                Phase::Up { .. } => {
                    let late = p.pending.iter().find_map(|(req, pending)| match pending {
                        Pending::Unload { deadline, .. } if now >= *deadline => Some(*req),
                        _ => None,
                    });
                    if let Some(req) = late {
                        overdue = p.pending.remove(&req);
                    } else if now >= p.last_heard + p.opts.heartbeat {
                        hung = Some(format!(
                            "it did not answer for {:?} (hung), so it was killed",
                            p.opts.heartbeat
                        ));
                    } else {
                        if now >= p.next_ping {
                            p.ping_seq += 1;
                            p.outbox.push(&Msg::Ping { seq: p.ping_seq });
                            p.next_ping = now + p.opts.heartbeat / 4;
                        }
                        if p.saving == 0 && now >= p.next_save {
                            p.saving = p.plugins.len();
                            for q in &p.plugins {
                                self.next_req += 1;
                                let req = self.next_req;
                                p.outbox.push(&Msg::Save { req, slot: q.slot });
                                p.pending.insert(req, Pending::Save(q.slot));
                            }
                        }
                    }
                }
                Phase::Exiting { kill_at, .. } => {
                    if now >= *kill_at {
                        if let Some(live) = &mut p.live {
                            let _ = live.child.kill();
                        }
                        *kill_at = now + Duration::from_secs(1);
                    }
                }
                Phase::Stopping {
                    term_at,
                    kill_at,
                    termed,
                    killed,
                    ..
                } => {
                    if let Some(live) = &mut p.live {
                        if now >= *kill_at {
                            let _ = live.child.kill();
                            *killed = true;
                            *kill_at = now + Duration::from_secs(1);
                        } else if now >= *term_at && !*termed {
                            *termed = true;
                            terminate(live);
                        }
                    }
                }
                Phase::Waiting { at } => restart = now >= *at,
                Phase::Down => {}
            }
            if let Some(Pending::Unload { slot, reply, .. }) = overdue {
                self.unload_overdue(id, slot, reply);
            } else if let Some(why) = hung {
                self.fault(id, Some(why), true);
            } else if restart {
                self.restart(id);
            }
        }
    }

    fn flush_all(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            let Some(live) = &p.live else { continue };
            if p.outbox.is_empty() || !matches!(p.phase, Phase::Up { .. } | Phase::Stopping { .. })
            {
                continue;
            }
            if let Err(e) = p.outbox.flush(&live.sock) {
                // EPIPE (the worker is gone) or another socket error: a fault, never a signal.
                self.fault(id, Some(format!("writing to it failed: {e}")), false);
            }
        }
    }
}

/// Queues blob `blob` for worker `p`, with a new fd of it.
fn send_blob(p: &mut Proc, blob: &crate::blob::Blob) {
    if let Ok(fd) = blob.dup_fd() {
        p.outbox.push_with_fd(
            &Msg::Blob {
                name: blob.name().to_owned(),
                size: blob.len() as u64,
            },
            fd,
        );
    }
}

fn terminate(live: &mut Live) {
    #[cfg(target_os = "linux")]
    if let Some(fd) = &live.pidfd {
        let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::TERM);
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(live.child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

fn drain_stderr(err: &mut ChildStderr, tail: &mut Vec<u8>, echo: bool) {
    let mut buf = [0u8; 4096];
    loop {
        match err.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if echo {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > TAIL {
                    let cut = tail.len() - TAIL;
                    tail.drain(..cut);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The end of what a worker wrote to stderr, at most [`LAST_WORDS`] bytes of it. A Rust stack
/// backtrace at the end (with `RUST_BACKTRACE` set) is left out, so the message before it — the
/// panic or allocation failure — is what the report shows.
fn last_words(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let (words, note) = match text.rfind("stack backtrace:") {
        Some(i) => {
            let lines = text[i..].lines().count();
            (
                &text[..i],
                format!("[a stack backtrace of {lines} lines left out]\n"),
            )
        }
        None => (&text[..], String::new()),
    };
    let mut start = words.len().saturating_sub(LAST_WORDS);
    while !words.is_char_boundary(start) {
        start += 1;
    }
    format!("{}{note}", &words[start..])
}

/// A worker's end in words: "killed by signal 11 (SIGSEGV)", "exited with status 3".
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            4 => " (SIGILL)",
            6 => " (SIGABRT)",
            7 => " (SIGBUS)",
            8 => " (SIGFPE)",
            9 => " (SIGKILL)",
            11 => " (SIGSEGV)",
            15 => " (SIGTERM)",
            _ => "",
        };
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("killed by signal {sig}{name}{core}")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

/// A sink message's payload on its way to the host's sink: its bytes inline, or in a mapped
/// region (read in place, no copy), with the array layout it had in the worker.
struct Body {
    /// 0 for bytes, else the array's element type.
    elem: u32,
    components: usize,
    count: usize,
    stride: usize,
    bytes: Bytes,
}

enum Bytes {
    Inline(Vec<u8>),
    Shared(Arc<memmap2::Mmap>, usize),
}

impl Body {
    /// Checks a payload from worker `mapped`'s side and keeps what the sink will read.
    fn new(payload: WirePayload, mapped: &Mapped) -> Result<Body, String> {
        let n = |v: u64| usize::try_from(v).map_err(|_| "an array too large".to_owned());
        let body = match payload {
            WirePayload::Bytes(b) => Body {
                elem: 0,
                components: 0,
                count: 0,
                stride: 0,
                bytes: Bytes::Inline(b),
            },
            WirePayload::Array {
                elem,
                components,
                count,
                stride,
                bytes,
            } => Body {
                elem,
                components: n(components)?,
                count: n(count)?,
                stride: n(stride)?,
                bytes: Bytes::Inline(bytes),
            },
            WirePayload::Shared {
                elem,
                components,
                count,
                stride,
                region,
                len,
            } => Body {
                elem,
                components: n(components)?,
                count: n(count)?,
                stride: n(stride)?,
                bytes: Bytes::Shared(mapped.get(region, len)?, n(len)?),
            },
        };
        if body.elem != 0 {
            let elem = elem_type(body.elem).map_err(|e| e.message)?;
            ArrayView::strided(elem, body.components, body.count, body.stride, body.bytes())
                .map_err(|e| format!("an invalid array: {e}"))?;
        }
        Ok(body)
    }

    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Inline(b) => b,
            Bytes::Shared(map, len) => &map[..*len],
        }
    }

    /// The payload as the sink sees it (`new` checked it).
    fn view(&self) -> Payload<'_> {
        if self.elem == 0 {
            return Payload::Bytes(self.bytes());
        }
        let view = elem_type(self.elem).ok().and_then(|elem| {
            ArrayView::strided(elem, self.components, self.count, self.stride, self.bytes()).ok()
        });
        match view {
            Some(v) => Payload::Array(v),
            None => Payload::Bytes(&[]),
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self.bytes, Bytes::Shared(..))
    }
}

fn emit_text(host: Option<&Handle>, topic: &'static str, text: String) {
    if let Some(h) = host {
        let _ = h.post_promised(move |main| {
            let _ = main.emit(topic, Payload::Bytes(text.as_bytes()));
        });
    }
}

fn restarted(host: Option<&Handle>, p: &Proc, slot: u32, how: &str) {
    if let Some(q) = p.plugins.iter().find(|q| q.slot == slot) {
        lock(&q.status).pid = Some(p.pid);
        let text = format!("plugin: {}\npid: {}\nrestarted {how}", q.name(), p.pid);
        emit_text(host, "hostloop/plugin/restarted", text);
    }
}

fn went_down(host: Option<&Handle>, q: &Remote, why: &str) {
    let mut st = lock(&q.status);
    st.pid = None;
    st.down = Some(why.to_owned());
    drop(st);
    let text = format!("plugin: {}\ndown: {why}", q.name());
    emit_text(host, "hostloop/plugin/down", text);
}

/// Where to look for the worker program by default: `$HOSTLOOP_WORKER`, then `hostloop-worker`
/// beside the running executable or one directory up (cargo puts test binaries in `deps/`).
pub(crate) fn default_program() -> PathBuf {
    if let Some(p) = std::env::var_os("HOSTLOOP_WORKER") {
        return PathBuf::from(p);
    }
    let name = "hostloop-worker";
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_words() {
        assert_eq!(
            describe(ExitStatus::from_raw(11)),
            "killed by signal 11 (SIGSEGV)"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(6 | 0x80)),
            "killed by signal 6 (SIGABRT), core dumped"
        );
    }

    #[test]
    fn last_words_leave_out_a_trailing_backtrace_and_keep_the_end() {
        let with_bt = b"crashy: alloc now\nmemory allocation of 1099511627776 bytes failed\nstack backtrace:\n   0: a\n   1: b\n";
        assert_eq!(
            last_words(with_bt),
            "crashy: alloc now\nmemory allocation of 1099511627776 bytes failed\n\
             [a stack backtrace of 3 lines left out]\n"
        );
        let long = "é".repeat(3000); // 6000 bytes: cut on a character boundary
        let words = last_words(long.as_bytes());
        assert!(words.len() <= LAST_WORDS && words.chars().all(|c| c == 'é'));
    }

    #[test]
    fn invalid_arrays_from_a_worker_are_refused() {
        let ok = WirePayload::Array {
            elem: 6,
            components: 3,
            count: 2,
            stride: 12,
            bytes: vec![0; 24],
        };
        assert!(Body::new(ok, &Mapped::default()).is_ok());
        let short = WirePayload::Array {
            elem: 6,
            components: 3,
            count: 3,
            stride: 12,
            bytes: vec![0; 24],
        };
        assert!(Body::new(short, &Mapped::default()).is_err());
        let bad_elem = WirePayload::Array {
            elem: 99,
            components: 1,
            count: 0,
            stride: 1,
            bytes: vec![],
        };
        assert!(Body::new(bad_elem, &Mapped::default()).is_err());
        let unmapped = WirePayload::Shared {
            elem: 0,
            components: 0,
            count: 0,
            stride: 0,
            region: 1,
            len: 1,
        };
        assert!(Body::new(unmapped, &Mapped::default()).is_err());
    }
}
