//! Python bindings for hostloop (`hostloop._hostloop`). Foundation: runtime, pump, wake fd,
//! sink (payloads copied), host events, plugins, stats, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

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
            "{what} must be a finite number between 0 and {max}, not {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A typed array delivered to the sink, owning a copy of its data (arrays are copied for now).
#[pyclass(frozen, module = "hostloop._hostloop")]
struct Array {
    data: Py<PyBytes>,
    format: &'static str,
    typestr: &'static str,
    itemsize: usize,
    count: usize,
    components: usize,
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
    #[getter]
    fn itemsize(&self) -> usize {
        self.itemsize
    }
    fn __len__(&self) -> usize {
        self.count
    }
    /// The data as bytes (the object this array owns; no copy).
    fn tobytes(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }
    /// A read-only memoryview of shape `(count, components)` over the owned data (no copy).
    fn memoryview<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mv = py
            .import("builtins")?
            .getattr("memoryview")?
            .call1((self.data.bind(py),))?;
        if self.count == 0 {
            return mv.call_method1("cast", (self.format,));
        }
        mv.call_method1("cast", (self.format, (self.count, self.components)))
    }
    /// numpy's array interface: `numpy.asarray(arr)` views the owned data without a copy.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("shape", (self.count, self.components))?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("data", self.data.bind(py))?;
        d.set_item("version", 3)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "hostloop.Array(format={:?}, shape=({}, {}))",
            self.format, self.count, self.components
        )
    }
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

fn payload_to_py<'py>(py: Python<'py>, p: &hostloop::Payload<'_>) -> PyResult<Bound<'py, PyAny>> {
    match p {
        hostloop::Payload::Bytes(b) => Ok(PyBytes::new(py, b).into_any()),
        hostloop::Payload::Array(a) => {
            let record = a.components() * a.elem().size();
            let len = a.count() * record;
            let src = a.bytes();
            let data = if a.stride() == record {
                PyBytes::new(py, &src[..len])
            } else {
                PyBytes::new_with(py, len, |buf| {
                    for i in 0..a.count() {
                        let at = i * a.stride();
                        buf[i * record..(i + 1) * record].copy_from_slice(&src[at..at + record]);
                    }
                    Ok(())
                })?
            };
            let (format, typestr) = elem_info(a.elem());
            let arr = Array {
                data: data.unbind(),
                format,
                typestr,
                itemsize: a.elem().size(),
                count: a.count(),
                components: a.components(),
            };
            Ok(Bound::new(py, arr)?.into_any())
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
        if budget_ms <= 0.0 {
            return Err(PyValueError::new_err("budget_ms must be > 0"));
        }
        let budget = duration("budget_ms", budget_ms / 1000.0, 60.0)?;
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
    /// on the main thread; payload is `bytes` or a `hostloop.Array` (a copy). An exception
    /// raised by it goes to `sys.unraisablehook` and the loop keeps running.
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
                        let r = payload_to_py(py, &msg.payload)
                            .and_then(|p| cb.call1(py, (msg.topic, p)));
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

    /// Loads a plugin library. `isolation`: "in_process", "own_process" or "shared:<group>".
    #[pyo3(signature = (path, isolation="in_process"))]
    fn load_plugin(
        slf: Bound<'_, Self>,
        path: std::path::PathBuf,
        isolation: &str,
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
        let options = LoadOptions::new().isolation(iso);
        let p = path.clone();
        let loaded = py
            .detach(move || handle.load_plugin_with(&p, &options).map(SendPlugin))
            .map_err(|e| HostloopError::new_err(e.to_string()))?
            .0;
        let name = loaded.info().name;
        Ok(Plugin {
            plugin: Some(loaded),
            name,
            rt: slf.clone().unbind(),
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

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.shutdown(py, 5.0).map(|_| ())
    }
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

/// Moves a LoadedPlugin across `detach` (it stays on the main thread: detach runs the closure
/// on the calling thread).
struct SendPlugin(hostloop::plugin::LoadedPlugin);
// SAFETY: `Python::detach` runs its closure on the calling thread; the plugin never leaves it.
unsafe impl Send for SendPlugin {}

/// A loaded plugin. Main-thread only.
#[pyclass(unsendable, module = "hostloop._hostloop")]
struct Plugin {
    plugin: Option<hostloop::plugin::LoadedPlugin>,
    name: String,
    rt: Py<Runtime>,
}

#[pymethods]
impl Plugin {
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn loaded(&self) -> bool {
        self.plugin.is_some()
    }

    /// Unloads the plugin within `deadline_s` (GIL released). Returns a report dict.
    #[pyo3(signature = (deadline_s=5.0))]
    fn unload<'py>(&mut self, py: Python<'py>, deadline_s: f64) -> PyResult<Bound<'py, PyDict>> {
        let deadline = duration("deadline_s", deadline_s, 1.0e6)?;
        let p = self.plugin.take().ok_or_else(|| {
            HostloopError::new_err(format!("plugin {:?} is already unloaded", self.name))
        })?;
        let p = SendPlugin(p);
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
        self.rt.get().live()?;
        let mut p = SendPlugin(self.plugin.take().ok_or_else(|| {
            HostloopError::new_err(format!("plugin {:?} is unloaded", self.name))
        })?);
        let path = path.unwrap_or_else(|| p.0.info().path);
        let (p, r) = py.detach(move || {
            let r = p.0.reload(&path, deadline).map_err(|e| e.to_string());
            (p, r)
        });
        self.plugin = Some(p.0);
        r.map_err(HostloopError::new_err)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(p) = self.plugin.take() {
            let p = SendPlugin(p);
            Python::attach(|py| {
                py.detach(move || {
                    p.0.unload(Duration::from_secs(2));
                })
            });
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
    Ok(())
}
