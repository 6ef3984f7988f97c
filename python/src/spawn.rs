//! `Runtime.spawn`: Python callables on the runtime's IO lane, with a cancel token, progress and
//! main-thread callbacks (`hostloop.Task`, `hostloop.TaskContext`, `hostloop.current_task`).
//!
//! The GIL rules here:
//! - the spawned callable is the only Python code of ours that runs off the main thread, and it
//!   runs on an IO-lane thread (`hostloop-io-<i>`), attached to the interpreter;
//! - `on_main`, `on_error` and `on_progress` run inside a job continuation, i.e. inside `pump()`
//!   on the main thread;
//! - no lock of ours is held while Python runs or while the GIL is acquired: the task's state
//!   lock is only taken for moves and reference-count changes, and Python objects replaced
//!   under it are dropped after it is released (a `__del__` may call back into the task);
//! - `Task.result` waits with the GIL released.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::HostloopError;

create_exception!(
    _hostloop,
    Cancelled,
    HostloopError,
    "The task was cancelled (Task.cancel(), or the runtime shut down)."
);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a task ended.
enum Outcome {
    Value(Py<PyAny>),
    Raised(PyErr),
    Cancelled,
    /// It did not complete and has no exception of its own (a bug, or interpreter exit).
    Lost(&'static str),
}

impl Outcome {
    fn clone_ref(&self, py: Python<'_>) -> Outcome {
        match self {
            Outcome::Value(v) => Outcome::Value(v.clone_ref(py)),
            Outcome::Raised(e) => Outcome::Raised(e.clone_ref(py)),
            Outcome::Cancelled => Outcome::Cancelled,
            Outcome::Lost(why) => Outcome::Lost(why),
        }
    }
}

enum Phase {
    Queued,
    Running,
    Done(Outcome),
}

struct State {
    phase: Phase,
    /// `Task.cancel()` was called before the task was done.
    cancel_requested: bool,
}

/// What a task's handle, its job closure and its continuation share.
struct TaskShared {
    state: Mutex<State>,
    done: Condvar,
    name: Option<String>,
    /// The `on_main`/`on_error` continuation ran: later progress deliveries are dropped.
    delivered: AtomicBool,
}

impl TaskShared {
    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("task {n:?}"),
            None => "the task".to_owned(),
        }
    }

    fn cancelled_err(&self) -> PyErr {
        Cancelled::new_err(format!("{} was cancelled", self.label()))
    }

    /// Records the outcome unless the task is already done; returns what was not stored (to
    /// be dropped by the caller once the lock is released).
    fn finish(&self, outcome: Outcome) -> Option<Outcome> {
        let mut st = lock(&self.state);
        if matches!(st.phase, Phase::Done(_)) {
            return Some(outcome);
        }
        let (store, spare) = match outcome {
            // A cancellation requested before the end wins over what the function returned.
            o @ (Outcome::Value(_) | Outcome::Raised(_)) if st.cancel_requested => {
                (Outcome::Cancelled, Some(o))
            }
            o => (o, None),
        };
        st.phase = Phase::Done(store);
        drop(st);
        self.done.notify_all();
        spare
    }

    /// A new reference to the outcome, if the task is done.
    fn outcome(&self, py: Python<'_>) -> Option<Outcome> {
        match &lock(&self.state).phase {
            Phase::Done(o) => Some(o.clone_ref(py)),
            _ => None,
        }
    }

    fn to_result(&self, o: Outcome) -> PyResult<Py<PyAny>> {
        match o {
            Outcome::Value(v) => Ok(v),
            Outcome::Raised(e) => Err(e),
            Outcome::Cancelled => Err(self.cancelled_err()),
            Outcome::Lost(why) => Err(HostloopError::new_err(format!(
                "{} did not complete: {why}",
                self.label()
            ))),
        }
    }
}

/// Resolves the task as cancelled if its closure is dropped before it ran (cancelled while
/// queued, or the runtime shut down), or lost if it never recorded an outcome.
struct Finisher(Arc<TaskShared>);

impl Drop for Finisher {
    fn drop(&mut self) {
        let outcome = match lock(&self.0.state).phase {
            Phase::Queued => Outcome::Cancelled,
            Phase::Running => Outcome::Lost("its function ended without a result (a bug)"),
            Phase::Done(_) => return,
        };
        // No Python object in either outcome: safe without the GIL.
        let _ = self.0.finish(outcome);
    }
}

