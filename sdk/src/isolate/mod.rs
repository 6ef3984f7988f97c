//! Isolated plugins: a plugin loaded into a worker process of its own (or a named group's), so
//! that a segfault, an abort, a stack overflow or a hang in its native code ends the worker, not
//! the host.
//!
//! The worker (`hostloop-worker`, [`worker`]) loads the same library with the same loader and
//! services; the host forwards its events, and the worker's sink messages come back and reach
//! the host's sink on the host's main thread, at a pump, woken by the same doorbell. A worker
//! lost for any reason is reported on the host's sink, restarted with the plugin's last saved
//! state, and after a restart limit left down with the reason ([`supervisor`]). The files:
//! `wire.rs` the frames, `shm.rs` the shared-memory regions large payloads travel in,
//! `supervisor.rs` the host's thread that owns the workers, `worker.rs` the worker process, and
//! this one the options and the host-side plugin handle.

#[cfg(unix)]
pub(crate) mod pool;
#[cfg(unix)]
pub(crate) mod shm;
#[cfg(unix)]
pub(crate) mod supervisor;
#[cfg(unix)]
pub(crate) mod wire;
#[cfg(unix)]
pub(crate) mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(unix)]
use supervisor::{Cmd, Reply, Supervisor};

use crate::handle::Handle;
use crate::internal::sync::lock;
use crate::plugin::{PluginError, PluginErrorKind, PluginInfo, UnloadReport};
use crate::shared::Shared;

/// Where a plugin's code runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// In the host's process, on the host's runtime (the default: the fastest, and a crash in
    /// the plugin's native code ends the host).
    #[default]
    InProcess,
    /// In a worker process of its own: a crash ends only the worker, which is restarted.
    OwnProcess,
    /// In the worker process shared by every plugin loaded with the same group name (fewer
    /// processes; a crash ends, and restarts, the whole group).
    SharedProcess(String),
}

/// How to load a plugin: where it runs and, when isolated, how its worker is kept alive.
///
/// ```no_run
/// use std::time::Duration;
/// use hostloop::plugin::{Isolation, LoadOptions};
///
/// let rt = hostloop::Runtime::new()?;
/// let options = LoadOptions::new()
///     .isolation(Isolation::OwnProcess)
///     .heartbeat(Duration::from_secs(2));
/// let plugin = rt.load_plugin_with("libparticles.so", &options)?;
/// println!("running in pid {:?}", plugin.info().pid);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub(crate) isolation: Isolation,
    pub(crate) program: Option<PathBuf>,
    pub(crate) heartbeat: Duration,
    pub(crate) save_interval: Duration,
    pub(crate) restart_limit: u32,
    pub(crate) restart_backoff: Duration,
    pub(crate) worker_threads: Option<usize>,
    pub(crate) echo_stderr: bool,
    pub(crate) timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            isolation: Isolation::InProcess,
            program: None,
            heartbeat: Duration::from_secs(5),
            save_interval: Duration::from_secs(1),
            restart_limit: 3,
            restart_backoff: Duration::from_millis(100),
            worker_threads: None,
            echo_stderr: true,
            timeout: Duration::from_secs(30),
        }
    }
}

impl LoadOptions {
    /// In-process, with the defaults below for when isolation is chosen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the plugin runs (default [`Isolation::InProcess`]).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// The worker program. Default: `$HOSTLOOP_WORKER`, else `hostloop-worker` beside the
    /// running executable (or one directory up), else `hostloop-worker` on `PATH`.
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// How long a worker may go without answering before it is declared hung and killed
    /// (default 5 s; it is pinged four times as often).
    pub fn heartbeat(mut self, deadline: Duration) -> Self {
        self.heartbeat = deadline.max(Duration::from_millis(10));
        self
    }

    /// How often the plugin's state is saved (its hot-reload `save_state`) to restore it into
    /// a restarted worker (default 1 s). A simulation saves at a step boundary.
    pub fn save_interval(mut self, every: Duration) -> Self {
        self.save_interval = every.max(Duration::from_millis(1));
        self
    }

    /// How many times a lost worker is restarted before the plugin stays down (default 3).
    /// The count starts again after a minute up.
    pub fn restart_limit(mut self, n: u32) -> Self {
        self.restart_limit = n;
        self
    }

