//! The host side: loading plugin libraries, the services table they call, per-plugin accounting
//! of their work, safe unload and hot reload.
//!
//! # Per-plugin accounting (why no call into an unloaded plugin can happen)
//!
//! Every triple a plugin hands over is parked in *its instance's* queues — one per lane, plus
//! one for the main thread — and what goes into the runtime's own queues is a host-side wrapper
//! that holds only the instance (host memory) and pops one triple when it runs. So the plugin's
//! pending work is always in a place the instance owns, and unload can take it all:
//!
//! 1. The instance's gate (`crate::plugin::gate`, model-checked) is closed. A service call (`spawn`,
//!    `post_main`) passes the gate before it reads whether it is closing, and a wrapper passes
//!    it before it pops.
//! 2. The plugin's `unload` callback runs, then every parked triple is dropped (its `drop`
//!    called), then unload waits until no pass is under way (or the deadline), and drains again
//!    until it finds nothing parked.
//! 3. The gate's argument: a service call or wrapper either sees the gate closing (and only
//!    drops, never calls) or is waited for (and what it queued is drained). A wrapper that runs
//!    after unload finds the queues empty.
//!
//! Hence once unload returns with `running == 0`, no `call` or `drop` of the plugin can start.
//! If the deadline passes first (a job ignoring cancellation), the image is retired, never
//! unmapped, and the count of stragglers is reported.
//!
//! The files: `error.rs` (load errors), `services.rs` (the services table and the per-plugin
//! instance behind it), `image.rs` (opening libraries and reading descriptors), and this one
//! (the registry and the [`LoadedPlugin`] life cycle: load, unload, reload).

mod error;
mod image;
mod services;

pub use error::{PluginError, PluginErrorKind};
use image::{descriptor_text, open, Image};
use services::Instance;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::abi::*;
use crate::handle::Handle;
use crate::internal::sync::lock;
pub use crate::isolate::{Isolation, LoadOptions};

/// Counters of one runtime's plugin activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginStats {
    /// Plugins loaded now.
    pub loaded: u64,
    /// Successful loads, reloads included.
    pub loads: u64,
    /// Unloads.
    pub unloads: u64,
    /// Successful hot reloads.
    pub reloads: u64,
    /// Reloads that failed (the old build kept running).
    pub failed_reloads: u64,
    /// Images kept mapped at unload instead of `dlclose`d (Rust plugins, or stragglers).
    pub images_retired: u64,
    /// Images really unmapped.
    pub images_closed: u64,
    /// Calls into plugins still running at an unload's deadline.
    pub stragglers: u64,
    /// Retired images that stay mapped in this process, all its runtimes together (not a
    /// count of this runtime's): one per distinct build retired, however often it was loaded
    /// and retired again — a load or reload of a build mapped before reuses its image. It only
    /// grows, by one per reload or load of a build not seen before (see the platform notes of
    /// [`crate::plugin`]). An isolated plugin's images are in its worker process.
    pub images_retained: u64,
}

/// The plugin bookkeeping of one runtime.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    names: HashSet<String>,
    stats: PluginStats,
}

/// Claims `name` in `rt`'s registry (an isolated plugin's, known once its worker loaded it).
/// Returns `false` if a plugin of that name is loaded already.
#[cfg(unix)]
pub(crate) fn claim_name(rt: &Handle, name: &str) -> bool {
    let mut reg = lock(&rt.shared().plugins);
    if !reg.names.insert(name.to_owned()) {
        return false;
    }
    reg.stats.loaded += 1;
    reg.stats.loads += 1;
    true
}

/// Releases a name `claim_name` took, counting the unload.
#[cfg(unix)]
pub(crate) fn release_name(rt: &Handle, name: &str) {
    let mut reg = lock(&rt.shared().plugins);
    if reg.names.remove(name) {
        reg.stats.loaded = reg.stats.loaded.saturating_sub(1);
        reg.stats.unloads += 1;
    }
}

