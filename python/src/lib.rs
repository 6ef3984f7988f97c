//! Python bindings for hostloop (`hostloop._hostloop`): runtime, pump, wake fd, the sink (frame
//! arrays lent without a copy), host events, plugins, stats, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod spawn;

create_exception!(
    _hostloop,
    HostloopError,
    PyException,
    "A hostloop call failed."
);
create_exception!(
    _hostloop,
    ShutDown,
    HostloopError,
    "The runtime is shut down."
);

fn to_pyerr(e: hostloop::Error) -> PyErr {
    match e {
        hostloop::Error::ShutDown => ShutDown::new_err("the runtime is shut down"),
        hostloop::Error::InvalidArgument(w) => {
            PyValueError::new_err(format!("invalid argument: {w}"))
        }
        other => HostloopError::new_err(other.to_string()),
    }
}

fn duration(what: &str, secs: f64, max: f64) -> PyResult<Duration> {
    if !secs.is_finite() || secs < 0.0 || secs > max {
        return Err(PyValueError::new_err(format!(
            "{what} must be a finite number between 0 and {max}, not {secs:?}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A pump budget given in milliseconds: finite, > 0 and at most a minute.
fn budget(budget_ms: f64) -> PyResult<Duration> {
    if !budget_ms.is_finite() || budget_ms <= 0.0 || budget_ms > 60_000.0 {
        return Err(PyValueError::new_err(format!(
            "budget_ms must be a finite number of milliseconds, > 0 and at most 60000, not {budget_ms:?}"
        )));
    }
    Ok(Duration::from_secs_f64(budget_ms / 1000.0))
}

/// Whose memory an [`Array`] shows.
enum Owner {
    /// hostloop's own memory, kept past the sink call by a lease (no copy).
    Lent(Arc<hostloop::Lease>),
    /// A copy (the payload could not be lent: the producer only borrowed it for the call).
    Copied(Py<PyBytes>),
}

/// A typed array delivered to the sink.
///
/// Valid inside the sink callback: `memoryview()`, `numpy.asarray(arr)` and `tobytes()` work
/// there, and what they return stays valid afterwards (it keeps the memory alive). After the
/// callback returns, this object refuses new views (HostloopError): call `keep()` inside the
/// callback for an Array you may hold. When the producer lends its frame (`lent` is True) the
/// views point straight into hostloop's memory, no copy; the producer meanwhile writes its
/// next frames elsewhere, so drop what you keep promptly.
#[pyclass(frozen, module = "hostloop._hostloop")]
struct Array {
    owner: Owner,
    /// First byte and length of the data (inside `owner`).
    addr: usize,
    len: usize,
    format: &'static str,
    typestr: &'static str,
    itemsize: usize,
    count: usize,
    components: usize,
    stride: usize,
    /// False once the sink call it was made for returned (unless made by `keep`).
    valid: AtomicBool,
}

impl Array {
    fn check(&self) -> PyResult<()> {
        if self.valid.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(HostloopError::new_err(
                "this Array was lent for its sink call only and that call has returned: \
                 call arr.keep() inside the callback to hold it",
            ))
        }
    }

    fn packed(&self) -> bool {
        self.stride == self.components * self.itemsize
    }

    /// A read-only memoryview of the data's bytes that keeps `slf` (and so the memory) alive.
    fn raw_view<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        match &me.owner {
            Owner::Copied(b) => py
                .import("builtins")?
                .getattr("memoryview")?
                .call1((b.bind(py),)),
            Owner::Lent(_) => {
                // ctypes gives a buffer over foreign memory under the stable ABI; the Array is
                // attached to it, so the memory lives as long as any view of it.
                let ctypes = py.import("ctypes")?;
                let ty = ctypes
                    .getattr("c_char")?
                    .call_method1("__mul__", (me.len.max(1),))?;
                let buf = ty.call_method1("from_address", (me.addr,))?;
                buf.setattr("_hostloop_owner", slf)?;
                let mv = py
                    .import("builtins")?
                    .getattr("memoryview")?
                    .call1((buf,))?
                    .call_method0("toreadonly")?
                    .call_method1("cast", ("B",))?;
                if me.len == 0 {
                    return mv
                        .call_method1("__getitem__", (pyo3::types::PySlice::new(py, 0, 0, 1),));
                }
                Ok(mv)
            }
        }
    }
}

#[pymethods]
impl Array {
    /// The struct format character of one element (`"f"` for float32).
    #[getter]
    fn format(&self) -> &'static str {
        self.format
    }
    /// `(count, components)`.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.count, self.components)
    }
    /// Bytes per element.
    #[getter]
    fn itemsize(&self) -> usize {
        self.itemsize
    }
    /// Bytes from one record to the next (`components * itemsize` when packed).
    #[getter]
    fn stride(&self) -> usize {
        self.stride
    }
    /// Whether the data is hostloop's own memory, lent without a copy.
    #[getter]
    fn lent(&self) -> bool {
        matches!(self.owner, Owner::Lent(_))
    }
    /// Whether new views may still be taken (inside the sink call, or made by `keep()`).
    #[getter]
    fn valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }
    /// The address of the first byte (for checks and for handing to a GPU upload).
    #[getter]
    fn address(&self) -> PyResult<usize> {
        self.check()?;
        Ok(self.addr)
    }
    /// Records.
    fn __len__(&self) -> usize {
        self.count
    }
    /// An Array over the same memory that stays valid after the sink call, for as long as
    /// you hold it (no copy when `lent`).
    fn keep(&self, py: Python<'_>) -> PyResult<Array> {
        self.check()?;
        Ok(Array {
            owner: match &self.owner {
                Owner::Lent(l) => Owner::Lent(l.clone()),
                Owner::Copied(b) => Owner::Copied(b.clone_ref(py)),
            },
            addr: self.addr,
            len: self.len,
            format: self.format,
            typestr: self.typestr,
            itemsize: self.itemsize,
            count: self.count,
            components: self.components,
            stride: self.stride,
            valid: AtomicBool::new(true),
        })
    }
    /// A copy of the records as bytes (packed).
    fn tobytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.check()?;
        // SAFETY: `addr..addr+len` is inside `owner`, alive and unwritten while `self` lives.
        let src = unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) };
        pack(
            py,
            src,
            self.count,
            self.components * self.itemsize,
            self.stride,
        )
    }
    /// A read-only memoryview of shape `(count, components)` over the data, no copy (for a
    /// strided array: a flat view of its bytes). It keeps the memory alive.
    fn memoryview<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let me = slf.get();
        me.check()?;
        let mv = Array::raw_view(slf)?;
        if !me.packed() {
            return Ok(mv);
        }
        if me.count == 0 {
            return mv.call_method1("cast", (me.format,));
        }
        mv.call_method1("cast", (me.format, (me.count, me.components)))
    }
    /// numpy's array interface: `numpy.asarray(arr)` views the data without a copy; the numpy
    /// array keeps this Array, and so the memory, alive.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.check()?;
        let d = PyDict::new(py);
        d.set_item("shape", (self.count, self.components))?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("data", (self.addr, true))?;
        if !self.packed() {
            d.set_item("strides", (self.stride, self.itemsize))?;
        }
        d.set_item("version", 3)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "hostloop.Array(format={:?}, shape=({}, {}), lent={})",
            self.format,
            self.count,
            self.components,
            self.lent()
        )
    }
}

