//! Running simulations away from the host: the headless runner (`hostloop-worker run`), the
//! unit of work a farm schedules.
//!
//! The runner steps a simulation plugin to a step, saving its state (a snapshot a later run, or
//! a host, restores) and appending its frames to a [`cache`](crate::cache) on the way. A long
//! simulation becomes a chain of runs, each restoring the state the previous one saved, so a
//! scheduler can stop one (pre-emption, a time limit) and start it again — elsewhere — without
//! losing more than the steps since its last snapshot. See `hostloop-worker run --help`.

#[cfg(unix)]
pub(crate) mod runner;
