//! Plugins: tools built as shared libraries that a host loads, unloads and hot-reloads while it
//! keeps running.
//!
//! # Writing a plugin
//!
//! A plugin is a `cdylib` crate that implements [`Plugin`] and exports it with
//! [`export_plugin!`](crate::export_plugin). Inside it the whole `hostloop` API works as in a
//! host — [`Handle::spawn`], [`Job::on_main`](crate::Job::on_main), [`Handle::post`],
//! [`Handle::simulate`], events, the sink — but nothing runs on threads of the plugin's own: jobs
//! and main-thread work go to the host's runtime through the services table of
//! `include/hostloop_plugin.h`. All plugins in a process share that one pool.
//!
//! ```no_run
//! use hostloop::plugin::{Plugin, PluginContext};
//! use hostloop::{Event, Handle, Main, Result, SnapshotReader, SnapshotWriter};
//!
//! pub struct Counter {
//!     rt: Handle,
//!     count: u64,
//! }
//!
//! impl Plugin for Counter {
//!     const NAME: &'static str = "counter";
//!     const VERSION: &'static str = "1.0.0";
//!
//!     fn load(ctx: &PluginContext) -> Result<Self> {
//!         Ok(Counter { rt: ctx.handle().clone(), count: 0 })
//!     }
//!
//!     fn event(&mut self, event: &Event, _main: &mut Main<'_>) {
//!         if let Event::FrameChanged { .. } = event {
//!             self.count += 1;
//!             // Heavy work goes to the host's pool; the result comes back at a pump.
//!             let n = self.count;
//!             let _ = self.rt.spawn(move |_| Ok(n * n)).map(|job| {
//!                 job.on_main(|r, main| {
//!                     let _ = main.emit("counter/square", hostloop::Payload::Bytes(
//!                         &r.unwrap_or(0).to_le_bytes(),
//!                     ));
//!                 })
//!             });
//!         }
//!     }
//!
//!     fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
//!         out.u64(self.count);
//!         Ok(())
//!     }
//!
//!     fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
//!         self.count = input.u64().map_err(hostloop::Error::failed)?;
//!         Ok(())
//!     }
//! }
//!
//! hostloop::export_plugin!(Counter);
//! ```
//!
//! # A plugin that runs a simulation
//!
//! Implement [`SimTool`] on the tool's configuration (its own `key=value` settings, how to
//! build the simulation, what each frame sends) and export [`SimPlugin`]`<Config>`: the plugin
//! — configure and reset events, playback, rebuilds on a worker, errors, hot reload with state
//! — comes with it. Underneath, [`SimSlot`] holds a plugin's running simulation: it rebuilds it on a worker when the host
//! sends a new configuration (so making a million agents never stalls the host's frame), drops
//! the frames of the one it replaces, reports failed steps on `<topic>/error`, and saves and
//! resumes it across a hot reload. [`SimSettings`] parses the settings every simulation has
//! (`delivery`, `rate`, `playing`, `lockstep`) from the host's `key=value` text. The
//! `particles` and `crowd` plugins in `examples/` are built on both.
//!
//! # Loading plugins
//!
//! C and C++ hosts use `hl_plugin_load`, `hl_plugin_unload`, `hl_plugin_reload` and
//! `hl_plugin_info` (`include/hostloop/plugin.h`); Rust hosts use [`Handle::load_plugin`] and
//! [`LoadedPlugin`]. Both are the same code.
//!
//! # Safety
//!
//! Loading a library runs its initialisers, and calling its entry symbol runs its code: a
//! plugin is trusted native code, as in every DCC host. What hostloop guarantees is the
//! boundary: panics are caught on both sides, every triple is called or dropped exactly once,
//! and after [`LoadedPlugin::unload`] returns no call into the plugin's code can start.
//!
//! # Thread safety
//!
//! Loading, unloading, reloading and events happen on the host's main thread (the runtime's);
//! a plugin's jobs run on the host's workers, its main-thread work at the host's pumps.
//!
//! # Platform-specific behaviour
//!
//! A Rust `cdylib` cannot be `dlclose`d safely on glibc: its standard library registers
//! thread-local destructors on the host's threads. Plugins built with
//! [`export_plugin!`](crate::export_plugin) therefore set `HL_PLUGIN_FLAG_RETAIN_IMAGE`, and
//! unloading *retires* their image — it stays mapped, unused, and is counted in
//! [`PluginStats::images_retired`]. Loading the same unchanged file again reuses the retired
//! image, so a load/unload cycle costs only the retired instance's bookkeeping (under 10 KiB).
//! C plugins without the flag are really unloaded.
//!
//! A hot reload loads the new build from a fresh copy, in a `hostloop-plugins-<pid>` directory
//! of the temporary directory that is removed again as soon as the copy is mapped (the copy
//! itself is deleted then too). Once retired, that copy stays mapped for good; it is reused
//! for any later load or reload of the same build — known by its content (length and a
//! 128-bit digest), not by its file, since a rebuild writes a new file each time. So the mapped
//! cost grows with the number of distinct builds retired, not with the number of reloads:
//!
//! - Going back and forth between builds (two or three builds rebuilt at one path, undoing a
//!   change) maps each build once. In the tests, 200 reloads between three builds and 200
//!   load/unload cycles of two, each with a simulation playing, mapped no image and opened no
//!   file beyond the first cycles, and grew resident memory by 0–13 KiB per cycle (the
//!   retired instance's bookkeeping).
//! - A reload to a build never seen before maps one more image for the life of the process:
//!   the resident part of the library (about 0.5 MiB for a small plugin built in release
//!   mode; 1.7–2.4 MiB per build for the particles example built in debug mode, a 25 MiB
//!   file). There is no limit: [`PluginStats::images_retained`] counts these images in the
//!   process (all runtimes together). A tool developer who rebuilds all day restarts the host
//!   now and then, or loads the plugin isolated ([`Isolation`]): its images then live in its
//!   worker process and go with it when the plugin is unloaded (a worker that hosts nothing
//!   else ends then).
//!
//! A copy retired with stragglers is never reused. Identifying a build reads the file once;
//! reloading a file unchanged since (same inode, length and modification time) does not read
//! it again.