/// What an unload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnloadReport {
    /// The plugin's queued work that never ran (its `drop` was called).
    pub dropped: usize,
    /// Calls into the plugin still running at the deadline (0 unless a job ignored
    /// cancellation). With stragglers the image is retired, never unmapped.
    pub stragglers: usize,
    /// Whether the image was retired (kept mapped) rather than unmapped.
    pub retired: bool,
    /// How long the unload took.
    pub elapsed: Duration,
}

/// A description of a loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginInfo {
    /// The descriptor's name.
    pub name: String,
    /// The descriptor's version.
    pub version: String,
    /// The path it was (re)loaded from.
    pub path: PathBuf,
    /// 0 after load, +1 per successful reload.
    pub generation: u32,
    /// The descriptor's `HL_PLUGIN_FLAG_*`.
    pub flags: u32,
    /// The plugin's work queued or running on the host now (0 for an isolated plugin: its
    /// work is in its worker).
    pub pending: usize,
    /// Where it runs.
    pub isolation: Isolation,
    /// The pid of its worker process while one runs it (`None` in-process, while restarting,
    /// or down).
    pub pid: Option<u32>,
    /// How many times its worker was restarted after a crash.
    pub restarts: u32,
    /// How many times its worker was lost (crashed, killed, hung, exited).
    pub crashes: u32,
    /// Why its worker was last lost, e.g. `killed by signal 11 (SIGSEGV)`.
    pub last_crash: Option<String>,
    /// Set once the plugin stays down (its restart limit was reached, or a restart failed):
    /// why.
    pub down: Option<String>,
    /// How many times an isolated plugin's state was saved, to restore into a restarted
    /// worker (every [`LoadOptions::save_interval`]).
    pub saves: u64,
    /// How many of an isolated plugin's sink messages came through shared memory (those of
    /// 64 KiB or more: read by the sink in place, not copied through the socket).
    pub shared_payloads: u64,
}

// ---------------------------------------------------------------------------------------------
// LoadedPlugin.

/// The default deadline of an unload made by `Drop`.
const DROP_DEADLINE: Duration = Duration::from_secs(2);

/// A plugin loaded into a runtime. Unload it with [`LoadedPlugin::unload`] (dropping it on the
/// main thread does the same with a 2 s deadline), replace its code with
/// [`LoadedPlugin::reload`].
///
/// It runs in the host's process, or — loaded with [`Handle::load_plugin_with`] and an
/// [`Isolation`] other than in-process — in a worker process; the methods are the same.
///
/// # Thread safety
///
/// Every method is for the runtime's main thread (the plugin's callbacks run there).
pub struct LoadedPlugin(Where);

enum Where {
    Local(LocalPlugin),
    #[cfg(unix)]
    Worker(crate::isolate::RemotePlugin),
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Where::Local(p) => p.fmt(f),
            #[cfg(unix)]
            Where::Worker(p) => p.fmt(f),
        }
    }
}

/// A plugin loaded into this process.
pub(crate) struct LocalPlugin {
    rt: Handle,
    inst: Arc<Instance>,
    image: Option<Image>,
    path: PathBuf,
    version: String,
    generation: u32,
}