/// Packs `count` records of `record` bytes, `stride` apart, into new bytes.
fn pack<'py>(
    py: Python<'py>,
    src: &[u8],
    count: usize,
    record: usize,
    stride: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    if stride == record {
        return Ok(PyBytes::new(py, &src[..count * record]));
    }
    PyBytes::new_with(py, count * record, |buf| {
        for i in 0..count {
            let at = i * stride;
            buf[i * record..(i + 1) * record].copy_from_slice(&src[at..at + record]);
        }
        Ok(())
    })
}

fn elem_info(e: hostloop::ElemType) -> (&'static str, &'static str) {
    use hostloop::ElemType as E;
    match e {
        E::U8 => ("B", "|u1"),
        E::I32 => ("i", "<i4"),
        E::U32 => ("I", "<u4"),
        E::I64 => ("q", "<i8"),
        E::U64 => ("Q", "<u8"),
        E::F32 => ("f", "<f4"),
        E::F64 => ("d", "<f8"),
        _ => ("B", "|u1"),
    }
}

/// The sink's payload for Python: `bytes`, or an Array (lent when the producer allows it,
/// else a packed copy). Returns the Array too, to invalidate it when the call returns.
fn payload_to_py<'py>(
    py: Python<'py>,
    msg: &hostloop::Message<'_>,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, Array>>)> {
    match &msg.payload {
        hostloop::Payload::Bytes(b) => Ok((PyBytes::new(py, b).into_any(), None)),
        hostloop::Payload::Array(a) => {
            let (format, typestr) = elem_info(a.elem());
            let record = a.components() * a.elem().size();
            let (owner, addr, len, stride) = match msg.lend() {
                Some(lease) => {
                    let bytes = lease.bytes();
                    let (addr, len) = (bytes.as_ptr() as usize, bytes.len());
                    (Owner::Lent(Arc::new(lease)), addr, len, a.stride())
                }
                None => {
                    let b = pack(py, a.bytes(), a.count(), record, a.stride())?;
                    let (addr, len) = (b.as_bytes().as_ptr() as usize, b.as_bytes().len());
                    (Owner::Copied(b.unbind()), addr, len, record)
                }
            };
            let arr = Bound::new(
                py,
                Array {
                    owner,
                    addr,
                    len,
                    format,
                    typestr,
                    itemsize: a.elem().size(),
                    count: a.count(),
                    components: a.components(),
                    stride,
                    valid: AtomicBool::new(true),
                },
            )?;
            Ok((arr.clone().into_any(), Some(arr)))
        }
    }
}

