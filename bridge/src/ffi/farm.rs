//! `hostloop/farm.h`: simulation runs on a farm (Slurm), submitted from C as a job of the
//! runtime whose progress and outcome reach the host's main thread at pumps.

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::common::*;
use super::guard::{arg_mut, guard, on_main_thread, utf8, Failure, FfiResult, UserData};
use super::handles::Registry;
use super::runtime::{hl_runtime_t, live};

/// The opaque farm-run type of the header. Values of `*mut hl_farm_run_t` are registry tokens.
#[derive(Debug)]
pub enum hl_farm_run_t {}

/// `hl_farm_progress_fn` (NULL is `None`).
pub type hl_farm_progress_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, fraction: f32, message: *const c_char)>;
/// `hl_farm_done_fn` (NULL is `None`).
pub type hl_farm_done_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, status: hl_status_t, text: *const c_char)>;

/// `hl_farm_spec_t::backend`: a Slurm cluster, driven through its commands.
pub const HL_FARM_SLURM: u32 = 0;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_farm_spec_t {
    pub struct_size: u32,
    pub backend: u32,
    pub worker: *const c_char,
    pub plugin: *const c_char,
    pub dir: *const c_char,
    pub configure: *const c_char,
    pub restore: *const c_char,
    pub restore_step: u64,
    pub steps: u64,
    pub segments: u32,
    pub cpus: u32,
    pub save_every: u64,
    pub cache: u32,
    pub reserved: u32,
    pub slurm_bin_dir: *const c_char,
    pub slurm_partition: *const c_char,
}

struct FarmRunState {
    job: sdk::Job<sdk::farm::FarmOutcome>,
}

static RUNS: Registry<FarmRunState> = Registry::new("hl_farm_run_t");

/// See `hl_farm_spec_init` in `hostloop/farm.h`.
///
/// # Safety
///
/// `spec` is NULL or points to a writable `hl_farm_spec_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_farm_spec_init(spec: *mut hl_farm_spec_t) -> hl_status_t {
    guard("hl_farm_spec_init", || {
        // SAFETY: per this function's contract.
        let spec = unsafe { arg_mut(spec, "spec") }?;
        *spec = hl_farm_spec_t {
            struct_size: std::mem::size_of::<hl_farm_spec_t>() as u32,
            backend: HL_FARM_SLURM,
            worker: std::ptr::null(),
            plugin: std::ptr::null(),
            dir: std::ptr::null(),
            configure: std::ptr::null(),
            restore: std::ptr::null(),
            restore_step: 0,
            steps: 1000,
            segments: 1,
            cpus: 1,
            save_every: 0,
            cache: 1,
            reserved: 0,
            slurm_bin_dir: std::ptr::null(),
            slurm_partition: std::ptr::null(),
        };
        Ok(())
    })
}

/// Reads the caller's spec: INVALID_ARG for one smaller than ours, VERSION_MISMATCH for a
/// larger one whose extra bytes are not all zero (settings this library would ignore).
///
/// # Safety
///
/// `spec` is NULL or points to at least `struct_size` readable bytes, as the header says.
unsafe fn read_spec(spec: *const hl_farm_spec_t) -> FfiResult<hl_farm_spec_t> {
    if spec.is_null() {
        return Err(Failure::new(HL_STATUS_NULL_ARG, "spec is NULL"));
    }
    // SAFETY: `struct_size` is the first field, in every version.
    let theirs = unsafe { spec.cast::<u32>().read_unaligned() } as usize;
    let ours = std::mem::size_of::<hl_farm_spec_t>();
    if theirs < ours {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!("spec->struct_size is {theirs}, expected {ours}: call hl_farm_spec_init"),
        ));
    }
    if theirs > ours {
        // SAFETY: the caller's struct has `theirs` readable bytes.
        let extra =
            unsafe { std::slice::from_raw_parts(spec.cast::<u8>().add(ours), theirs - ours) };
        if extra.iter().any(|&b| b != 0) {
            return Err(Failure::new(
                HL_STATUS_VERSION_MISMATCH,
                format!(
                    "spec is {theirs} bytes with settings this library ({ours} bytes) does not know"
                ),
            ));
        }
    }
    // SAFETY: the caller's struct covers ours (checked above).
    Ok(unsafe { spec.read_unaligned() })
}

