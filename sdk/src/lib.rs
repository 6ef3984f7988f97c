// The crate map (for contributors; users start at the docs below).
//
// The face: the public concepts, one file (or directory) each, each owning its state and logic.
//   runtime.rs      Builder, Runtime, shutdown. The top: only this file (lib.rs) and the
//                   worker program's body (isolate/worker.rs, itself a host) import it.
//   handle.rs       Handle, and what it says of its runtime (threads, doorbell fd, stats).
//                   Its other methods sit with their concept; handle.rs lists which where.
//   job.rs          jobs: spawn, Job, JobBuilder, JobContext, JobGroup, the latest-job map
//   main_thread.rs  the main-thread queue, posting, pump, run_until, call_on_main, Main
//   stream.rs       StreamSender: bounded streams handled on the main thread
//   sink.rs         the host sink and its payloads (Message, ArrayView, OwnedPayload)
//   event.rs        host events and the subscriber registry
//   sim.rs          simulations: the driver thread, delivery, SimControl
//   parallel.rs     parallel_for / join on the pool
//   snapshot.rs     the versioned, checksummed snapshot format
//   cache.rs        frame caches: append-only frame files, read back by memory map
//   farm/           running simulations away from the host: the headless runner
//                   (runner.rs, `hostloop-worker run`)
//   blob.rs         shared read-only blobs: sealed memfds every plugin and worker maps
//   plugin/         plugins: the Plugin trait and export_plugin! (mod.rs), SimPlugin and
//                   SimTool (sim_tool.rs), the plugin side (guest.rs), the host side
//                   (host/: mod.rs life cycle, services.rs, image.rs, error.rs), and the
//                   unload gate (gate.rs, a mechanism kept beside its only user)
//   isolate/        isolated plugins: LoadOptions and the host's handle (mod.rs), the frames
//                   (wire.rs), shared-memory regions for large payloads (shm.rs), the host's
//                   thread owning the worker processes (supervisor.rs), and the worker process
//                   itself (worker.rs, run by `hostloop-worker`)
//   abi.rs          the C ABI types shared by the bridge and plugins (statuses, event, sink,
//                   plugin structs) and their conversions
//   error.rs        Error, Result
//
// The seam: where work runs, chosen once per runtime and matched only in backend/mod.rs.
//   backend/local.rs   this process's pool (the scheduler) and its threads
//   backend/proxy.rs   a plugin's runtime: everything goes to its host's services table
//   shared.rs          Shared: one field per concept's state, plus the life cycle
//
// The mechanisms (internal/): they import only each other, std and crossbeam, never a
// concept, and their protocols are model-checked with loom (sdk/tests/loom.rs).
//   internal/scheduler/  work-stealing pool, generic over its work type; sleep.rs: parking
//   internal/mainq.rs    the main queue's intrusive list and the doorbell's park protocol
//   internal/doorbell.rs the wake-up fd (eventfd/pipe + request_pump)
//   internal/latest.rs   the latest-value triple buffer (public as hostloop::latest)
//   internal/stats.rs    counters and the public Stats types
//   internal/sync.rs     std or loom primitives, poison-free lock
//   internal/panic.rs    the catch at every boundary, and the quiet panic hook
//
// Imports run downward: runtime -> handle/concepts -> shared -> backend -> internal. The
// concepts and shared.rs refer to each other (Shared holds each concept's state; each
// concept's logic takes &Shared or &Handle), which is the one circle left, and it does not
// pass through runtime.rs or internal/.

