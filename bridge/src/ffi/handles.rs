//! Opaque handles as never-reused tokens, so stale and double-freed handles are detected.
//!
//! A handle given to C (`hl_runtime_t *`, `hl_job_t *`) is not a pointer to Rust memory but a
//! token: a number from a counter that never repeats, looked up in a registry. A freed handle's
//! token is gone from the registry for good, so using or freeing it again is reported as
//! `HL_STATUS_INVALID_HANDLE` — even after a newer handle was made — and a pointer hostloop never
//! returned is reported the same way. Nothing is ever dereferenced from the C side's value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use once_cell::sync::Lazy;

use super::common::*;
use super::guard::{Failure, FfiResult};

/// A registry of live handles of one kind.
pub(crate) struct Registry<T> {
    kind: &'static str,
    live: Lazy<Mutex<HashMap<u64, Arc<T>>>>,
}

/// Tokens are shared by all kinds, so a job token can never be mistaken for a runtime one.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

impl<T> Registry<T> {
    pub(crate) const fn new(kind: &'static str) -> Self {
        Registry {
            kind,
            live: Lazy::new(|| Mutex::new(HashMap::new())),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<T>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `value` and returns its token as the opaque pointer type `H`.
    pub(crate) fn insert<H>(&self, value: T) -> *mut H {
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        self.map().insert(token, Arc::new(value));
        token as usize as *mut H
    }

    /// The value behind a handle: NULL_ARG for NULL, INVALID_HANDLE for anything not live.
    pub(crate) fn get<H>(&self, handle: *const H, name: &str) -> FfiResult<Arc<T>> {
        if handle.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, format!("{name} is NULL")));
        }
        let token = handle as usize as u64;
        self.map()
            .get(&token)
            .cloned()
            .ok_or_else(|| self.invalid(name))
    }

    /// Removes a handle and returns its value (which the caller then releases).
    pub(crate) fn remove<H>(&self, handle: *mut H, name: &str) -> FfiResult<Arc<T>> {
        if handle.is_null() {
            return Err(Failure::new(HL_STATUS_NULL_ARG, format!("{name} is NULL")));
        }
        let token = handle as usize as u64;
        self.map().remove(&token).ok_or_else(|| self.invalid(name))
    }

    fn invalid(&self, name: &str) -> Failure {
        Failure::new(
            HL_STATUS_INVALID_HANDLE,
            format!(
                "{name} is not a live {}: freed already, or never made by hostloop",
                self.kind
            ),
        )
    }
}