/// The C ABI types, now at [`crate::abi`]; kept here so existing paths still resolve.
#[doc(hidden)]
pub use crate::abi;
pub(crate) mod gate;
pub(crate) mod guest;
pub(crate) mod host;
pub(crate) mod sim_tool;

#[cfg(unix)]
pub use crate::isolate::pool::{Task, TaskError, TaskPool, TaskResult};
pub use host::{
    Isolation, LoadOptions, LoadedPlugin, PluginError, PluginErrorKind, PluginInfo, PluginStats,
    UnloadReport,
};
pub use sim_tool::{count_setting, settings_pairs, SimPlugin, SimSettings, SimSlot, SimTool};

use crate::error::Result;
use crate::event::Event;
use crate::handle::Handle;
use crate::main_thread::Main;
use crate::snapshot::{SnapshotReader, SnapshotWriter};

/// What a running pool task may ask of its pool: its plugin's runtime (for the host's blobs),
/// whether it was cancelled, and to report progress.
pub struct TaskContext<'a> {
    pub(crate) handle: &'a Handle,
    pub(crate) ctx: &'a crate::abi::hl_task_ctx_t,
}

impl std::fmt::Debug for TaskContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext").finish_non_exhaustive()
    }
}

impl TaskContext<'_> {
    /// The plugin's runtime: [`Handle::blob`] reads the host's blobs.
    pub fn handle(&self) -> &Handle {
        self.handle
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: the pool's `[any-thread]` function with its own context.
        self.ctx
            .cancelled
            .is_some_and(|f| unsafe { f(self.ctx.ctx) } != 0)
    }

    /// A cancellation point: `Err(Error::Cancelled)` once the task is cancelled.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`](crate::Error::Cancelled) when cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports progress in [0, 1] (delivered to the submitter on its main thread).
    pub fn progress(&self, fraction: f32) {
        if let Some(f) = self.ctx.progress {
            // SAFETY: the pool's `[any-thread]` function with its own context.
            unsafe { f(self.ctx.ctx, fraction.clamp(0.0, 1.0)) };
        }
    }
}