//! # hostloop
//!
//! Run heavy work off a host application's main thread — simulations, cache loads, exports — and
//! apply the results back on the main thread within a time budget, with no lost wake-ups, no
//! stalls and no crashes.
//!
//! 3D/DCC applications (Maya, Houdini, Blender, Nuke, a studio's own viewer) may only call their
//! APIs from the main thread. A [`Runtime`] gives them a work-stealing pool for jobs, an IO lane
//! for blocking work, and a main-thread queue that the host drains with [`Handle::pump`] from its
//! event loop, woken by a file descriptor ([`Handle::doorbell_fd`]) or a callback
//! ([`Builder::request_pump`]).
//!
//! ## Where to start
//!
//! | you are | start at |
//! |---|---|
//! | a host integrator, in Rust | [`Runtime`], [`Handle::pump`], [`Handle::doorbell_fd`], the loop below |
//! | a host integrator, in C or C++ | `include/hostloop.h` (one header per concept under `include/hostloop/`) and `include/hostloop.hpp`, in the repository; the README's C example |
//! | a plugin author | [`plugin`]: the [`Plugin`](plugin::Plugin) trait, [`export_plugin!`], and [`SimPlugin`](plugin::SimPlugin) for a simulation tool; `examples/plugin-template` to copy |
//! | running a tool in its own process | [`plugin::LoadOptions`] (isolation), [`Handle::task_pool`] (a process pool) |
//! | writing a simulation | [`sim`]: [`Simulation`], [`Handle::simulate`], [`SimOptions`]; [`snapshot`] for its saved state |
//! | keeping a simulation's frames on disk | [`cache`]: [`CacheWriter`](cache::CacheWriter) appends frames, [`Cache`](cache::Cache) reads them back by memory map |
//!
//! ## Which spawn
//!
//! | call | runs on | use it for |
//! |---|---|---|
//! | [`Handle::spawn`] | a pool worker | CPU work: a solve, a mesh rebuild, a parse |
//! | [`Handle::spawn_with`] | a pool worker, at a [`Priority`] | the same, ahead of (or behind) other work |
//! | [`Handle::spawn_io`] | the IO lane | blocking work: files, sockets, a download — it never takes a CPU worker |
//! | [`Handle::spawn_latest`] | a pool worker | re-evaluation on every edit: a newer job with the same key cancels the older, whose result never lands |
//! | [`Handle::job`] | as configured | any of the above with options: a name, a [`JobGroup`], a key, the IO lane |
//!
//! Each returns a [`Job`]: [`Job::on_main`] runs its result on the main thread,
//! [`Job::on_progress`] its coalesced progress, [`Job::cancel`] stops it at its next check.
//!
//! ## A host loop
//!
//! ```
//! use std::time::Duration;
//!
//! let rt = hostloop::Runtime::builder().workers(2).build()?;
//! let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
//!
//! // Heavy work on a worker; the continuation runs on the main thread, at a pump.
//! let flag = done.clone();
//! rt.spawn(|ctx| {
//!     let mut total = 0u64;
//!     for i in 0..1_000_000u64 {
//!         if i % 4096 == 0 {
//!             ctx.check()?; // cancellation point
//!             ctx.progress(i as f32 / 1e6);
//!         }
//!         total += i;
//!     }
//!     Ok(total)
//! })?
//! .on_main(move |total, _main| {
//!     // Safe to call host APIs here.
//!     println!("total = {}", total.unwrap());
//!     flag.store(true, std::sync::atomic::Ordering::Release);
//! });
//!
//! // A host with an event loop watches `rt.doorbell_fd()` (a Qt `QSocketNotifier`, a GLib
//! // `g_unix_fd_add`, its own `poll`) and calls `rt.pump(budget)` when it is readable; the fd
//! // rings once per batch of work, so the host sleeps while there is none. A host without a
//! // loop of its own (a batch tool, a test) lets `run_until` do exactly that: it sleeps on the
//! // doorbell and pumps when it rings.
//! let budget = Duration::from_millis(2);
//! let report = rt.run_until(
//!     || done.load(std::sync::atomic::Ordering::Acquire),
//!     budget,
//!     Duration::from_secs(60),
//! )?;
//! assert!(report.finished);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads
//!
//! The thread that builds the runtime is the *main thread*. [`Handle::pump`] runs only there;
//! everything else may be called from any thread. The main thread never blocks on a job:
//! [`Job::wait_timeout`] returns [`Error::WrongThread`] there. Every boundary where user code
//! runs (jobs, main-thread items, stream handlers, the `request_pump` callback) catches panics.
//!
//! ## Panics
//!
//! A panic caught at one of those boundaries keeps its message ([`Error::Panicked`], the
//! `*_panicked` counters of [`Stats`]) but prints nothing on the host's stderr, even with
//! `RUST_BACKTRACE=1`: the first runtime built (or the first boundary crossed) installs a
//! process-wide panic hook that is silent for panics inside a boundary and hands every other
//! panic to the hook installed before it, so panics elsewhere print as usual. Set
//! `HOSTLOOP_PANIC_BACKTRACE=1` in the environment (read once, at that moment) to keep the
//! previous hook's report for caught panics too. A hook the program sets later replaces
//! hostloop's. A panic inside `parallel_for` is resumed in its caller and judged as the
//! caller's: printed unless the caller itself runs inside a boundary.