/// The running job's context, reachable from Python only while the task's function runs.
struct CtxPtr(*const hostloop::JobContext<'static>);
// SAFETY: the pointer is only dereferenced under `CtxSlot`'s lock while it is `Some`, and the
// job closure clears it (taking the same lock) before the `JobContext` it points to goes away.
// `JobContext` is `Sync` (checked below), so using it from another thread is sound.
unsafe impl Send for CtxPtr {}

const _: fn() = || {
    fn sync<T: Sync>() {}
    sync::<hostloop::JobContext<'static>>();
};

#[derive(Default)]
struct CtxSlot(Mutex<Option<CtxPtr>>);

impl CtxSlot {
    fn with<R>(&self, f: impl FnOnce(&hostloop::JobContext<'_>) -> R) -> PyResult<R> {
        let g = lock(&self.0);
        match &*g {
            // SAFETY: see `CtxPtr`.
            Some(p) => Ok(f(unsafe { &*p.0 })),
            None => Err(HostloopError::new_err(
                "the task's function has returned: its TaskContext is no longer usable",
            )),
        }
    }
}

thread_local! {
    /// The context of the task whose function runs on this (IO) thread.
    static CURRENT: RefCell<Option<Py<TaskContext>>> = const { RefCell::new(None) };
}

/// The cancel token and progress reporter of a running task: `hostloop.current_task()` inside
/// the task's function. Usable from any thread while the function runs; afterwards every
/// method raises `HostloopError`.
#[pyclass(frozen, module = "hostloop._hostloop")]
pub(crate) struct TaskContext {
    slot: Arc<CtxSlot>,
    task: Arc<TaskShared>,
    id: u64,
}

#[pymethods]
impl TaskContext {
    /// Whether the task was cancelled (`Task.cancel()`, or the runtime is shutting down).
    #[getter]
    fn cancelled(&self) -> PyResult<bool> {
        self.slot.with(|c| c.is_cancelled())
    }

    /// Raises `hostloop.Cancelled` if the task was cancelled: call it in loops.
    fn check(&self) -> PyResult<()> {
        if self.slot.with(|c| c.is_cancelled())? {
            return Err(self.task.cancelled_err());
        }
        Ok(())
    }

    /// Reports progress: `fraction` from 0 to 1 (clamped), and an optional short message
    /// (kept until replaced). Coalesced: `on_progress` sees the latest report at the next pump.
    #[pyo3(signature = (fraction, message=None))]
    fn progress(&self, fraction: f64, message: Option<&str>) -> PyResult<()> {
        if !fraction.is_finite() {
            return Err(PyValueError::new_err(format!(
                "fraction must be a finite number from 0 to 1, not {fraction}"
            )));
        }
        let f = fraction.clamp(0.0, 1.0) as f32;
        self.slot.with(|c| match message {
            Some(m) => c.progress_with(f, m),
            None => c.progress(f),
        })
    }

    /// The task's name (None if it has none).
    #[getter]
    fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }

    /// The job id of the task (unique within its runtime).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    fn __repr__(&self) -> String {
        format!("<hostloop.TaskContext of {}>", self.task.label())
    }
}

/// The context of the task whose function runs on the calling thread, or None (on any other
/// thread, and outside a task's function).
#[pyfunction]
fn current_task(py: Python<'_>) -> Option<Py<TaskContext>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|t| t.clone_ref(py)))
}

/// A Python callable running (or queued) on the runtime's IO lane; made by `Runtime.spawn`.
#[pyclass(frozen, module = "hostloop._hostloop")]
pub(crate) struct Task {
    shared: Arc<TaskShared>,
    job: hostloop::Job<()>,
}

#[pymethods]
impl Task {
    /// Asks the task to stop. A queued task never runs; a running one sees
    /// `current_task().cancelled` and resolves as cancelled whatever it returns. Returns False
    /// if the task was already done (nothing changes), else True.
    fn cancel(&self) -> bool {
        let mut st = lock(&self.shared.state);
        let was_queued = match st.phase {
            Phase::Done(_) => return false,
            Phase::Queued => true,
            Phase::Running => false,
        };
        st.cancel_requested = true;
        // Under the state lock, so the job's own cancel flag agrees with the outcome.
        self.job.cancel();
        if was_queued {
            st.phase = Phase::Done(Outcome::Cancelled);
            drop(st);
            self.shared.done.notify_all();
        }
        true
    }

    /// Whether the task was cancelled, or asked to be (see `cancel`).
    #[getter]
    fn cancelled(&self) -> bool {
        let st = lock(&self.shared.state);
        st.cancel_requested || matches!(st.phase, Phase::Done(Outcome::Cancelled))
    }