/// A tool plugin. Implement it on the plugin's state and export it with
/// [`export_plugin!`](crate::export_plugin). Every method runs on the host's main thread.
pub trait Plugin: Sized + 'static {
    /// The plugin's name: one instance per name per runtime. Also the kind of its saved state.
    const NAME: &'static str;
    /// The plugin's version, shown by `hl_plugin_info`.
    const VERSION: &'static str;
    /// The layout version of [`save_state`](Plugin::save_state)'s bytes. A build restores state
    /// of this version or older (see [`SnapshotReader::version`]).
    const STATE_VERSION: u32 = 1;

    /// Creates the plugin. Keep `ctx.handle()` to spawn jobs and post to the main thread.
    ///
    /// # Errors
    ///
    /// Any error: the load fails with `HL_STATUS_FAILED` and the error's text. A panic fails it
    /// with `HL_STATUS_PANIC`.
    fn load(ctx: &PluginContext) -> Result<Self>;

    /// A host event (frame changed, scene saved, custom topics...).
    fn event(&mut self, event: &Event, main: &mut Main<'_>) {
        let _ = (event, main);
    }

    /// Saves the state for a hot reload and suspends the plugin: start no new work (pause
    /// simulations) until [`restore_state`](Plugin::restore_state) or unload. The default
    /// saves nothing, so a reload starts the new build fresh.
    ///
    /// # Errors
    ///
    /// An error abandons the reload; the plugin keeps running.
    fn save_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// Saves the state *without* suspending the plugin: a checkpoint, taken every
    /// [`LoadOptions::save_interval`] from a plugin isolated in a worker process, to restore
    /// into a restarted worker after a crash (through [`restore_state`](Plugin::restore_state),
    /// so write the same format). The default is [`save_state`](Plugin::save_state), right for
    /// a plugin whose `save_state` does not stop anything; override it when it does (as
    /// [`SimPlugin`] does: its checkpoint snapshots the simulation at a step boundary and lets
    /// it play on).
    ///
    /// # Errors
    ///
    /// An error keeps the previous checkpoint.
    fn checkpoint_state(&mut self, out: &mut SnapshotWriter) -> Result<()> {
        self.save_state(out)
    }

    /// Runs the task `name` for a process pool ([`Handle::task_pool`]): a pure function of
    /// `input` (and of the host's blobs, through `ctx.handle()`), run in a worker process on a
    /// thread of its own — not the main thread, and several at once, so it takes no `self`.
    /// Call [`TaskContext::check`] at intervals: a cancelled task should return its error. The
    /// default has no tasks.
    ///
    /// # Errors
    ///
    /// Any error fails the task with its text; a panic fails it too. A crash of the process
    /// (a segfault in a native kernel) is retried once on a fresh worker, then the task fails
    /// as poisoned.
    fn task(ctx: &TaskContext<'_>, name: &str, input: &[u8]) -> Result<Vec<u8>> {
        let _ = (ctx, input);
        Err(crate::Error::failed(format!(
            "this plugin has no task {name:?}"
        )))
    }

    /// Replaces the state with saved bytes and resumes. Called on a new build right after
    /// [`load`](Plugin::load) during a reload — or on the old build with its own bytes when
    /// the reload failed.
    ///
    /// # Errors
    ///
    /// An error fails the reload (the old build keeps running).
    fn restore_state(&mut self, input: &mut SnapshotReader<'_>) -> Result<()> {
        let _ = input;
        Ok(())
    }

    /// Called before the plugin is dropped at unload. The runtime is already closing: jobs
    /// see cancellation and new ones are refused.
    fn unload(&mut self) {}
}

/// What a plugin receives at load.
#[derive(Debug)]
pub struct PluginContext {
    pub(crate) handle: Handle,
}

impl PluginContext {
    /// The runtime, as the plugin sees it: the host's pool and main thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Exports a [`Plugin`] as the `hostloop_plugin_entry` symbol of a `cdylib`.
///
/// ```ignore
/// hostloop::export_plugin!(MyTool);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The plugin's entry point (`hostloop_plugin.h`).
        #[unsafe(no_mangle)]
        pub extern "C" fn hostloop_plugin_entry() -> *const $crate::abi::hl_plugin_descriptor_t {
            static DESCRIPTOR: ::std::sync::OnceLock<$crate::abi::hl_plugin_descriptor_t> =
                ::std::sync::OnceLock::new();
            DESCRIPTOR.get_or_init($crate::plugin::__export::descriptor::<$plugin>)
        }
    };
}

#[doc(hidden)]
pub mod __export {
    use super::{guest, Plugin};
    use crate::abi::*;

    /// The descriptor of `P` (built once per image by `export_plugin!`).
    pub fn descriptor<P: Plugin>() -> hl_plugin_descriptor_t {
        let c = |s: &str| {
            std::ffi::CString::new(s.replace('\0', ""))
                .unwrap_or_default()
                .into_raw()
                .cast_const()
        };
        hl_plugin_descriptor_t {
            struct_size: std::mem::size_of::<hl_plugin_descriptor_t>() as u32,
            abi_version: HL_PLUGIN_ABI_VERSION,
            flags: HL_PLUGIN_FLAG_RETAIN_IMAGE,
            reserved: 0,
            // Leaked on purpose: once per image, and the descriptor is static.
            name: c(P::NAME),
            version: c(P::VERSION),
            load: Some(guest::load::<P>),
            unload: Some(guest::unload::<P>),
            event: Some(guest::event::<P>),
            save_state: Some(guest::save_state::<P>),
            restore_state: Some(guest::restore_state::<P>),
            checkpoint_state: Some(guest::checkpoint_state::<P>),
            run_task: Some(guest::run_task::<P>),
        }
    }
}