/// A path field: NULL_ARG (if required), INVALID_UTF8, INVALID_ARG when empty; relative paths
/// made absolute against the current directory, since the farm's jobs run elsewhere.
///
/// # Safety
///
/// `ptr` is NULL or NUL-terminated.
unsafe fn path_field(ptr: *const c_char, name: &str) -> FfiResult<PathBuf> {
    // SAFETY: per this function's contract.
    let text = unsafe { utf8(ptr, name) }?;
    if text.is_empty() {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!("{name} is empty"),
        ));
    }
    std::path::absolute(text).map_err(|e| {
        Failure::new(
            HL_STATUS_OS,
            format!("{name}: cannot make {text:?} absolute: {e}"),
        )
    })
}

/// An optional path field: `None` for NULL, else as [`path_field`].
///
/// # Safety
///
/// `ptr` is NULL or NUL-terminated.
unsafe fn optional_path(ptr: *const c_char, name: &str) -> FfiResult<Option<PathBuf>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: per this function's contract.
    Ok(Some(unsafe { path_field(ptr, name) }?))
}

/// An optional text field: `None` for NULL.
///
/// # Safety
///
/// `ptr` is NULL or NUL-terminated.
unsafe fn optional_text(ptr: *const c_char, name: &str) -> FfiResult<Option<String>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: per this function's contract.
    Ok(Some(unsafe { utf8(ptr, name) }?.to_owned()))
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(HL_STATUS_INVALID_ARG, message)
}

/// The chain and the backend a caller's spec asks for, every field checked.
///
/// # Safety
///
/// The spec's string fields are NULL or NUL-terminated.
unsafe fn chain_spec(s: &hl_farm_spec_t) -> FfiResult<(sdk::farm::ChainSpec, sdk::farm::Slurm)> {
    if s.backend != HL_FARM_SLURM {
        return Err(invalid(format!(
            "spec->backend is {}: unknown (HL_FARM_SLURM is {HL_FARM_SLURM})",
            s.backend
        )));
    }
    if s.reserved != 0 {
        return Err(invalid("spec->reserved is not 0"));
    }
    // SAFETY: per this function's contract, every string field is NULL or NUL-terminated.
    let (worker, plugin, dir, configure, restore, bin_dir, partition) = unsafe {
        (
            path_field(s.worker, "spec->worker")?,
            path_field(s.plugin, "spec->plugin")?,
            path_field(s.dir, "spec->dir")?,
            optional_text(s.configure, "spec->configure")?,
            optional_path(s.restore, "spec->restore")?,
            optional_path(s.slurm_bin_dir, "spec->slurm_bin_dir")?,
            optional_text(s.slurm_partition, "spec->slurm_partition")?,
        )
    };
    if s.steps == 0 {
        return Err(invalid("spec->steps is 0"));
    }
    if s.segments == 0 {
        return Err(invalid(
            "spec->segments is 0: a run has at least one segment",
        ));
    }
    if u64::from(s.segments) > s.steps {
        return Err(invalid(format!(
            "spec->segments is {}, more than the {} steps",
            s.segments, s.steps
        )));
    }
    if configure.is_some() && restore.is_some() {
        return Err(invalid(
            "spec->configure and spec->restore are both set: a run starts from one or the other",
        ));
    }
    let mut chain = sdk::farm::ChainSpec::new(worker, plugin, dir)
        .steps(s.steps)
        .segments(s.segments)
        .cache(s.cache != 0)
        .cpus(s.cpus.max(1));
    if let Some(text) = configure {
        chain = chain.configure(text);
    }
    if let Some(state) = restore {
        chain = chain.restore(state, s.restore_step);
    }
    if s.save_every != 0 {
        chain = chain.save_every(s.save_every);
    }
    let mut slurm = sdk::farm::Slurm::new();
    if let Some(dir) = bin_dir {
        slurm = slurm.bin_dir(dir);
    }
    if let Some(p) = partition {
        slurm = slurm.partition(p);
    }
    Ok((chain, slurm))
}