    /// Whether the task is done (returned, raised or was cancelled).
    #[getter]
    fn done(&self) -> bool {
        matches!(lock(&self.shared.state).phase, Phase::Done(_))
    }

    /// "queued", "running", "finished", "failed" or "cancelled".
    #[getter]
    fn status(&self) -> &'static str {
        match &lock(&self.shared.state).phase {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Done(Outcome::Value(_)) => "finished",
            Phase::Done(Outcome::Cancelled) => "cancelled",
            Phase::Done(Outcome::Raised(_) | Outcome::Lost(_)) => "failed",
        }
    }

    /// The latest progress the function reported: `(fraction, message or None)`.
    #[getter]
    fn progress(&self) -> (f64, Option<String>) {
        let p = self.job.progress();
        (p.fraction as f64, p.message)
    }

    /// The task's name (the `name` given to spawn, else the callable's `__qualname__`).
    #[getter]
    fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// Waits up to `timeout_s` seconds (0 polls) with the GIL released and returns the
    /// function's return value; raises the function's exception, `hostloop.Cancelled`, or
    /// `TimeoutError`. Callable again (same value). On the main thread it does not pump: the
    /// task's callbacks still run at a later `pump()`, and a function that waits for the main
    /// thread makes `result` raise `TimeoutError` at its deadline (never a deadlock).
    fn result(&self, py: Python<'_>, timeout_s: f64) -> PyResult<Py<PyAny>> {
        let timeout = crate::duration("timeout_s", timeout_s, 1.0e7)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(o) = self.shared.outcome(py) {
                return self.shared.to_result(o);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PyTimeoutError::new_err(format!(
                    "{} did not finish within {timeout_s} s",
                    self.shared.label()
                )));
            }
            // Bounded steps, so Ctrl-C (a signal) is seen while waiting.
            let step = (deadline - now).min(Duration::from_millis(100));
            let shared = self.shared.clone();
            py.detach(move || {
                let st = lock(&shared.state);
                if !matches!(st.phase, Phase::Done(_)) {
                    let _ = shared.done.wait_timeout(st, step);
                }
            });
            py.check_signals()?;
        }
    }

    fn __repr__(&self) -> String {
        format!("<hostloop.Task {} {}>", self.shared.label(), self.status())
    }
}

fn check_callable(what: &str, cb: Option<Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match cb {
        None => Ok(None),
        Some(cb) if cb.is_none() => Ok(None),
        Some(cb) if cb.is_callable() => Ok(Some(cb.unbind())),
        Some(cb) => Err(PyTypeError::new_err(format!(
            "{what} must be callable or None, not {}",
            cb.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))),
    }
}

/// The callable and its arguments, moved to the IO thread.
struct Call {
    func: Py<PyAny>,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
}

/// The threads running a task's function right now: (task key, thread ident). Changed only by
/// threads attached to the interpreter, so it agrees with what `interrupt_tasks` sees.
static RUNNING: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());

/// Set by `_interrupt_tasks` (interpreter exit): no task function starts any more.
static EXITING: AtomicBool = AtomicBool::new(false);

/// This thread's ident as `threading.get_ident()` gives it (`pthread_self` on POSIX).
fn thread_ident() -> u64 {
    // SAFETY: always safe to call.
    unsafe { libc::pthread_self() as u64 }
}

/// Registers a running task function; removes it when dropped (still attached).
struct Running(usize);

impl Running {
    fn new(task: &Arc<TaskShared>) -> Self {
        let key = Arc::as_ptr(task) as usize;
        lock(&RUNNING).push((key, thread_ident()));
        Running(key)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&RUNNING).retain(|(k, _)| *k != self.0);
    }
}