    /// The wait before the first restart, doubled for each further one up to 30 s (default
    /// 100 ms).
    pub fn restart_backoff(mut self, first: Duration) -> Self {
        self.restart_backoff = first;
        self
    }

    /// The worker's pool size (default: its runtime's default, one per core).
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = Some(n.max(1));
        self
    }

    /// Whether the worker's stderr is copied to the host's stderr, as an in-process plugin's
    /// would be (default `true`). Its last 4 KiB are kept either way, as the crash report's
    /// last words.
    pub fn echo_stderr(mut self, echo: bool) -> Self {
        self.echo_stderr = echo;
        self
    }

    /// How long a load, reload or state request waits for the worker (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The heartbeat deadline ([`heartbeat`](LoadOptions::heartbeat)).
    pub fn heartbeat_deadline(&self) -> Duration {
        self.heartbeat
    }

    /// The checkpoint interval ([`save_interval`](LoadOptions::save_interval)).
    pub fn checkpoint_interval(&self) -> Duration {
        self.save_interval
    }

    /// The restart limit ([`restart_limit`](LoadOptions::restart_limit)).
    pub fn restart_count_limit(&self) -> u32 {
        self.restart_limit
    }

    /// The first restart's wait ([`restart_backoff`](LoadOptions::restart_backoff)).
    pub fn first_restart_backoff(&self) -> Duration {
        self.restart_backoff
    }

    /// How long a request waits for the worker ([`timeout`](LoadOptions::timeout)).
    pub fn answer_timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn group(&self) -> Option<&str> {
        match &self.isolation {
            Isolation::SharedProcess(g) => Some(g),
            _ => None,
        }
    }

    #[cfg(unix)]
    pub(crate) fn program(&self) -> PathBuf {
        self.program
            .clone()
            .unwrap_or_else(supervisor::default_program)
    }
}

#[cfg(unix)]
/// What a worker-hosted plugin's handle and the isolation thread both see.
#[derive(Debug, Default, Clone)]
pub(crate) struct RemoteStatus {
    pub(crate) pid: Option<u32>,
    pub(crate) restarts: u32,
    pub(crate) crashes: u32,
    pub(crate) last_crash: Option<String>,
    pub(crate) down: Option<String>,
    pub(crate) saves: u64,
    pub(crate) shared_payloads: u64,
}

#[cfg(unix)]
/// One isolated plugin, as the isolation thread knows it.
#[derive(Debug)]
pub(crate) struct Remote {
    /// Its slot in the worker: unique per runtime.
    pub(crate) slot: u32,
    pub(crate) name: Mutex<String>,
    pub(crate) path: Mutex<PathBuf>,
    /// The last state it saved, for a restart (sealed in a memfd when large: the worker's
    /// memory, handed over, never copied through the socket or on this side).
    pub(crate) state: Mutex<Option<wire::WireBytes>>,
    pub(crate) status: Mutex<RemoteStatus>,
}

#[cfg(unix)]
impl Remote {
    pub(crate) fn name(&self) -> String {
        lock(&self.name).clone()
    }

    pub(crate) fn gone_reason(&self) -> String {
        match &lock(&self.status).down {
            Some(why) => format!("the plugin is down: {why}"),
            None => "the plugin's worker is restarting".to_owned(),
        }
    }
}

#[cfg(unix)]
/// The isolation thread of one runtime, started by its first isolated load.
#[derive(Default)]
pub(crate) struct Workers {
    sup: Mutex<Option<Arc<Supervisor>>>,
    next_slot: std::sync::atomic::AtomicU32,
    subscription: Mutex<Option<crate::event::Subscription>>,
}

#[cfg(unix)]
impl Workers {
    /// The isolation thread, if it started.
    pub(crate) fn supervisor(&self) -> Option<Arc<Supervisor>> {
        lock(&self.sup).clone()
    }