/// Text for C: interior NULs (which a path or a message could hold) written as `\0`.
fn c_text(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

/// The status and text `done` receives for a run's result.
fn outcome(r: &sdk::Result<sdk::farm::FarmOutcome>) -> (hl_status_t, CString) {
    match r {
        Ok(o) => (HL_STATUS_OK, c_text(&o.state.to_string_lossy())),
        Err(sdk::Error::Cancelled) => (HL_STATUS_CANCELLED, c_text("the farm run was cancelled")),
        Err(e @ sdk::Error::Panicked(_)) => (HL_STATUS_PANIC, c_text(&e.to_string())),
        Err(e) => (HL_STATUS_FAILED, c_text(&e.to_string())),
    }
}

/// The user data while the run's callbacks may still run: `done` (or the run's end, or a
/// shutdown dropping the continuation) takes it out, so no progress call follows `done` and the
/// finalizer runs exactly once, after it.
type Shared = Arc<Mutex<Option<Arc<UserData>>>>;

/// Takes the user data out of its cell when dropped, with the continuation.
struct Release(Shared);

impl Drop for Release {
    fn drop(&mut self) {
        let taken = self.0.lock().map(|mut g| g.take()).unwrap_or(None);
        drop(taken);
    }
}

/// See `hl_farm_run` in `hostloop/farm.h`.
///
/// # Safety
///
/// `spec` is NULL or valid as the header describes; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_farm_run(
    rt: *mut hl_runtime_t,
    spec: *const hl_farm_spec_t,
    progress: hl_farm_progress_fn,
    done: hl_farm_done_fn,
    user_data: *mut c_void,
    finalize: hl_finalizer_fn,
    out: *mut *mut hl_farm_run_t,
) -> hl_status_t {
    guard("hl_farm_run", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let raw = unsafe { read_spec(spec) }?;
        // SAFETY: the spec's strings are NULL or NUL-terminated per the header.
        let (chain, slurm) = unsafe { chain_spec(&raw) }?;
        on_main_thread(state.rt.handle())?;
        let job = state.rt.handle().run_on_farm(slurm, chain)?;
        // Queued: from here on hostloop owns user_data, finalized once the continuation is
        // done with it (after `done`, or dropped unrun at shutdown).
        let cell: Shared = Arc::new(Mutex::new(Some(Arc::new(UserData::new(
            user_data, finalize,
        )))));
        let job = match progress {
            None => job,
            Some(progress) => {
                let cell = cell.clone();
                job.on_progress(move |p, _main| {
                    let ud = cell.lock().ok().and_then(|g| g.clone());
                    if let Some(ud) = ud {
                        let message = c_text(p.message.as_deref().unwrap_or(""));
                        // SAFETY: the host registered `progress` for this user_data, on the
                        // main thread, until `done` has run; the text lives for the call.
                        unsafe { progress(ud.ptr(), p.fraction, message.as_ptr()) };
                    }
                })
            }
        };
        let release = Release(cell);
        let job = job.on_main(move |r, _main| {
            let release = release;
            // Taken out first: a progress delivery queued behind this finds nothing.
            let ud = release.0.lock().ok().and_then(|mut g| g.take());
            if let (Some(done), Some(ud)) = (done, ud.as_ref()) {
                let (status, text) = outcome(&r);
                // SAFETY: the host registered `done` for this user_data, on the main thread;
                // the text lives for the call.
                unsafe { done(ud.ptr(), status, text.as_ptr()) };
            }
            drop(ud);
            drop(release);
        });
        let handle = RUNS.insert(FarmRunState { job });
        if out.is_null() {
            // Fire and forget: nobody can free the handle, so do not keep it.
            let _ = RUNS.remove(handle, "run");
        } else {
            // SAFETY: non-NULL and writable per the contract.
            *unsafe { arg_mut(out, "out") }? = handle;
        }
        Ok(())
    })
}

/// See `hl_farm_run_cancel` in `hostloop/farm.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_farm_run_cancel(run: *const hl_farm_run_t) -> hl_status_t {
    guard("hl_farm_run_cancel", || {
        RUNS.get(run, "run")?.job.cancel();
        Ok(())
    })
}

/// See `hl_farm_run_progress` in `hostloop/farm.h`.
///
/// # Safety
///
/// `fraction` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_farm_run_progress(
    run: *const hl_farm_run_t,
    fraction: *mut f32,
) -> hl_status_t {
    guard("hl_farm_run_progress", || {
        let state = RUNS.get(run, "run")?;
        // SAFETY: per this function's contract.
        *unsafe { arg_mut(fraction, "fraction") }? = state.job.progress().fraction;
        Ok(())
    })
}

/// See `hl_farm_run_status` in `hostloop/farm.h`.
///
/// # Safety
///
/// `status` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_farm_run_status(
    run: *const hl_farm_run_t,
    status: *mut hl_status_t,
) -> hl_status_t {
    guard("hl_farm_run_status", || {
        let state = RUNS.get(run, "run")?;
        // SAFETY: per this function's contract.
        let out = unsafe { arg_mut(status, "status") }?;
        *out = super::job::job_status(state.job.status());
        Ok(())
    })
}

/// See `hl_farm_run_free` in `hostloop/farm.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_farm_run_free(run: *mut hl_farm_run_t) -> hl_status_t {
    guard("hl_farm_run_free", || {
        RUNS.remove(run, "run")?;
        Ok(())
    })
}