/// Threads parked for good by `_park` (interpreter exit).
static PARKED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// At interpreter exit, after the runtimes shut down: a task function still running ignored
/// its cancel token, and a thread left running Python while the interpreter finalizes aborts
/// the process when it next wakes (CPython ends such a thread with `pthread_exit`, which
/// cannot unwind through Rust). So, for `grace_s`, `hostloop.Cancelled` is raised in each such
/// function asynchronously (every 50 ms: again if it was caught); for up to `grace_s` more,
/// those still running are sent `park`, an exception type whose constructor calls `_park` and
/// never returns: the thread waits outside Python until the process exits (no `except` clause
/// can skip that: the exception is built before any handler runs). Returns how many functions
/// neither returned nor were parked (one blocked in a C call that never returns).
#[pyfunction]
fn _interrupt_tasks(py: Python<'_>, grace_s: f64, park: Bound<'_, PyAny>) -> PyResult<usize> {
    let grace = crate::duration("grace_s", grace_s, 3600.0)?;
    let park_type = park.cast::<pyo3::types::PyType>()?;
    if !park_type.is_subclass_of::<pyo3::exceptions::PyBaseException>()? {
        return Err(PyTypeError::new_err("park must be an exception type"));
    }
    EXITING.store(true, Ordering::Release);
    let me = thread_ident();
    let start = Instant::now();
    let mut next_raise = start;
    loop {
        let parked = lock(&PARKED).clone();
        let mut idents: Vec<u64> = lock(&RUNNING)
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| *t != me && !parked.contains(t))
            .collect();
        idents.sort_unstable();
        idents.dedup();
        if idents.is_empty() {
            return Ok(0);
        }
        let now = Instant::now();
        if now >= start + 2 * grace {
            return Ok(idents.len());
        }
        if now >= next_raise {
            next_raise = now + Duration::from_millis(50);
            let exc = if now < start + grace {
                py.get_type::<Cancelled>().into_any()
            } else {
                park_type.clone().into_any()
            };
            for t in idents {
                // SAFETY: attached; `exc` is a live exception type. An ident whose thread
                // left Python meanwhile matches no thread state and is ignored.
                unsafe {
                    pyo3::ffi::PyThreadState_SetAsyncExc(t as std::ffi::c_long, exc.as_ptr());
                }
            }
        }
        py.detach(|| std::thread::sleep(Duration::from_millis(5)));
    }
}

/// Interpreter exit only (see `_interrupt_tasks`): releases the GIL and never returns.
#[pyfunction]
fn _park(py: Python<'_>) -> PyResult<()> {
    if !EXITING.load(Ordering::Acquire) {
        return Err(HostloopError::new_err(
            "_park is only for task functions at interpreter exit",
        ));
    }
    lock(&PARKED).push(thread_ident());
    py.detach(|| loop {
        std::thread::park();
    })
}