#[cfg(not(loom))]
pub mod abi;
#[cfg(not(loom))]
mod backend;
#[cfg(not(loom))]
mod blob;
#[cfg(not(loom))]
pub mod cache;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
pub mod farm;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod isolate;
#[cfg(not(loom))]
mod job;
#[cfg(not(loom))]
mod main_thread;
#[cfg(not(loom))]
mod parallel;
#[cfg(not(loom))]
pub mod plugin;
#[cfg(loom)]
mod plugin {
    pub(crate) mod gate;
}
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod shared;
#[cfg(not(loom))]
pub mod sim;
#[cfg(not(loom))]
mod sink;
#[cfg(not(loom))]
pub mod snapshot;
#[cfg(not(loom))]
mod stream;

mod internal;

pub use crate::internal::latest;
/// The latest-value buffer under its former name; use [`latest`](crate::latest).
#[doc(hidden)]
pub use crate::internal::latest as frames;

#[cfg(not(loom))]
pub use crate::{
    blob::Blob,
    error::{Error, Result},
    event::{Event, EventFilter, EventKind, Subscription},
    handle::Handle,
    internal::stats::{QueueDepths, Stats, WorkerStats, PUMP_WINDOW},
    job::{Job, JobBuilder, JobContext, JobGroup, JobStatus, Priority, Progress},
    main_thread::{Main, PumpReport, RunReport, Step},
    runtime::{Builder, Runtime, ShutdownReport, Straggler, MAX_WORKERS},
    sim::{
        Delivery, EveryStep, FrameInfo, Schedule, SimControl, SimOptions, Simulation, StepContext,
        Thin,
    },
    sink::{ArrayView, ElemType, Element, Lease, Message, OwnedPayload, Payload, Shared, Sink},
    snapshot::{SnapshotError, SnapshotReader, SnapshotWriter},
    stream::{StreamSender, TrySendError},
};

/// The `hostloop-worker` program's body (`worker/src/main.rs` is only its entry point).
#[cfg(all(unix, not(loom)))]
#[doc(hidden)]
pub use crate::isolate::worker::worker_main as isolate_worker_main;

/// The `hostloop-worker run` subcommand's body: `args` are the arguments after `run`.
#[cfg(all(unix, not(loom)))]
#[doc(hidden)]
pub use crate::farm::runner::runner_main as farm_runner_main;

/// The `hostloop-worker openjd` subcommand's body: `args` are the arguments after `openjd`.
#[cfg(not(loom))]
#[doc(hidden)]
pub use crate::farm::openjd::openjd_main as farm_openjd_main;

/// The wake-up protocols, exposed only to the loom model checks (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_models {
    pub use crate::internal::doorbell::Rings;
    pub use crate::internal::latest::{latest, LatestReader, LatestWriter};
    pub use crate::internal::mainq::{Link, Peek, Queue};
    pub use crate::internal::scheduler::sleep::{Sleep, Sleepy};
    pub use crate::plugin::gate::{Gate, Pass};
}

/// The README's Rust example is compiled as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