impl fmt::Debug for LocalPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.inst.name)
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// What is loaded, and where it runs.
    pub fn info(&self) -> PluginInfo {
        match &self.0 {
            Where::Local(p) => p.info(),
            #[cfg(unix)]
            Where::Worker(p) => p.info(),
        }
    }

    /// Unloads the plugin: calls its `unload` (a Rust plugin's jobs see cancellation, its
    /// simulations stop), drops its queued work unrun, waits up to `deadline` for its running
    /// calls, then releases the library. No call into the plugin can start after this returns.
    ///
    /// Off the main thread — or from inside the plugin's own main-thread code, such as the host
    /// sink receiving one of its messages — the plugin is closed (its work dropped) but its
    /// `unload` is not called, so its state is never freed, and its image is retired; the
    /// caller itself counts as a straggler. Check [`in_callback`](LoadedPlugin::in_callback)
    /// first and unload after the callback returns (the C API refuses that unload with
    /// `HL_STATUS_REENTRANT`).
    ///
    /// An isolated plugin is unloaded in its worker, and the worker — if it hosts nothing else
    /// — ends within `deadline`: asked to quit, terminated (`SIGTERM`) at three quarters of it,
    /// killed (`SIGKILL`) at its end. `stragglers` is 1 if the worker had to be killed or was
    /// lost.
    pub fn unload(self, deadline: Duration) -> UnloadReport {
        match self.0 {
            Where::Local(p) => p.unload(deadline),
            #[cfg(unix)]
            Where::Worker(mut p) => p.unload(deadline),
        }
    }

    /// Whether the plugin's own main-thread code is running now, below this call on the main
    /// thread's stack: the call comes from inside one of its callbacks (its main-thread work,
    /// its event handler, `load`, `save_state` or `restore_state`), for example from the host
    /// sink receiving a message the plugin emitted there. [`reload`](LoadedPlugin::reload)
    /// is refused then, and [`unload`](LoadedPlugin::unload) cannot run the plugin's `unload`.
    /// Always `false` for an isolated plugin (its code runs in its worker).
    pub fn in_callback(&self) -> bool {
        match &self.0 {
            Where::Local(p) => p.inst.in_main.load(Ordering::Relaxed) > 0,
            #[cfg(unix)]
            Where::Worker(_) => false,
        }
    }

    /// Hot-reloads the plugin from `path` (usually a rebuilt library): loads the new build
    /// from a fresh copy, asks the running instance to save its state, lets its work finish or
    /// cancels it (waiting up to `deadline`), creates the new instance and restores the state
    /// into it, then unloads the old build. The plugin keeps its name and handle. An isolated
    /// plugin is reloaded this way inside its worker.
    ///
    /// # Errors
    ///
    /// If the new build cannot be loaded or cannot restore the state, or the old build's work
    /// did not stop in time, the old build keeps running (its state given back through its
    /// `restore_state`) and the error says why. For an isolated plugin also
    /// [`PluginErrorKind::Worker`]: its worker was lost (or is restarting) before it answered.
    pub fn reload(
        &mut self,
        path: impl AsRef<Path>,
        deadline: Duration,
    ) -> Result<(), PluginError> {
        match &mut self.0 {
            Where::Local(p) => p.reload(path.as_ref(), deadline),
            #[cfg(unix)]
            Where::Worker(p) => {
                p.rt_check(path.as_ref())?;
                p.reload(path.as_ref(), deadline)
            }
        }
    }

    /// Main thread: a checkpoint of the plugin's state, taken without suspending it (`None` if
    /// it saves none). For the worker process, which keeps its plugins in this process.
    #[cfg(unix)]
    pub(crate) fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        match &self.0 {
            Where::Local(p) => p.inst.checkpoint(&p.path),
            Where::Worker(_) => Ok(None),
        }
    }

    /// The plugin's pool tasks, runnable from any thread (`None` if it exports none).
    #[cfg(unix)]
    pub(crate) fn task_runner(&self) -> Option<services::TaskRunner> {
        match &self.0 {
            Where::Local(p) => services::TaskRunner::new(&p.inst),
            Where::Worker(_) => None,
        }
    }

    /// Main thread: restores a state `save_state` gave.
    #[cfg(unix)]
    pub(crate) fn restore_state(&self, bytes: &[u8]) -> Result<(), PluginError> {
        match &self.0 {
            Where::Local(p) => p.inst.restore(&p.path, bytes),
            Where::Worker(_) => Ok(()),
        }
    }
}