/// The hostloop runtime. Create it on the thread that will be the main thread.
#[pyclass(frozen, weakref, subclass, module = "hostloop._hostloop")]
struct Runtime {
    rt: Arc<hostloop::Runtime>,
    closed: AtomicBool,
}

impl Runtime {
    fn live(&self) -> PyResult<&hostloop::Runtime> {
        if self.closed.load(Ordering::Acquire) || self.rt.is_shut_down() {
            return Err(ShutDown::new_err("the runtime is shut down"));
        }
        Ok(&self.rt)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let rt = self.rt.clone();
        Python::attach(|py| {
            py.detach(move || {
                rt.shutdown(Duration::from_secs(2));
            })
        });
    }
}

#[pymethods]
impl Runtime {
    #[new]
    #[pyo3(signature = (workers=None))]
    fn new(py: Python<'_>, workers: Option<i64>) -> PyResult<Self> {
        let mut b = hostloop::Runtime::builder();
        if let Some(n) = workers {
            if !(1..=hostloop::MAX_WORKERS as i64).contains(&n) {
                return Err(PyValueError::new_err(format!(
                    "workers must be between 1 and {}, not {n}",
                    hostloop::MAX_WORKERS
                )));
            }
            b = b.workers(n as usize);
        }
        // Built on this thread: it becomes the runtime's main thread.
        let _ = py;
        let rt = b
            .build()
            .map_err(|e| HostloopError::new_err(e.to_string()))?;
        Ok(Runtime {
            rt: Arc::new(rt),
            closed: AtomicBool::new(false),
        })
    }

    /// Runs queued main-thread work for at most about `budget_ms`; returns the items run.
    #[pyo3(signature = (budget_ms=2.0))]
    fn pump(&self, budget_ms: f64) -> PyResult<usize> {
        let rt = self.live()?;
        let budget = budget(budget_ms)?;
        // The GIL stays held: the items pump runs call Python (the sink, continuations).
        rt.pump(budget).map(|r| r.ran).map_err(to_pyerr)
    }

    /// The doorbell fd: readable when work waits for a pump. Do not read or close it.
    fn wake_fd(&self) -> PyResult<i32> {
        Ok(self.live()?.doorbell_fd())
    }

