//! `hostloop/job.h`: background jobs written in C, on the runtime's pool.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::common::*;
use super::guard::{arg, arg_mut, guard, utf8, Failure, UserData};
use super::handles::Registry;
use super::runtime::{hl_runtime_t, live};

/// The opaque job type of the header. Values of `*mut hl_job_t` are registry tokens.
#[derive(Debug)]
pub enum hl_job_t {}

/// What `run` receives: a pointer to the running job's context, valid during `run` only.
#[derive(Debug)]
pub struct hl_job_ctx_t {
    ctx: *const sdk::JobContext<'static>,
}

pub type hl_job_run_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, ctx: *mut hl_job_ctx_t) -> i32>;
pub type hl_job_done_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, status: hl_status_t, code: i32)>;
pub type hl_job_progress_fn = Option<unsafe extern "C" fn(user_data: *mut c_void, fraction: f32)>;

pub const HL_PRIORITY_HIGH: u32 = 0;
pub const HL_PRIORITY_NORMAL: u32 = 1;
pub const HL_PRIORITY_LOW: u32 = 2;
pub const HL_PRIORITY_BACKGROUND: u32 = 3;
pub const HL_LANE_CPU: u32 = 0;
pub const HL_LANE_IO: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hl_job_desc_t {
    pub struct_size: u32,
    pub priority: u32,
    pub lane: u32,
    pub reserved: u32,
    pub name: *const c_char,
    pub run: hl_job_run_fn,
    pub done: hl_job_done_fn,
    pub user_data: *mut c_void,
    pub finalize: hl_finalizer_fn,
    /// Added after `finalize`: read only when `struct_size` covers it.
    pub progress: hl_job_progress_fn,
}

/// The size of a job description from before `progress` (still accepted).
const DESC_V1: usize = std::mem::offset_of!(hl_job_desc_t, progress);

/// Reads the caller's description: all of it, or the fields its `struct_size` covers (an older
/// caller's struct ends before `progress`, which then reads as NULL). Never reads past it.
///
/// # Safety
///
/// `desc` is NULL or points to at least `struct_size` readable bytes, as the header says.
unsafe fn read_desc(desc: *const hl_job_desc_t) -> Result<hl_job_desc_t, Failure> {
    if desc.is_null() {
        return Err(Failure::new(HL_STATUS_NULL_ARG, "desc is NULL"));
    }
    // SAFETY: `struct_size` is the first field, in every version.
    let size = unsafe { desc.cast::<u32>().read_unaligned() } as usize;
    let ours = std::mem::size_of::<hl_job_desc_t>();
    if size >= ours {
        // SAFETY: the caller's struct covers ours.
        return Ok(unsafe { desc.read_unaligned() });
    }
    if size < DESC_V1 {
        return Err(Failure::new(
            HL_STATUS_INVALID_ARG,
            format!("desc->struct_size is {size}, expected {ours} (or {DESC_V1})"),
        ));
    }
    let mut copy = std::mem::MaybeUninit::<hl_job_desc_t>::zeroed();
    // SAFETY: `DESC_V1` bytes are readable (checked above) and `copy` has room for them; the
    // rest stays zero, a NULL `progress`.
    unsafe {
        std::ptr::copy_nonoverlapping(desc.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), DESC_V1);
        Ok(copy.assume_init())
    }
}

/// A job's user data while its callbacks may still run: `done` (or the job's end) takes it
/// out, so a progress report delivered after that finds nothing to call, and the finalizer
/// runs once, when the job is done with it.
type Shared = Arc<std::sync::Mutex<Option<Arc<UserData>>>>;

/// Takes the user data out of its cell when dropped: with the continuation that ran (or was
/// dropped by a shutdown), so the finalizer's timing does not depend on the handle.
struct Release(Shared);

impl Drop for Release {
    fn drop(&mut self) {
        let taken = self.0.lock().map(|mut g| g.take()).unwrap_or(None);
        drop(taken);
    }
}