/// Runs the task's function on this IO thread (attached), with `current_task()` set.
fn run_call(
    call: Call,
    ctx: &hostloop::JobContext<'_>,
    task: &Arc<TaskShared>,
) -> hostloop::Result<()> {
    if EXITING.load(Ordering::Acquire) {
        let _ = task.finish(Outcome::Lost("the interpreter was exiting"));
        return Err(hostloop::Error::Cancelled);
    }
    let attached = Python::try_attach(|py| {
        {
            let mut st = lock(&task.state);
            match st.phase {
                Phase::Queued => st.phase = Phase::Running,
                // Cancelled while queued (the job's own flag may not have been seen yet).
                _ => return Err(hostloop::Error::Cancelled),
            }
        }
        // Declared first, dropped last: registered for as long as this thread runs Python.
        let _running = Running::new(task);
        let slot = Arc::new(CtxSlot::default());
        *lock(&slot.0) = Some(CtxPtr(
            (ctx as *const hostloop::JobContext<'_>).cast::<hostloop::JobContext<'static>>(),
        ));
        let tc = match Py::new(
            py,
            TaskContext {
                slot: slot.clone(),
                task: task.clone(),
                id: ctx.id(),
            },
        ) {
            Ok(tc) => tc,
            Err(e) => {
                *lock(&slot.0) = None;
                let _ = task.finish(Outcome::Raised(e));
                return Err(hostloop::Error::failed("could not create the task context"));
            }
        };
        let previous = CURRENT.with(|c| c.borrow_mut().replace(tc));
        let r = call
            .func
            .bind(py)
            .call(call.args.bind(py), call.kwargs.as_ref().map(|k| k.bind(py)));
        let tc = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
        *lock(&slot.0) = None;
        drop(tc);
        let (outcome, ret) = match r {
            Ok(v) => (Outcome::Value(v.unbind()), Ok(())),
            Err(e) if e.is_instance_of::<Cancelled>(py) => {
                (Outcome::Cancelled, Err(hostloop::Error::Cancelled))
            }
            Err(e) => {
                let msg = format!("Python exception: {e}");
                (Outcome::Raised(e), Err(hostloop::Error::failed(msg)))
            }
        };
        // Dropped here, outside the state lock (a `__del__` may call into the task); the
        // arguments only after the outcome is recorded (a waiter need not wait for them).
        drop(task.finish(outcome));
        drop(call);
        ret
    });
    attached.unwrap_or_else(|| {
        // The interpreter is finalizing: the function cannot run. (The captured objects go to
        // PyO3's deferred reference pool.)
        let _ = task.finish(Outcome::Lost("the interpreter was shutting down"));
        Err(hostloop::Error::Cancelled)
    })
}

/// `Runtime.spawn`: see the method's docstring in lib.rs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    rt: &hostloop::Runtime,
    func: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    kwargs: Option<Bound<'_, PyDict>>,
    on_main: Option<Bound<'_, PyAny>>,
    on_progress: Option<Bound<'_, PyAny>>,
    on_error: Option<Bound<'_, PyAny>>,
    name: Option<String>,
) -> PyResult<Task> {
    if !func.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "spawn needs a callable as its first argument, not {}",
            func.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        )));
    }
    let on_main = check_callable("on_main", on_main)?;
    let on_progress = check_callable("on_progress", on_progress)?;
    let on_error = check_callable("on_error", on_error)?;
    let name = match name {
        Some(n) => Some(n),
        None => func
            .getattr("__qualname__")
            .ok()
            .and_then(|q| q.extract::<String>().ok()),
    };
    let shared = Arc::new(TaskShared {
        state: Mutex::new(State {
            phase: Phase::Queued,
            cancel_requested: false,
        }),
        done: Condvar::new(),
        name: name.clone(),
        delivered: AtomicBool::new(false),
    });
    let call = Call {
        func: func.clone().unbind(),
        args: args.unbind(),
        kwargs: kwargs.map(Bound::unbind),
    };
    let task = shared.clone();
    let finisher = Finisher(shared.clone());
    let mut builder = rt.handle().job().io();
    if let Some(n) = name {
        builder = builder.name(n);
    }
    let job = builder
        .spawn(move |ctx| {
            let _finisher = finisher;
            run_call(call, ctx, &task)
        })
        .map_err(crate::to_pyerr)?;
    // Registered while this thread holds the GIL: the function cannot start (it needs the
    // GIL) before its listeners are in place.
    let cont_shared = shared.clone();
    let fallback = func.unbind();
    // Shared with the continuation, which drops it on the main thread with the GIL held: left
    // to the job, it would go whenever (and on whatever thread) the job is freed.
    let progress_cb = Arc::new(Mutex::new(on_progress));
    let listener = progress_cb.clone();
    let mut job = job.on_main(move |_result, _main| {
        Python::attach(|py| {
            deliver(py, &cont_shared, on_main, on_error, fallback);
            let cb = lock(&progress_cb).take();
            drop(cb);
        });
    });
    if lock(&listener).is_some() {
        let listened = shared.clone();
        job = job.on_progress(move |p, _main| {
            if listened.delivered.load(Ordering::Acquire) {
                return;
            }
            Python::attach(|py| {
                let Some(cb) = lock(&listener).as_ref().map(|cb| cb.clone_ref(py)) else {
                    return;
                };
                if let Err(e) = cb.call1(py, (p.fraction as f64, p.message.clone())) {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            });
        });
    }
    Ok(Task { shared, job })
}

/// The main-thread continuation: `on_main(value)`, `on_error(exc)` (default for a raised
/// exception: `sys.unraisablehook`; a cancellation goes to `on_error` only if it was given).
fn deliver(
    py: Python<'_>,
    shared: &Arc<TaskShared>,
    on_main: Option<Py<PyAny>>,
    on_error: Option<Py<PyAny>>,
    func: Py<PyAny>,
) {
    shared.delivered.store(true, Ordering::Release);
    let outcome = shared.outcome(py).unwrap_or(Outcome::Cancelled);
    let (cb, r) = match outcome {
        Outcome::Value(v) => match &on_main {
            Some(cb) => (cb, cb.call1(py, (v,))),
            None => return,
        },
        Outcome::Cancelled => match &on_error {
            Some(cb) => (cb, cb.call1(py, (shared.cancelled_err().into_value(py),))),
            None => return,
        },
        o @ (Outcome::Raised(_) | Outcome::Lost(_)) => {
            let err = match shared.to_result(o) {
                Err(e) => e,
                Ok(_) => return,
            };
            match &on_error {
                Some(cb) => (cb, cb.call1(py, (err.into_value(py),))),
                None => (&func, Err(err)),
            }
        }
    };
    if let Err(e) = r {
        e.write_unraisable(py, Some(cb.bind(py)));
    }
}

/// Adds the spawn types and `current_task` to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Cancelled", m.py().get_type::<Cancelled>())?;
    m.add_class::<Task>()?;
    m.add_class::<TaskContext>()?;
    m.add_function(wrap_pyfunction!(current_task, m)?)?;
    m.add_function(wrap_pyfunction!(_interrupt_tasks, m)?)?;
    m.add_function(wrap_pyfunction!(_park, m)?)?;
    Ok(())
}