    /// Pumps until `predicate()` is true (True) or `timeout_s` passes (False), sleeping on the
    /// wake fd with the GIL released between pumps.
    #[pyo3(signature = (predicate, timeout_s, budget_ms=2.0))]
    fn run_until(
        &self,
        py: Python<'_>,
        predicate: Bound<'_, PyAny>,
        timeout_s: f64,
        budget_ms: f64,
    ) -> PyResult<bool> {
        let timeout = duration("timeout_s", timeout_s, 1.0e7)?;
        budget(budget_ms)?;
        if !predicate.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "predicate must be callable",
            ));
        }
        let start = std::time::Instant::now();
        let fd = self.wake_fd()?;
        loop {
            if predicate.call0()?.is_truthy()? {
                return Ok(true);
            }
            let ran = self.pump(budget_ms)?;
            if predicate.call0()?.is_truthy()? {
                return Ok(true);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(false);
            }
            py.check_signals()?;
            if ran == 0 {
                let ms = left.min(Duration::from_millis(50)).as_millis().max(1) as i32;
                py.detach(move || {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, ms) };
                });
            }
        }
    }

    /// Shuts down within `deadline_s` (GIL released while waiting). Idempotent.
    #[pyo3(signature = (deadline_s=5.0))]
    fn shutdown<'py>(&self, py: Python<'py>, deadline_s: f64) -> PyResult<Bound<'py, PyDict>> {
        let deadline = duration("deadline_s", deadline_s, 1.0e6)?;
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.rt.set_sink(None);
        }
        let rt = self.rt.clone();
        let r = py.detach(move || rt.shutdown(deadline));
        let d = PyDict::new(py);
        d.set_item("threads_joined", r.threads_joined)?;
        d.set_item("cancelled_queued", r.cancelled_queued)?;
        d.set_item("cancelled_running", r.cancelled_running)?;
        d.set_item("stragglers", r.stragglers.len())?;
        d.set_item("main_items_dropped", r.main_items_dropped)?;
        d.set_item("elapsed_s", r.elapsed.as_secs_f64())?;
        Ok(d)
    }

    /// Whether shutdown has begun.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.rt.is_shut_down()
    }

    /// A snapshot of the runtime's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.live()?.stats();
        let d = PyDict::new(py);
        d.set_item("jobs_spawned", s.jobs_spawned)?;
        d.set_item("jobs_finished", s.jobs_finished)?;
        d.set_item("jobs_failed", s.jobs_failed)?;
        d.set_item("jobs_cancelled", s.jobs_cancelled)?;
        d.set_item("jobs_panicked", s.jobs_panicked)?;
        d.set_item("pumps", s.pumps)?;
        d.set_item("pump_p50_s", s.pump_p50.as_secs_f64())?;
        d.set_item("pump_p99_s", s.pump_p99.as_secs_f64())?;
        d.set_item("budget_overruns", s.budget_overruns)?;
        d.set_item("main_items_run", s.main_items_run)?;
        d.set_item("main_items_panicked", s.main_items_panicked)?;
        d.set_item("sink_messages", s.sink_messages)?;
        d.set_item("sink_dropped", s.sink_dropped)?;
        d.set_item("events_dropped", s.events_dropped)?;
        d.set_item("doorbell_rings", s.doorbell_rings)?;
        d.set_item("queued_main", s.queued.main)?;
        d.set_item("queued_io", s.queued.io)?;
        d.set_item("workers", s.workers.len())?;
        Ok(d)
    }

    /// Sets (or with None removes) the sink: `callback(topic, payload)`, called inside pump()
    /// on the main thread; payload is `bytes` (a copy) or a `hostloop.Array` — hostloop's own
    /// memory when the producer lends it (a simulation's frames), valid for new views inside
    /// the call, `keep()` to hold it. An exception raised by it goes to
    /// `sys.unraisablehook` and the loop keeps running.
    fn set_sink(&self, callback: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let rt = self.live()?;
        match callback {
            None => rt.set_sink(None),
            Some(cb) => {
                if !cb.is_callable() {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "the sink must be callable or None",
                    ));
                }
                let cb = cb.unbind();
                rt.set_sink(Some(Box::new(move |msg: &hostloop::Message<'_>| {
                    Python::attach(|py| {
                        let r = payload_to_py(py, msg).and_then(|(p, arr)| {
                            let r = cb.call1(py, (msg.topic, p));
                            // The call returned: the Array refuses new views from now on.
                            if let Some(arr) = arr {
                                arr.get().valid.store(false, Ordering::Release);
                            }
                            r
                        });
                        if let Err(e) = r {
                            e.write_unraisable(py, Some(cb.bind(py)));
                        }
                    })
                })));
            }
        }
        Ok(())
    }

    /// Posts a custom host event (`topic`, `data`).
    #[pyo3(signature = (topic, data, coalesce=false))]
    fn post_event(&self, topic: String, data: Vec<u8>, coalesce: bool) -> PyResult<()> {
        self.live()?
            .post_event(hostloop::Event::Custom {
                topic,
                bytes: data,
                coalesce,
            })
            .map_err(to_pyerr)
    }

    /// Posts a FrameChanged host event.
    fn post_frame_changed(&self, frame: f64) -> PyResult<()> {
        if !frame.is_finite() {
            return Err(PyValueError::new_err("frame must be finite"));
        }
        self.live()?
            .post_event(hostloop::Event::FrameChanged { frame })
            .map_err(to_pyerr)
    }

    /// Posts a PlaybackStarted (`playing=True`) or PlaybackStopped (`False`) host event.
    fn post_playback(&self, playing: bool) -> PyResult<()> {
        let event = if playing {
            hostloop::Event::PlaybackStarted
        } else {
            hostloop::Event::PlaybackStopped
        };
        self.live()?.post_event(event).map_err(to_pyerr)
    }

    /// Loads a plugin library. `isolation`: "in_process", "own_process" or "shared:<group>"
    /// (in a worker process: a crash there is reported, not fatal). `worker`: the worker
    /// program for isolation; default `$HOSTLOOP_WORKER`, else the one in the package.
    #[pyo3(signature = (path, isolation="in_process", worker=None))]
    fn load_plugin(
        slf: Bound<'_, Self>,
        path: std::path::PathBuf,
        isolation: &str,
        worker: Option<std::path::PathBuf>,
    ) -> PyResult<Plugin> {
        use hostloop::plugin::{Isolation, LoadOptions};
        let iso = match isolation {
            "in_process" => Isolation::InProcess,
            "own_process" => Isolation::OwnProcess,
            s if s.starts_with("shared:") && s.len() > 7 => Isolation::SharedProcess(s[7..].to_owned()),
            other => {
                return Err(PyValueError::new_err(format!(
                    "isolation must be \"in_process\", \"own_process\" or \"shared:<group>\", not {other:?}"
                )))
            }
        };
        let py = slf.py();
        let rt = slf.get();
        rt.live()?;
        let handle = rt.rt.handle().clone();
        let mut options = LoadOptions::new().isolation(iso);
        if let Some(program) = worker.or_else(|| packaged_worker(py)) {
            options = options.worker_program(program);
        }
        let p = path.clone();
        let loaded = py
            .detach(move || handle.load_plugin_with(&p, &options).map(SendPlugin))
            .map_err(|e| HostloopError::new_err(e.to_string()))?
            .0;
        let name = loaded.info().name;
        Ok(Plugin {
            plugin: Some(SendPlugin(loaded)),
            name,
            rt: slf.clone().unbind(),
            handle: rt.rt.handle().clone(),
        })
    }

    /// Runs `callback()` on the main thread at a later pump (callable from any thread).
    fn call_soon(&self, callback: Bound<'_, PyAny>) -> PyResult<()> {
        if !callback.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "callback must be callable",
            ));
        }
        post_call(self.live()?.handle(), callback.unbind(), None)
    }

    /// For a `concurrent.futures.Future`: when it is done (on any thread), `on_main(future)`
    /// is posted to the main thread and runs inside a pump. No polling.
    fn adopt(&self, future: Bound<'_, PyAny>, on_main: Bound<'_, PyAny>) -> PyResult<()> {
        if !on_main.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "on_main must be callable",
            ));
        }
        let handle = self.live()?.handle().clone();
        let cb = on_main.unbind();
        let done = pyo3::types::PyCFunction::new_closure(
            future.py(),
            Some(c"hostloop_adopt_done"),
            None,
            move |args: &Bound<'_, pyo3::types::PyTuple>,
                  _kw: Option<&Bound<'_, PyDict>>|
                  -> PyResult<()> {
                let py = args.py();
                let fut = args.get_item(0)?.unbind();
                if let Err(e) = post_call(&handle, cb.clone_ref(py), Some(fut)) {
                    e.write_unraisable(py, None);
                }
                Ok(())
            },
        )?;
        future.call_method1("add_done_callback", (done,))?;
        Ok(())
    }

    /// Runs `func(*args, **kwargs)` on the IO lane (a hostloop IO thread, with the GIL: for
    /// GIL-bound work such as downloads and file IO) and returns a `hostloop.Task`. Inside
    /// `func`, `hostloop.current_task()` is its cancel token and progress reporter. When it
    /// returns, `on_main(value)` runs inside a pump on the main thread; when it raises,
    /// `on_error(exc)` (default: `sys.unraisablehook`); a cancelled task calls
    /// `on_error(hostloop.Cancelled(...))` if `on_error` was given. `on_progress(fraction,
    /// message)` runs on the main thread, coalesced. `name` defaults to `func.__qualname__`.
    #[pyo3(signature = (func, /, *args, on_main=None, on_progress=None, on_error=None, name=None, **kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        func: Bound<'_, PyAny>,
        args: Bound<'_, pyo3::types::PyTuple>,
        on_main: Option<Bound<'_, PyAny>>,
        on_progress: Option<Bound<'_, PyAny>>,
        on_error: Option<Bound<'_, PyAny>>,
        name: Option<String>,
        kwargs: Option<Bound<'_, PyDict>>,
    ) -> PyResult<spawn::Task> {
        let rt = self.live()?;
        spawn::spawn(rt, func, args, kwargs, on_main, on_progress, on_error, name)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.shutdown(py, 5.0).map(|_| ())
    }
}