/// A C job's non-zero return code, carried as the job's error.
#[derive(Debug)]
struct ExitCode(i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run returned {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

pub(crate) struct JobState {
    job: sdk::Job<()>,
}

static JOBS: Registry<JobState> = Registry::new("hl_job_t");

/// The status and code a finished job's result stands for.
fn outcome(r: &sdk::Result<()>) -> (hl_status_t, i32) {
    match r {
        Ok(()) => (HL_STATUS_OK, 0),
        Err(sdk::Error::Cancelled) => (HL_STATUS_CANCELLED, 0),
        Err(sdk::Error::Panicked(_)) => (HL_STATUS_PANIC, 0),
        Err(sdk::Error::Failed(e)) => match e.downcast_ref::<ExitCode>() {
            Some(code) => (HL_STATUS_FAILED, code.0),
            None => (HL_STATUS_FAILED, -1),
        },
        Err(_) => (HL_STATUS_FAILED, -1),
    }
}

/// See `hl_job_spawn` in `hostloop/job.h`.
///
/// # Safety
///
/// `desc` is NULL or valid as the header describes; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_job_spawn(
    rt: *mut hl_runtime_t,
    desc: *const hl_job_desc_t,
    out: *mut *mut hl_job_t,
) -> hl_status_t {
    guard("hl_job_spawn", || {
        let state = live(rt)?;
        // SAFETY: per this function's contract.
        let desc = unsafe { read_desc(desc) }?;
        let run = desc
            .run
            .ok_or_else(|| Failure::new(HL_STATUS_NULL_ARG, "desc->run is NULL"))?;
        let mut builder = state.rt.job();
        builder = match desc.lane {
            HL_LANE_CPU => builder.priority(match desc.priority {
                HL_PRIORITY_HIGH => sdk::Priority::High,
                HL_PRIORITY_NORMAL => sdk::Priority::Normal,
                HL_PRIORITY_LOW => sdk::Priority::Low,
                HL_PRIORITY_BACKGROUND => sdk::Priority::Background,
                p => {
                    return Err(Failure::new(
                        HL_STATUS_INVALID_ARG,
                        format!("unknown priority {p}"),
                    ))
                }
            }),
            1 => builder.io(),
            l => {
                return Err(Failure::new(
                    HL_STATUS_INVALID_ARG,
                    format!("unknown lane {l}"),
                ))
            }
        };
        if !desc.name.is_null() {
            // SAFETY: a non-NULL name is NUL-terminated per the header.
            builder = builder.name(unsafe { utf8(desc.name, "desc->name") }?.to_owned());
        }
        // From here on hostloop owns user_data: it is finalized when the last of `run` and
        // `done` is done with it.
        let ud = Arc::new(UserData::new(desc.user_data, desc.finalize));
        let run_ud = ud.clone();
        let job = builder.spawn(move |ctx| {
            let mut c = hl_job_ctx_t {
                ctx: (ctx as *const sdk::JobContext<'_>).cast(),
            };
            // SAFETY: the host registered `run` for this user_data; `c` points to the context
            // only for the duration of the call, as the header says.
            let code = unsafe { run(run_ud.ptr(), &mut c) };
            drop(run_ud);
            if code == 0 {
                Ok(())
            } else {
                Err(sdk::Error::failed(ExitCode(code)))
            }
        });
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                // Not spawned: the user data stays the caller's, so it must not be finalized.
                if let Ok(ud) = Arc::try_unwrap(ud) {
                    std::mem::forget(ud);
                }
                return Err(e.into());
            }
        };
        let job = if desc.done.is_none() && desc.progress.is_none() {
            drop(ud);
            job
        } else {
            let cell: Shared = Arc::new(std::sync::Mutex::new(Some(ud)));
            let job = match desc.progress {
                None => job,
                Some(progress) => {
                    let cell = cell.clone();
                    job.on_progress(move |p, _main| {
                        let ud = cell.lock().ok().and_then(|g| g.clone());
                        if let Some(ud) = ud {
                            // SAFETY: the host registered `progress` for this user_data, on
                            // the main thread, until `done` has run.
                            unsafe { progress(ud.ptr(), p.fraction) };
                        }
                    })
                }
            };
            let release = Release(cell);
            let done = desc.done;
            job.on_main(move |r, _main| {
                let release = release;
                if let Some(done) = done {
                    let ud = release.0.lock().ok().and_then(|g| g.clone());
                    if let Some(ud) = ud {
                        let (status, code) = outcome(&r);
                        // SAFETY: the host registered `done` for this user_data, on the main
                        // thread.
                        unsafe { done(ud.ptr(), status, code) };
                    }
                }
                drop(release);
            })
        };
        let handle = JOBS.insert(JobState { job });
        if !out.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            *unsafe { arg_mut(out, "out") }? = handle;
        } else {
            // Fire and forget: nobody can free the handle, so do not keep it.
            let _ = JOBS.remove(handle, "job");
        }
        Ok(())
    })
}

