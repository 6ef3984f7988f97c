"""A small ctypes binding over libhostloop's C ABI (`include/hostloop.h`).

Only what a Python host needs: a runtime with its doorbell fd, bounded pumps, the sink, host
events, plugin load/unload, the batch-mode `run_until`, shutdown and counters. Every failing call
raises `HostloopError` carrying the status name and `hl_last_error()`. The ctypes callback objects
handed to the library are kept on the `Runtime` so they outlive every call the library makes.

Threads: create the `Runtime` on the thread that is the host's main thread and call everything
from there; the sink and `run_until`'s condition run on that thread, during `pump`/`run_until`.

Finding the libraries (`find_artifact`): `HOSTLOOP_LIB` / `HOSTLOOP_PARTICLES` when set (paths,
overriding everything else); else `lib/` beside this file, where an installed copy ships them (the
Blender add-on's zip); else `target/release/` of `CARGO_TARGET_DIR`, or of the first directory
above this file (symlinks resolved) that has one, for running from a checkout.
"""

import ctypes
import os

__all__ = [
    "HostloopError", "Runtime", "Plugin", "Message", "find_library", "find_artifact",
    "EVENT_FRAME_CHANGED", "EVENT_PLAYBACK_STARTED", "EVENT_PLAYBACK_STOPPED", "EVENT_CUSTOM",
]

# ---- constants (include/hostloop/common.h, sink.h, event.h) --------------------------------------

STATUS_OK = 0
STATUS_TIMEOUT = 11
ABI_VERSION = 1

PAYLOAD_BYTES = 1
PAYLOAD_ARRAY = 2

ELEM_SIZES = {1: 1, 2: 4, 3: 4, 4: 8, 5: 8, 6: 4, 7: 8}  # HL_ELEM_* -> bytes
ELEM_F32 = 6

EVENT_FRAME_CHANGED = 1
EVENT_PLAYBACK_STARTED = 5
EVENT_PLAYBACK_STOPPED = 6
EVENT_CUSTOM = 8

status_t = ctypes.c_uint32

# ---- structs: field for field as in the headers; `struct_size` first where the header has it ----


class RuntimeOptions(ctypes.Structure):  # hl_runtime_options_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("workers", ctypes.c_uint32),
        ("io_threads", ctypes.c_uint32),
        ("default_budget_us", ctypes.c_uint32),
        ("call_timeout_ms", ctypes.c_uint32),
        ("free_deadline_ms", ctypes.c_uint32),
        ("main_backlog_limit", ctypes.c_uint32),  # 0 = the default (1,048,576 items)
        ("stack_size", ctypes.c_uint64),
        ("thread_name", ctypes.c_char_p),
    ]


class ShutdownReport(ctypes.Structure):  # hl_shutdown_report_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("threads_joined", ctypes.c_uint32),
        ("cancelled_queued", ctypes.c_uint64),
        ("cancelled_running", ctypes.c_uint64),
        ("stragglers", ctypes.c_uint64),
        ("main_items_dropped", ctypes.c_uint64),
        ("elapsed_us", ctypes.c_uint64),
    ]


class PumpReport(ctypes.Structure):  # hl_pump_report_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("ran", ctypes.c_uint64),
        ("remaining", ctypes.c_uint64),
        ("elapsed_us", ctypes.c_uint64),
        ("overrun_us", ctypes.c_uint64),
    ]


class RunReport(ctypes.Structure):  # hl_run_report_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("pumps", ctypes.c_uint64),
        ("ran", ctypes.c_uint64),
        ("elapsed_us", ctypes.c_uint64),
    ]


class Stats(ctypes.Structure):  # hl_stats_t
    _fields_ = [("struct_size", ctypes.c_uint32), ("workers", ctypes.c_uint32)] + [
        (name, ctypes.c_uint64)
        for name in (
            "jobs_spawned", "jobs_finished", "jobs_failed", "jobs_cancelled", "jobs_panicked",
            "queued_cpu", "queued_io", "queued_main", "pumps", "pump_p50_us", "pump_p99_us",
            "budget_overruns", "main_items_run", "main_items_panicked", "doorbell_rings",
            "sink_messages", "sink_dropped", "events_dropped", "workers_busy_us",
            "sleeping_workers",
        )
    ]


class ArrayView(ctypes.Structure):  # hl_array_view_t
    _fields_ = [
        ("elem_type", ctypes.c_uint32),
        ("components", ctypes.c_uint32),
        ("count", ctypes.c_uint64),
        ("stride", ctypes.c_uint64),
        ("data", ctypes.c_void_p),
        ("byte_len", ctypes.c_uint64),
    ]