    /// A number for a new task pool.
    pub(crate) fn next_pool_id(&self) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn get(&self, rt: &Handle) -> std::io::Result<Arc<Supervisor>> {
        let mut slot = lock(&self.sup);
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let sup = Arc::new(Supervisor::start(rt.shared())?);
        // Every host event goes to every worker, once: its plugins subscribe in the worker.
        let fwd = sup.clone();
        let sub = rt.subscribe(crate::event::EventFilter::All, move |e, _main| {
            fwd.send(Cmd::Event(e.clone()));
        });
        *lock(&self.subscription) = Some(sub);
        *slot = Some(sup.clone());
        Ok(sup)
    }

    /// A blob the host just made: to every running worker (a worker started later gets all
    /// of them when it starts).
    pub(crate) fn share_blob(&self, blob: &crate::blob::Blob) {
        if let Some(sup) = &*lock(&self.sup) {
            sup.send(Cmd::Blob(blob.clone()));
        }
    }

    /// Runtime shutdown: asks every worker to end by `until` (quit, terminate, then kill);
    /// [`Ending::wait`] waits for it.
    pub(crate) fn begin_shutdown(&self, shared: &Arc<Shared>, until: Instant) -> Option<Ending> {
        let sup = lock(&self.sup).take()?;
        if let Some(sub) = lock(&self.subscription).take() {
            Handle::from_shared(shared.clone()).unsubscribe(sub);
        }
        let done = sup.begin_shutdown(until.saturating_duration_since(Instant::now()));
        Some(Ending { sup, done })
    }
}

#[cfg(unix)]
/// Workers being ended by a runtime's shutdown.
pub(crate) struct Ending {
    sup: Arc<Supervisor>,
    done: Option<crossbeam_channel::Receiver<()>>,
}

#[cfg(unix)]
impl Ending {
    /// Waits until every worker was reaped (a killed one is reaped at once; the margin only
    /// covers a machine too loaded to schedule the isolation thread).
    pub(crate) fn wait(self, until: Instant) {
        let margin = Duration::from_secs(5);
        self.sup.finish_shutdown(self.done, until + margin);
    }
}

#[cfg(unix)]
/// The host's handle on a plugin running in a worker.
pub(crate) struct RemotePlugin {
    rt: Handle,
    sup: Arc<Supervisor>,
    remote: Arc<Remote>,
    opts: Arc<LoadOptions>,
    version: String,
    flags: u32,
    generation: u32,
    unloaded: bool,
}

#[cfg(unix)]
impl std::fmt::Debug for RemotePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePlugin")
            .field("name", &self.remote.name())
            .field("isolation", &self.opts.isolation)
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
fn failure(path: &Path, reply: Reply, what: &str) -> PluginError {
    match reply {
        Reply::Failed { status, reason } => {
            PluginError::new(PluginErrorKind::from_status(status), path, reason)
        }
        Reply::Lost(why) => {
            PluginError::new(PluginErrorKind::Worker, path, format!("{what}: {why}"))
        }
        other => PluginError::new(
            PluginErrorKind::Worker,
            path,
            format!("{what}: an unexpected answer from the worker ({other:?})"),
        ),
    }
}