/// See `hl_job_cancel` in `hostloop/job.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_job_cancel(job: *const hl_job_t) -> hl_status_t {
    guard("hl_job_cancel", || {
        JOBS.get(job, "job")?.job.cancel();
        Ok(())
    })
}

/// See `hl_job_progress` in `hostloop/job.h`.
///
/// # Safety
///
/// `fraction` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_job_progress(job: *const hl_job_t, fraction: *mut f32) -> hl_status_t {
    guard("hl_job_progress", || {
        let state = JOBS.get(job, "job")?;
        // SAFETY: per this function's contract.
        *unsafe { arg_mut(fraction, "fraction") }? = state.job.progress().fraction;
        Ok(())
    })
}

/// See `hl_job_status` in `hostloop/job.h`.
///
/// # Safety
///
/// `status` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_job_status(
    job: *const hl_job_t,
    status: *mut hl_status_t,
) -> hl_status_t {
    guard("hl_job_status", || {
        let state = JOBS.get(job, "job")?;
        // SAFETY: per this function's contract.
        let out = unsafe { arg_mut(status, "status") }?;
        *out = job_status(state.job.status());
        Ok(())
    })
}

/// A job's status as `hl_job_status` (and `hl_farm_run_status`) report it.
pub(super) fn job_status(status: sdk::JobStatus) -> hl_status_t {
    match status {
        sdk::JobStatus::Finished => HL_STATUS_OK,
        sdk::JobStatus::Failed => HL_STATUS_FAILED,
        sdk::JobStatus::Cancelled => HL_STATUS_CANCELLED,
        sdk::JobStatus::Panicked => HL_STATUS_PANIC,
        _ => HL_STATUS_PENDING,
    }
}

/// See `hl_job_free` in `hostloop/job.h`.
#[unsafe(no_mangle)]
pub extern "C" fn hl_job_free(job: *mut hl_job_t) -> hl_status_t {
    guard("hl_job_free", || {
        JOBS.remove(job, "job")?;
        Ok(())
    })
}

/// The context behind a C job context pointer.
///
/// # Safety
///
/// `ctx` is NULL or the pointer given to a `run` callback that is still running.
unsafe fn context<'a>(ctx: *const hl_job_ctx_t) -> Result<&'a sdk::JobContext<'a>, Failure> {
    // SAFETY: per this function's contract, the context outlives the running callback.
    let c = unsafe { arg(ctx, "ctx") }?;
    // SAFETY: `c.ctx` was made from a live `&JobContext` for the duration of `run`.
    Ok(unsafe { &*c.ctx.cast::<sdk::JobContext<'a>>() })
}

/// See `hl_job_ctx_check` in `hostloop/job.h`.
///
/// # Safety
///
/// `ctx` is NULL or the context of a `run` callback that is running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_job_ctx_check(ctx: *const hl_job_ctx_t) -> hl_status_t {
    guard("hl_job_ctx_check", || {
        // SAFETY: per this function's contract.
        unsafe { context(ctx) }?.check()?;
        Ok(())
    })
}

/// See `hl_job_ctx_progress` in `hostloop/job.h`.
///
/// # Safety
///
/// `ctx` is NULL or the context of a `run` callback that is running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hl_job_ctx_progress(ctx: *mut hl_job_ctx_t, fraction: f32) -> hl_status_t {
    guard("hl_job_ctx_progress", || {
        // SAFETY: per this function's contract.
        unsafe { context(ctx) }?.progress(fraction);
        Ok(())
    })
}