class MessageC(ctypes.Structure):  # hl_message_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("payload_kind", ctypes.c_uint32),
        ("topic", ctypes.c_char_p),
        ("topic_len", ctypes.c_size_t),
        ("bytes", ctypes.c_void_p),
        ("bytes_len", ctypes.c_size_t),
        ("array", ArrayView),
    ]


class Event(ctypes.Structure):  # hl_event_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("frame", ctypes.c_double),
        ("path", ctypes.c_char_p),
        ("topic", ctypes.c_char_p),
        ("bytes", ctypes.c_void_p),
        ("bytes_len", ctypes.c_size_t),
        ("coalesce", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class UnloadReport(ctypes.Structure):  # hl_unload_report_t
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("retired", ctypes.c_uint32),
        ("dropped", ctypes.c_uint64),
        ("stragglers", ctypes.c_uint64),
        ("elapsed_us", ctypes.c_uint64),
    ]


SINK_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(MessageC))
UNTIL_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)

# ---- locating and loading the library --------------------------------------------------------


def find_artifact(file_name, env=None):
    """The path of `file_name` (`libhostloop.so`, a plugin): `$<env>` when that is set (an
    override); else `lib/<file_name>` beside this file (an installed copy ships its libraries
    there); else `target/release/<file_name>` in `CARGO_TARGET_DIR` or in the nearest ancestor of
    this file (symlinks resolved) that has it (a checkout)."""
    if env and os.environ.get(env):
        return os.environ[env]
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", file_name)
    if os.path.isfile(beside):
        return beside
    target = os.environ.get("CARGO_TARGET_DIR")
    if target and os.path.isfile(os.path.join(target, "release", file_name)):
        return os.path.join(target, "release", file_name)
    here = os.path.dirname(os.path.realpath(__file__))
    while True:
        candidate = os.path.join(here, "target", "release", file_name)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            raise FileNotFoundError(
                f"{file_name} not found: not in {os.path.dirname(beside)}, nor in target/release "
                f"above {os.path.dirname(os.path.realpath(__file__))}; build it with cargo build "
                f"--release, or set {env or 'CARGO_TARGET_DIR'}"
            )
        here = parent


def find_library():
    return find_artifact("libhostloop.so", "HOSTLOOP_LIB")


_lib = None
library_path = None  # the libhostloop this process loaded, once loaded