impl Handle {
    /// Loads the plugin library at `path` and calls its `load`.
    ///
    /// At most one plugin of a name is loaded per runtime: loading it again returns
    /// [`PluginErrorKind::AlreadyLoaded`] (use [`LoadedPlugin::reload`] to replace its code).
    ///
    /// # Errors
    ///
    /// A [`PluginError`] whose kind says what failed: the file, the symbol, the ABI version,
    /// the descriptor, the name, or the plugin's own `load` (an error or a panic). Nothing of
    /// a plugin that failed to load stays behind.
    ///
    /// # Safety
    ///
    /// None required of the caller, but know that loading runs the library's code: only load
    /// plugins you trust, as with any native plugin.
    pub fn load_plugin(&self, path: impl AsRef<Path>) -> Result<LoadedPlugin, PluginError> {
        let path = path.as_ref();
        self.check_plugin_call(path)?;
        let (image, desc) = open(path, false)?;
        let name = descriptor_text(desc.name);
        let version = descriptor_text(desc.version);
        if !lock(&self.shared().plugins).names.insert(name.clone()) {
            let retire = desc.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE != 0;
            image.release(retire, true);
            return Err(PluginError::new(
                PluginErrorKind::AlreadyLoaded,
                path,
                format!(
                    "a plugin named {name:?} is loaded in this runtime already; reload it instead"
                ),
            ));
        }
        match instantiate(self, desc, &name, path) {
            Ok(inst) => {
                let mut reg = lock(&self.shared().plugins);
                reg.stats.loaded += 1;
                reg.stats.loads += 1;
                drop(reg);
                Ok(LoadedPlugin(Where::Local(LocalPlugin {
                    rt: self.clone(),
                    inst,
                    image: Some(image),
                    path: path.to_path_buf(),
                    version,
                    generation: 0,
                })))
            }
            Err(e) => {
                lock(&self.shared().plugins).names.remove(&name);
                release(self, image, &desc, 0);
                Err(e)
            }
        }
    }