#[cfg(unix)]
impl RemotePlugin {
    /// Main thread (checked by the caller): starts or joins a worker and loads `path` there.
    pub(crate) fn load(
        rt: &Handle,
        path: &Path,
        opts: &LoadOptions,
    ) -> Result<RemotePlugin, PluginError> {
        if !path.is_file() {
            return Err(PluginError::new(
                PluginErrorKind::FileNotFound,
                path,
                "no plugin library at this path",
            ));
        }
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let program = opts.program();
        let workers = &rt.shared().workers;
        let sup = workers.get(rt).map_err(|e| {
            PluginError::new(
                PluginErrorKind::Worker,
                path,
                format!("cannot start the isolation thread: {e}"),
            )
        })?;
        let slot = workers
            .next_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let remote = Arc::new(Remote {
            slot,
            name: Mutex::new(String::new()),
            path: Mutex::new(abs),
            state: Mutex::new(None),
            status: Mutex::new(RemoteStatus::default()),
        });
        let opts = Arc::new(opts.clone());
        let reply = sup.call(opts.timeout, |reply| Cmd::Load {
            opts: opts.clone(),
            plugin: remote.clone(),
            reply,
        });
        let (name, version, flags) = match reply {
            Reply::Loaded {
                name,
                version,
                flags,
                ..
            } => (name, version, flags),
            other => {
                // Nothing stays behind: the worker ends if the plugin was its only one.
                sup.call(opts.timeout, |reply| Cmd::Unload {
                    plugin: remote.clone(),
                    deadline: Duration::from_secs(2),
                    reply,
                });
                let e = failure(path, other, "loading it in a worker failed");
                return Err(match e.kind() {
                    PluginErrorKind::Worker if !program.is_file() => PluginError::new(
                        PluginErrorKind::Worker,
                        path,
                        format!(
                            "the worker program {} does not exist or cannot run ({}); set \
                             LoadOptions::worker_program or $HOSTLOOP_WORKER",
                            program.display(),
                            e.reason()
                        ),
                    ),
                    _ => e,
                });
            }
        };
        *lock(&remote.name) = name.clone();
        let mut plugin = RemotePlugin {
            rt: rt.clone(),
            sup,
            remote,
            opts,
            version,
            flags,
            generation: 0,
            unloaded: false,
        };
        if !crate::plugin::host::claim_name(rt, &name) {
            plugin.unload(Duration::from_secs(2));
            return Err(PluginError::new(
                PluginErrorKind::AlreadyLoaded,
                path,
                format!(
                    "a plugin named {name:?} is loaded in this runtime already; reload it instead"
                ),
            ));
        }
        Ok(plugin)
    }

    /// The checks every plugin call makes (main thread, not shut down).
    pub(crate) fn rt_check(&self, path: &Path) -> Result<(), PluginError> {
        self.rt.check_plugin_call(path)
    }

    pub(crate) fn info(&self) -> PluginInfo {
        let st = lock(&self.remote.status).clone();
        PluginInfo {
            name: self.remote.name(),
            version: self.version.clone(),
            path: lock(&self.remote.path).clone(),
            generation: self.generation,
            flags: self.flags,
            pending: 0,
            isolation: self.opts.isolation.clone(),
            pid: st.pid,
            restarts: st.restarts,
            crashes: st.crashes,
            last_crash: st.last_crash,
            down: st.down,
            saves: st.saves,
            shared_payloads: st.shared_payloads,
        }
    }

    /// Unloads the plugin in its worker and ends the worker if it hosts nothing else (asked to
    /// quit, terminated at 3/4 of `deadline`, killed at `deadline`).
    pub(crate) fn unload(&mut self, deadline: Duration) -> UnloadReport {
        let start = Instant::now();
        if std::mem::replace(&mut self.unloaded, true) {
            return UnloadReport::default();
        }
        let reply = self
            .sup
            .call(deadline + Duration::from_secs(5), |reply| Cmd::Unload {
                plugin: self.remote.clone(),
                deadline,
                reply,
            });
        let name = self.remote.name();
        if !name.is_empty() {
            crate::plugin::host::release_name(&self.rt, &name);
        }
        UnloadReport {
            dropped: 0,
            stragglers: usize::from(!matches!(reply, Reply::Done(_))),
            retired: false,
            elapsed: start.elapsed(),
        }
    }

    /// Hot-reloads the plugin inside its worker (state saved and restored there, as in-process).
    pub(crate) fn reload(&mut self, path: &Path, deadline: Duration) -> Result<(), PluginError> {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let slot = self.remote.slot;
        let wire_path = abs.to_string_lossy().into_owned();
        let deadline_ms = deadline.as_millis() as u64;
        let reply = self
            .sup
            .call(self.opts.timeout + deadline, |reply| Cmd::Request {
                plugin: self.remote.clone(),
                make: Box::new(move |req| wire::Msg::Reload {
                    req,
                    slot,
                    path: wire_path,
                    deadline_ms,
                }),
                reply,
            });
        match reply {
            Reply::Done(version) => {
                self.version = String::from_utf8_lossy(&version).into_owned();
                *lock(&self.remote.path) = abs;
                self.generation += 1;
                Ok(())
            }
            other => Err(failure(path, other, "reloading it in its worker failed")),
        }
    }
}

#[cfg(unix)]
impl Drop for RemotePlugin {
    fn drop(&mut self) {
        self.unload(Duration::from_secs(2));
    }
}