/// The worker program the wheel carries (`hostloop/bin/hostloop-worker`), unless
/// `$HOSTLOOP_WORKER` names one.
fn packaged_worker(py: Python<'_>) -> Option<std::path::PathBuf> {
    if std::env::var_os("HOSTLOOP_WORKER").is_some() {
        return None;
    }
    let file: std::path::PathBuf = py
        .import("hostloop")
        .ok()?
        .getattr("__file__")
        .ok()?
        .extract()
        .ok()?;
    let program = file.parent()?.join("bin").join("hostloop-worker");
    let meta = std::fs::metadata(&program).ok()?;
    if !meta.is_file() {
        return None;
    }
    // Unzipped without file modes (Blender installs add-ons so): make it executable again.
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 == 0 {
        let _ = std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755));
    }
    Some(program)
}

/// Posts `cb(arg)` (or `cb()`) to the main thread; exceptions go to `sys.unraisablehook`.
fn post_call(handle: &hostloop::Handle, cb: Py<PyAny>, arg: Option<Py<PyAny>>) -> PyResult<()> {
    handle
        .post(move |_main| {
            Python::attach(|py| {
                let r = match &arg {
                    Some(a) => cb.call1(py, (a.clone_ref(py),)),
                    None => cb.call0(py),
                };
                if let Err(e) = r {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            })
        })
        .map_err(to_pyerr)
}

/// A LoadedPlugin that crosses threads only to be unloaded on the main thread: `Python::detach`
/// runs its closure on the calling thread, [`Plugin`] touches it only after checking that it is
/// on the main thread, and a Plugin dropped elsewhere posts its unload to the main thread.
struct SendPlugin(hostloop::plugin::LoadedPlugin);
// SAFETY: see above: the plugin is only used on the main thread.
unsafe impl Send for SendPlugin {}
// SAFETY: as above; no `&SendPlugin` is used off the main thread.
unsafe impl Sync for SendPlugin {}

/// A loaded plugin. Its methods are main-thread only (HostloopError elsewhere); when its last
/// reference goes on another thread (Python may free it on any thread that runs Python), the
/// unload is posted to the main thread.
#[pyclass(module = "hostloop._hostloop")]
struct Plugin {
    plugin: Option<SendPlugin>,
    name: String,
    rt: Py<Runtime>,
    handle: hostloop::Handle,
}

impl Plugin {
    fn on_main(&self) -> PyResult<()> {
        if self.handle.is_main_thread() {
            Ok(())
        } else {
            Err(HostloopError::new_err(format!(
                "plugin {:?}: its methods may only be called on the runtime's main thread",
                self.name
            )))
        }
    }
}

#[pymethods]
impl Plugin {
    /// The plugin's name (from its descriptor), e.g. `"particles"`.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is still loaded (False after `unload()`).
    #[getter]
    fn loaded(&self) -> bool {
        self.plugin.is_some()
    }

    /// Where and how it runs: a dict with `name`, `version`, `path`, `generation` (bumped by
    /// each reload), `isolation` ("in_process", "own_process" or "shared:<group>"), `pid` (the
    /// worker's, None in process), `restarts`, `crashes`, `last_crash` and `down` (why an
    /// isolated plugin stays down, or None).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.on_main()?;
        let p = self
            .plugin
            .as_ref()
            .ok_or_else(|| HostloopError::new_err(format!("plugin {:?} is unloaded", self.name)))?;
        let i = p.0.info();
        let d = PyDict::new(py);
        d.set_item("name", &i.name)?;
        d.set_item("version", &i.version)?;
        d.set_item("path", &i.path)?;
        d.set_item("generation", i.generation)?;
        let isolation = match &i.isolation {
            hostloop::plugin::Isolation::InProcess => "in_process".to_owned(),
            hostloop::plugin::Isolation::OwnProcess => "own_process".to_owned(),
            hostloop::plugin::Isolation::SharedProcess(g) => format!("shared:{g}"),
            _ => "unknown".to_owned(),
        };
        d.set_item("isolation", isolation)?;
        d.set_item("pid", i.pid)?;
        d.set_item("restarts", i.restarts)?;
        d.set_item("crashes", i.crashes)?;
        d.set_item("last_crash", &i.last_crash)?;
        d.set_item("down", &i.down)?;
        Ok(d)
    }

    /// Unloads the plugin within `deadline_s` (GIL released). Returns a report dict.
    #[pyo3(signature = (deadline_s=5.0))]
    fn unload<'py>(&mut self, py: Python<'py>, deadline_s: f64) -> PyResult<Bound<'py, PyDict>> {
        let deadline = duration("deadline_s", deadline_s, 1.0e6)?;
        self.on_main()?;
        let p = self.plugin.take().ok_or_else(|| {
            HostloopError::new_err(format!("plugin {:?} is already unloaded", self.name))
        })?;
        let r = py.detach(move || p.0.unload(deadline));
        let d = PyDict::new(py);
        d.set_item("dropped", r.dropped)?;
        d.set_item("stragglers", r.stragglers)?;
        d.set_item("retired", r.retired)?;
        d.set_item("elapsed_s", r.elapsed.as_secs_f64())?;
        Ok(d)
    }

    /// Hot-reloads the plugin from `path` (default: the path it was loaded from).
    #[pyo3(signature = (path=None, deadline_s=5.0))]
    fn reload(
        &mut self,
        py: Python<'_>,
        path: Option<std::path::PathBuf>,
        deadline_s: f64,
    ) -> PyResult<()> {
        let deadline = duration("deadline_s", deadline_s, 1.0e6)?;
        self.on_main()?;
        self.rt.get().live()?;
        let mut p = self
            .plugin
            .take()
            .ok_or_else(|| HostloopError::new_err(format!("plugin {:?} is unloaded", self.name)))?;
        let path = path.unwrap_or_else(|| p.0.info().path);
        let (p, r) = py.detach(move || {
            let r = p.0.reload(&path, deadline).map_err(|e| e.to_string());
            (p, r)
        });
        self.plugin = Some(p);
        r.map_err(HostloopError::new_err)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let Some(p) = self.plugin.take() else {
            return;
        };
        if self.handle.is_main_thread() {
            Python::attach(|py| {
                py.detach(move || {
                    p.0.unload(Duration::from_secs(2));
                })
            });
            return;
        }
        // Freed on another thread: unload at the main thread's next pump. If the runtime is
        // shut down the post is refused and hands the plugin back in its error: the plugin
        // is then left loaded, never unloaded off the main thread.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(p)));
        let s = slot.clone();
        let posted = self.handle.post(move |_main| {
            if let Some(p) = s.lock().unwrap_or_else(|e| e.into_inner()).take() {
                p.0.unload(Duration::from_secs(2));
            }
        });
        if posted.is_err() {
            if let Some(p) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(p);
            }
        }
    }
}

#[pymodule]
fn _hostloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("HostloopError", m.py().get_type::<HostloopError>())?;
    m.add("ShutDown", m.py().get_type::<ShutDown>())?;
    m.add_class::<Runtime>()?;
    m.add_class::<Plugin>()?;
    m.add_class::<Array>()?;
    spawn::register(m)?;
    Ok(())
}