    /// Loads the plugin library at `path` where `options` say: in this process (as
    /// [`load_plugin`](Handle::load_plugin)), in a worker process of its own, or in a named
    /// group's shared worker. An isolated plugin behaves as it would in-process — its host
    /// events are forwarded, its sink messages reach this runtime's sink on the main thread at a
    /// pump — but a crash in its native code ends only its worker: the crash is reported on the
    /// sink (`hostloop/plugin/crashed`) and the worker restarted with the plugin's last saved
    /// state, up to [`LoadOptions::restart_limit`] times (then `hostloop/plugin/down`).
    ///
    /// # Errors
    ///
    /// As [`load_plugin`](Handle::load_plugin), the worker's answer included; and
    /// [`PluginErrorKind::Worker`] when the worker program cannot be started (the message names
    /// the program tried), or was lost before the plugin loaded.
    pub fn load_plugin_with(
        &self,
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<LoadedPlugin, PluginError> {
        let path = path.as_ref();
        match options.isolation {
            Isolation::InProcess => self.load_plugin(path),
            #[cfg(unix)]
            _ => {
                self.check_plugin_call(path)?;
                if self.is_plugin() {
                    return Err(PluginError::new(
                        PluginErrorKind::WrongThread,
                        path,
                        "a plugin cannot start isolated plugins; its host can",
                    ));
                }
                crate::isolate::RemotePlugin::load(self, path, options)
                    .map(|p| LoadedPlugin(Where::Worker(p)))
            }
            #[cfg(not(unix))]
            _ => Err(PluginError::new(
                PluginErrorKind::Worker,
                path,
                "isolated plugins need a Unix host",
            )),
        }
    }

    /// Counters of this runtime's plugin activity.
    pub fn plugin_stats(&self) -> PluginStats {
        let mut stats = lock(&self.shared().plugins).stats;
        stats.images_retained = image::images_retained();
        stats
    }

    pub(crate) fn check_plugin_call(&self, path: &Path) -> Result<(), PluginError> {
        if self.is_shut_down() {
            return Err(PluginError::new(
                PluginErrorKind::ShutDown,
                path,
                "the runtime is shut down",
            ));
        }
        if !self.is_main_thread() {
            return Err(PluginError::new(
                PluginErrorKind::WrongThread,
                path,
                "plugins are loaded, unloaded and reloaded on the main thread",
            ));
        }
        Ok(())
    }
}

/// Creates an instance from a descriptor and runs its `load`; on failure nothing is left.
fn instantiate(
    rt: &Handle,
    desc: hl_plugin_descriptor_t,
    name: &str,
    path: &Path,
) -> Result<Arc<Instance>, PluginError> {
    let inst = Instance::new(rt, desc, name.to_owned());
    match inst.load(path) {
        Ok(()) => {
            inst.subscribe(rt);
            Ok(inst)
        }
        Err(e) => {
            // `unload` is not called for a failed load; its queued work is dropped.
            inst.shut(Instant::now() + DROP_DEADLINE, false);
            Err(e)
        }
    }
}

/// Releases an image after its instance was shut: retired when the plugin asks for it or when
/// calls into it may still be running. Keeps the instance's memory alive for retired images
/// (a straggler may still call its services). A retired image without stragglers may be
/// reused by a later load or reload of the same file.
fn release(rt: &Handle, image: Image, desc: &hl_plugin_descriptor_t, stragglers: usize) -> bool {
    release_held(rt, image, desc, stragglers, 0)
}

/// [`release`] of a shut instance's image: retired (kept mapped, not reused) too while the host
/// still holds leases on its frames (their `release` is code of that image). Leases are not
/// stragglers: they hold no unload or reload up.
fn release_shut(rt: &Handle, image: Image, inst: &Instance, stragglers: usize) -> bool {
    let held = inst.leases.load(Ordering::Acquire);
    release_held(rt, image, &inst.desc, stragglers, held)
}

fn release_held(
    rt: &Handle,
    image: Image,
    desc: &hl_plugin_descriptor_t,
    stragglers: usize,
    held: usize,
) -> bool {
    let retire = stragglers > 0 || held > 0 || desc.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE != 0;
    let retired = image.release(retire, stragglers == 0 && held == 0);
    let mut reg = lock(&rt.shared().plugins);
    if retired {
        reg.stats.images_retired += 1;
    } else {
        reg.stats.images_closed += 1;
    }
    reg.stats.stragglers += stragglers as u64;
    retired
}

/// Keeps a retired image's instance alive for good: code of that image may still run (a
/// straggler, a thread the plugin started) and call its services table, whose `host` pointer is
/// the instance. It holds the runtime only weakly, so it does not keep a freed runtime (its
/// threads and doorbell) alive; its services then answer SHUT_DOWN. A few hundred bytes each.
fn retire(inst: &Arc<Instance>) {
    static RETIRED: Mutex<Vec<Arc<Instance>>> = Mutex::new(Vec::new());
    lock(&RETIRED).push(inst.clone());
}

impl LocalPlugin {
    /// What is loaded.
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.inst.name.clone(),
            version: self.version.clone(),
            path: self.path.clone(),
            generation: self.generation,
            flags: self.inst.desc.flags,
            pending: self.inst.pending(),
            isolation: Isolation::InProcess,
            pid: None,
            restarts: 0,
            crashes: 0,
            last_crash: None,
            down: None,
            saves: 0,
            shared_payloads: 0,
        }
    }

    fn unload(mut self, deadline: Duration) -> UnloadReport {
        self.unload_inner(deadline)
    }

    fn unload_inner(&mut self, deadline: Duration) -> UnloadReport {
        let start = Instant::now();
        let Some(image) = self.image.take() else {
            return UnloadReport::default();
        };
        let inst = self.inst.clone();
        let on_main = self.rt.is_main_thread() && inst.in_main.load(Ordering::Relaxed) == 0;
        let (dropped, stragglers) = inst.shut(start + deadline, on_main);
        let stragglers = if on_main {
            stragglers
        } else {
            stragglers.max(1)
        };
        let retired = release_shut(&self.rt, image, &inst, stragglers);
        if retired {
            retire(&inst);
        }
        let mut reg = lock(&self.rt.shared().plugins);
        reg.names.remove(&inst.name);
        reg.stats.loaded = reg.stats.loaded.saturating_sub(1);
        reg.stats.unloads += 1;
        UnloadReport {
            dropped,
            stragglers,
            retired,
            elapsed: start.elapsed(),
        }
    }

    fn reload(&mut self, path: &Path, deadline: Duration) -> Result<(), PluginError> {
        self.rt.check_plugin_call(path)?;
        let old = self.inst.clone();
        if old.in_main.load(Ordering::Relaxed) > 0 || self.image.is_none() {
            return Err(PluginError::new(
                PluginErrorKind::Reentrant,
                path,
                "a plugin cannot be reloaded from inside its own callbacks",
            ));
        }
        let result = self.reload_inner(path, deadline);
        let mut reg = lock(&self.rt.shared().plugins);
        match &result {
            Ok(()) => {
                reg.stats.reloads += 1;
                reg.stats.loads += 1;
            }
            Err(_) => reg.stats.failed_reloads += 1,
        }
        result
    }

    fn reload_inner(&mut self, path: &Path, deadline: Duration) -> Result<(), PluginError> {
        let start = Instant::now();
        let old = self.inst.clone();
        let (image, desc) = open(path, true)?;
        let name = descriptor_text(desc.name);
        let version = descriptor_text(desc.version);
        if name != old.name {
            release(&self.rt, image, &desc, 0);
            return Err(PluginError::new(
                PluginErrorKind::BadDescriptor,
                path,
                format!("expected plugin {:?}, the library is {name:?}", old.name),
            ));
        }
        let state = match old.save(path) {
            Ok(s) => s,
            Err(e) => {
                release(&self.rt, image, &desc, 0);
                return Err(e);
            }
        };
        // Gives the old build back its state and intake after a failure.
        let revert = |e: PluginError| -> PluginError {
            old.gate.reopen();
            match state.as_deref().map(|s| old.restore(&self.path, s)) {
                Some(Err(again)) => PluginError::new(
                    e.kind,
                    &e.path,
                    format!(
                        "{}; and the old build could not resume: {}",
                        e.reason, again.reason
                    ),
                ),
                _ => e,
            }
        };
        let (_, running) = old.quiesce(start + deadline);
        if running > 0 {
            release(&self.rt, image, &desc, 0);
            return Err(revert(PluginError::new(
                PluginErrorKind::Timeout,
                path,
                format!("{running} calls of the old build were still running at the deadline"),
            )));
        }
        let new = match instantiate(&self.rt, desc, &name, path) {
            Ok(inst) => inst,
            Err(e) => {
                release(&self.rt, image, &desc, 0);
                return Err(revert(e));
            }
        };
        if let Some(bytes) = &state {
            if let Err(e) = new.restore(path, bytes) {
                let (_, stragglers) = new.shut(start + deadline, true);
                release(&self.rt, image, &desc, stragglers);
                return Err(revert(e));
            }
        }
        // Commit: the old build goes, the new one takes its place.
        let (_, stragglers) = old.shut(start + deadline, true);
        if let Some(old_image) = self.image.replace(image) {
            if release_shut(&self.rt, old_image, &old, stragglers) {
                retire(&old);
            }
        }
        self.inst = new;
        self.path = path.to_path_buf();
        self.version = version;
        self.generation += 1;
        Ok(())
    }
}

impl Drop for LocalPlugin {
    fn drop(&mut self) {
        self.unload_inner(DROP_DEADLINE);
    }
}
