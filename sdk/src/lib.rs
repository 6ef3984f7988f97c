//! # hostloop
//!
//! Run heavy work off a host application's main thread — simulations, cache loads, exports — and
//! apply the results back on the main thread within a time budget, with no lost wake-ups, no
//! stalls and no crashes.
//!
//! 3D/DCC applications (Maya, Houdini, Blender, Nuke, a studio's own viewer) may only call their
//! APIs from the main thread. A [`Runtime`] gives them a work-stealing pool for jobs, an IO lane
//! for blocking work, and a main-thread queue that the host drains with [`Handle::pump`] from its
//! idle callback, woken by a file descriptor ([`Handle::doorbell_fd`]) or a callback
//! ([`Builder::request_pump`]).
//!
//! ```
//! use std::time::Duration;
//!
//! let rt = hostloop::Runtime::builder().workers(2).build()?;
//!
//! // Heavy work on a worker; the continuation runs on the main thread, at a pump.
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
//! .on_main(|total, _main| {
//!     // Safe to call host APIs here.
//!     println!("total = {}", total.unwrap());
//! });
//!
//! // The host's idle callback (or its wake fd's handler):
//! while rt.stats().jobs_finished < 1 || rt.stats().queued.main > 0 {
//!     let report = rt.pump(Duration::from_millis(2))?;
//!     # let _ = report;
//!     # std::thread::yield_now();
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads
//!
//! The thread that builds the runtime is the *main thread*. [`Handle::pump`] runs only there;
//! everything else may be called from any thread. The main thread never blocks on a job:
//! [`Job::wait_timeout`] returns [`Error::WrongThread`] there. Every boundary where user code
//! runs (jobs, main-thread items, stream handlers, the `request_pump` callback) catches panics.

#[cfg(not(loom))]
pub mod abi;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod event;
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
    error::{Error, Result},
    event::{Event, EventFilter, EventKind, Subscription},
    internal::stats::{QueueDepths, Stats, WorkerStats, PUMP_WINDOW},
    job::{Job, JobBuilder, JobContext, JobGroup, JobStatus, Priority, Progress},
    main_thread::{Main, PumpReport, RunReport, Step},
    runtime::{Builder, Handle, Runtime, ShutdownReport, Straggler},
    sim::{
        Delivery, EveryStep, FrameInfo, Schedule, SimControl, SimOptions, Simulation, StepContext,
        Thin,
    },
    sink::{ArrayView, ElemType, Element, Message, OwnedPayload, Payload, Sink},
    snapshot::{SnapshotError, SnapshotReader, SnapshotWriter},
    stream::{StreamSender, TrySendError},
};

/// The wake-up protocols, exposed only to the loom model checks (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_models {
    pub use crate::internal::doorbell::Coalescer;
    pub use crate::internal::latest::{latest, LatestReader, LatestWriter};
    pub use crate::internal::scheduler::sleep::{Sleep, Sleepy};
    pub use crate::plugin::gate::{Gate, Pass};
}

/// The README's Rust example is compiled as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