def _load(path=None):
    global _lib, library_path
    if _lib is not None:
        return _lib
    path = path or find_library()
    lib = ctypes.CDLL(path)
    P = ctypes.POINTER
    vp = ctypes.c_void_p
    sigs = {
        "hl_last_error": (ctypes.c_char_p, []),
        "hl_status_name": (ctypes.c_char_p, [status_t]),
        "hl_version": (ctypes.c_uint32, []),
        "hl_abi_version": (ctypes.c_uint32, []),
        "hl_runtime_options_init": (status_t, [P(RuntimeOptions)]),
        "hl_runtime_new": (status_t, [P(RuntimeOptions), P(vp)]),
        "hl_runtime_free": (status_t, [vp]),
        "hl_runtime_shutdown": (status_t, [vp, ctypes.c_uint32, P(ShutdownReport)]),
        "hl_runtime_wake_fd": (status_t, [vp, P(ctypes.c_int)]),
        "hl_runtime_pump": (status_t, [vp, ctypes.c_uint64, P(PumpReport)]),
        "hl_runtime_stats": (status_t, [vp, P(Stats)]),
        "hl_runtime_set_sink": (status_t, [vp, SINK_FN, vp, vp]),
        "hl_runtime_post_event": (status_t, [vp, P(Event)]),
        "hl_plugin_load": (status_t, [vp, ctypes.c_char_p, P(vp)]),
        "hl_plugin_unload": (status_t, [vp, ctypes.c_uint32, P(UnloadReport)]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    # Batch mode (hl_runtime_run_until) is newer than the rest: bind it when the library has it.
    if hasattr(lib, "hl_runtime_run_until"):
        fn = lib.hl_runtime_run_until
        fn.restype = status_t
        fn.argtypes = [vp, UNTIL_FN, vp, ctypes.c_uint64, ctypes.c_uint32, P(RunReport)]
    if lib.hl_abi_version() != ABI_VERSION:
        raise HostloopError(
            "hl_abi_version", 7, f"library speaks ABI {lib.hl_abi_version()}, binding {ABI_VERSION}"
        )
    _lib = lib
    library_path = os.path.abspath(path)
    return lib


class HostloopError(Exception):
    """A hostloop call failed: `.call`, `.status` (number), `.status_name`, `.message`."""

    def __init__(self, call, status, message):
        self.call = call
        self.status = status
        self.message = message
        self.status_name = _lib.hl_status_name(status).decode() if _lib else str(status)
        super().__init__(f"{call}: {self.status_name}: {message}")


def _check(call, status):
    if status != STATUS_OK:
        raise HostloopError(call, status, _lib.hl_last_error().decode("utf-8", "replace"))
    return status


# ---- messages --------------------------------------------------------------------------------


class Message:
    """One sink message, borrowed: valid only inside the sink callback (copy what you keep)."""

    __slots__ = ("topic", "_m")

    def __init__(self, m):
        self._m = m
        self.topic = ctypes.string_at(m.topic, m.topic_len).decode("utf-8")

    @property
    def is_array(self):
        return self._m.payload_kind == PAYLOAD_ARRAY

    def bytes(self):
        """The payload of a bytes message, copied."""
        m = self._m
        return ctypes.string_at(m.bytes, m.bytes_len) if m.bytes_len else b""

    def array(self):
        """(elem_type, components, count, memoryview of the packed records) — a view of memory
        that is valid only during the callback; `bytes(view)` or `numpy.array(view)` copies."""
        a = self._m.array
        nbytes = a.count * a.stride if a.count else 0
        if nbytes == 0:
            return a.elem_type, a.components, 0, memoryview(b"")
        buf = (ctypes.c_char * nbytes).from_address(a.data)
        return a.elem_type, a.components, a.count, memoryview(buf)

    def array_f32(self):
        """For an f32 array: (components, count, ctypes float array over the records, borrowed)."""
        a = self._m.array
        if a.elem_type != ELEM_F32:
            raise TypeError(f"{self.topic}: elem_type {a.elem_type} is not f32")
        n = a.count * a.components
        if a.stride != a.components * 4:
            raise ValueError(f"{self.topic}: records are not packed (stride {a.stride})")
        return a.components, a.count, (ctypes.c_float * n).from_address(a.data) if n else None


# ---- runtime and plugins ---------------------------------------------------------------------


class Plugin:
    def __init__(self, runtime, handle, path):
        self.runtime = runtime
        self._handle = handle
        self.path = path

    def unload(self, deadline_ms=2000):
        """Unloads the plugin; returns the `UnloadReport`. Idempotent."""
        if not self._handle:
            return None
        report = UnloadReport(struct_size=ctypes.sizeof(UnloadReport))
        handle, self._handle = self._handle, None
        self.runtime._plugins.discard(self)
        _check("hl_plugin_unload", _lib.hl_plugin_unload(handle, deadline_ms, ctypes.byref(report)))
        return report


class Runtime:
    """An `hl_runtime_t`. The thread that creates it becomes hostloop's main thread."""

    def __init__(self, workers=0, io_threads=0, thread_name="hostloop", lib_path=None):
        lib = _load(lib_path)
        opts = RuntimeOptions()
        _check("hl_runtime_options_init", lib.hl_runtime_options_init(ctypes.byref(opts)))
        opts.workers = workers
        opts.io_threads = io_threads
        self._thread_name = thread_name.encode()  # read only during hl_runtime_new, kept anyway
        opts.thread_name = self._thread_name
        handle = ctypes.c_void_p()
        _check("hl_runtime_new", lib.hl_runtime_new(ctypes.byref(opts), ctypes.byref(handle)))
        self._rt = handle
        self._sink_cb = None  # keeps the ctypes thunk alive while the library may call it
        self._until_cb = None
        self._callback_error = None
        self._plugins = set()
        self.shutdown_report = None

    # -- loop integration

    def wake_fd(self):
        fd = ctypes.c_int()
        _check("hl_runtime_wake_fd", _lib.hl_runtime_wake_fd(self._rt, ctypes.byref(fd)))
        return fd.value

    def pump(self, budget_us=2000):
        """Runs queued main-thread work for at most ~budget_us; returns the `PumpReport`.
        An exception raised by the sink during this pump is re-raised here."""
        report = PumpReport(struct_size=ctypes.sizeof(PumpReport))
        _check("hl_runtime_pump", _lib.hl_runtime_pump(self._rt, budget_us, ctypes.byref(report)))
        self._reraise()
        return report

    def has_run_until(self):
        return hasattr(_lib, "hl_runtime_run_until")

    def run_until(self, until=None, budget_us=2000, timeout_ms=60000):
        """Batch mode: the runtime pumps on this thread, sleeping on its doorbell between pumps,
        until `until()` (called after each pump) is true. Returns (finished, RunReport):
        finished is False when `timeout_ms` passed first."""
        report = RunReport(struct_size=ctypes.sizeof(RunReport))
        if until is None:
            cb = UNTIL_FN()  # NULL
        else:
            def trampoline(_user_data):
                if self._callback_error is not None:
                    return 1  # stop: the error is re-raised below
                try:
                    return 1 if until() else 0
                except BaseException as e:  # noqa: BLE001 - must not unwind into C
                    self._callback_error = e
                    return 1

            cb = UNTIL_FN(trampoline)
        self._until_cb = cb
        try:
            status = _lib.hl_runtime_run_until(self._rt, cb, None, budget_us, timeout_ms,
                                               ctypes.byref(report))
        finally:
            self._until_cb = None
        self._reraise()
        if status == STATUS_TIMEOUT:
            return False, report
        _check("hl_runtime_run_until", status)
        return True, report

    def set_sink(self, fn):
        """Registers `fn(message: Message)` as the sink (None removes it). It runs on the main
        thread during pumps; an exception in it is re-raised by the pump that ran it."""
        if fn is None:
            cb = SINK_FN()
        else:
            def trampoline(_user_data, m):
                try:
                    fn(Message(m.contents))
                except BaseException as e:  # noqa: BLE001 - must not unwind into C
                    if self._callback_error is None:
                        self._callback_error = e

            cb = SINK_FN(trampoline)
        _check("hl_runtime_set_sink", _lib.hl_runtime_set_sink(self._rt, cb, None, None))
        self._sink_cb = cb

    def post_event(self, kind, topic=None, data=b"", frame=0.0, coalesce=False):
        ev = Event(struct_size=ctypes.sizeof(Event), kind=kind, frame=frame)
        keep = ctypes.create_string_buffer(data, len(data)) if data else None
        if topic is not None:
            ev.topic = topic.encode()
        if keep is not None:
            ev.bytes = ctypes.cast(keep, ctypes.c_void_p)
            ev.bytes_len = len(data)
        ev.coalesce = 1 if coalesce else 0
        _check("hl_runtime_post_event", _lib.hl_runtime_post_event(self._rt, ctypes.byref(ev)))

    def post_custom(self, topic, data=b"", coalesce=False):
        self.post_event(EVENT_CUSTOM, topic=topic, data=data, coalesce=coalesce)

    def stats(self):
        s = Stats(struct_size=ctypes.sizeof(Stats))
        _check("hl_runtime_stats", _lib.hl_runtime_stats(self._rt, ctypes.byref(s)))
        return s

    # -- plugins

    def load_plugin(self, path):
        handle = ctypes.c_void_p()
        _check("hl_plugin_load",
               _lib.hl_plugin_load(self._rt, os.fsencode(path), ctypes.byref(handle)))
        plugin = Plugin(self, handle, path)
        self._plugins.add(plugin)
        return plugin

    # -- the end

    def shutdown(self, deadline_ms=2000):
        """Shuts down (unloading every plugin still loaded) and frees the runtime. Returns the
        status name ("HL_STATUS_OK", or "HL_STATUS_TIMEOUT" with stragglers) and keeps the
        report in `shutdown_report`. Idempotent."""
        if self._rt is None:
            return None
        report = ShutdownReport(struct_size=ctypes.sizeof(ShutdownReport))
        status = _lib.hl_runtime_shutdown(self._rt, deadline_ms, ctypes.byref(report))
        name = _lib.hl_status_name(status).decode()
        error = _lib.hl_last_error().decode("utf-8", "replace") if status else ""
        for p in list(self._plugins):
            p._handle = None  # shutdown unloaded them; their handles are invalid now
        self._plugins.clear()
        if status not in (STATUS_OK, STATUS_TIMEOUT):
            raise HostloopError("hl_runtime_shutdown", status, error)
        _check("hl_runtime_free", _lib.hl_runtime_free(self._rt))
        self._rt = None
        self._sink_cb = None  # freed: the library will not call it again
        self.shutdown_report = report
        self.shutdown_error = error
        return name

    def _reraise(self):
        if self._callback_error is not None:
            e, self._callback_error = self._callback_error, None
            raise e


def version():
    v = _load().hl_version()
    return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"
