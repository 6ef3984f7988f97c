//! The mechanisms the public concepts stand on. Nothing here imports a concept: these modules
//! use only each other, `std` and crossbeam, and the protocols among them are model-checked
//! with loom (`sdk/tests/loom.rs`).

#[cfg(not(loom))]
pub(crate) mod clock;
#[cfg(not(loom))]
pub(crate) mod crc32c;
pub(crate) mod doorbell;
pub mod latest;
pub(crate) mod mainq;
pub(crate) mod panic;
#[cfg(not(loom))]
pub(crate) mod scheduler;
#[cfg(loom)]
pub(crate) mod scheduler {
    pub(crate) mod sleep;
}
#[cfg(not(loom))]
pub(crate) mod stats;
pub(crate) mod sync;
