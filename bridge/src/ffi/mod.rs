//! The exported C functions, one module per header of `include/hostloop/`.

pub mod cache;
pub mod common;
pub mod event;
pub mod farm;
pub(crate) mod guard;
pub(crate) mod handles;
pub mod job;
pub mod plugin;
pub mod pool;
pub mod runtime;
pub mod sink;
