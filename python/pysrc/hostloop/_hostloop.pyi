"""Native part of hostloop (PyO3)."""
from os import PathLike
from typing import Any, Callable

__version__: str

class HostloopError(Exception):
    """A hostloop call failed."""

class ShutDown(HostloopError):
    """The runtime is shut down."""

class Cancelled(HostloopError):
    """The task was cancelled (Task.cancel(), or the runtime shut down)."""

class TaskContext:
    """The cancel token and progress reporter of a running task: ``current_task()`` inside its
    function. Usable from any thread while the function runs; afterwards every member raises
    HostloopError."""
    @property
    def cancelled(self) -> bool:
        """Whether the task was cancelled (Task.cancel(), or the runtime is shutting down)."""
    def check(self) -> None:
        """Raise Cancelled if the task was cancelled."""
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (fraction clamped to 0..1; NaN raises ValueError), coalesced."""
    @property
    def name(self) -> str | None: ...
    @property
    def id(self) -> int: ...

class Task:
    """A Python callable running (or queued) on the IO lane; made by Runtime.spawn."""
    def cancel(self) -> bool:
        """Stop it: a queued task never runs, a running one sees current_task().cancelled and
        resolves as cancelled. False if it was already done."""
    @property
    def cancelled(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def status(self) -> str:
        """"queued", "running", "finished", "failed" or "cancelled"."""
    @property
    def progress(self) -> tuple[float, str | None]:
        """The latest (fraction, message) the function reported."""
    @property
    def name(self) -> str | None: ...
    def result(self, timeout_s: float) -> Any:
        """Wait up to timeout_s (GIL released; 0 polls) for the return value; raises the
        function's exception, Cancelled or TimeoutError. On the main thread it does not pump:
        a function waiting for the main thread makes it raise TimeoutError, never deadlock."""

def current_task() -> TaskContext | None:
    """The running task's context on the thread running its function, else None."""

class Array:
    """A typed array from the sink: ``count`` records of ``components`` elements.

    Valid inside its sink callback: ``memoryview()``, ``numpy.asarray(arr)`` and ``tobytes()``
    work there, and what they return stays valid afterwards (it keeps the memory alive). After
    the callback returns the Array refuses new views (HostloopError); ``keep()`` inside the
    callback gives one you may hold. When ``lent`` is True the views are hostloop's own memory
    (a simulation's frame), no copy; otherwise the Array holds a packed copy.
    """
    @property
    def format(self) -> str: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def itemsize(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def lent(self) -> bool: ...
    @property
    def valid(self) -> bool: ...
    @property
    def address(self) -> int: ...
    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
    def keep(self) -> Array: ...
    def tobytes(self) -> bytes: ...
    def memoryview(self) -> memoryview: ...

class Plugin:
    """A loaded plugin (main thread only)."""
    @property
    def name(self) -> str: ...
    @property
    def loaded(self) -> bool: ...
    def info(self) -> dict[str, Any]:
        """name, version, path, generation, isolation, pid (worker), restarts, crashes,
        last_crash, down."""
    def unload(self, deadline_s: float = 5.0) -> dict[str, Any]:
        """Unload (GIL released). A second unload raises HostloopError."""
    def reload(self, path: str | PathLike[str] | None = None, deadline_s: float = 5.0) -> None: ...

class Runtime:
    """The hostloop runtime; the thread that creates it is its main thread."""
    def __init__(self, workers: int | None = None) -> None: ...
    @property
    def closed(self) -> bool: ...
    def pump(self, budget_ms: float = 2.0) -> int:
        """Run queued main-thread work for about budget_ms (0 < budget_ms <= 60000); items run."""
    def wake_fd(self) -> int:
        """The doorbell fd, readable when work waits for a pump. Do not read or close it."""
    def run_until(self, predicate: Callable[[], bool], timeout_s: float, budget_ms: float = 2.0) -> bool:
        """Pump until predicate() is true (True) or timeout_s passes (False); waits with the GIL released."""
    def shutdown(self, deadline_s: float = 5.0) -> dict[str, Any]:
        """Shut down (GIL released). Idempotent; afterwards other methods raise ShutDown."""
    def stats(self) -> dict[str, Any]: ...
    def set_sink(self, callback: Callable[[str, bytes | Array], object] | None) -> None:
        """callback(topic, payload) runs inside pump() on the main thread. Its exceptions go to
        sys.unraisablehook and the loop keeps running."""
    def post_event(self, topic: str, data: bytes, coalesce: bool = False) -> None: ...
    def post_frame_changed(self, frame: float) -> None: ...
    def post_playback(self, playing: bool) -> None:
        """Posts a PlaybackStarted (True) or PlaybackStopped (False) host event."""
    def load_plugin(
        self,
        path: str | PathLike[str],
        isolation: str = "in_process",
        worker: str | PathLike[str] | None = None,
    ) -> Plugin:
        """isolation: "in_process", "own_process" or "shared:<group>"; worker: the worker
        program (default $HOSTLOOP_WORKER, else the one the wheel carries)."""
    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run callback() inside a later pump() on the main thread (callable from any thread)."""
    def adopt(self, future: Any, on_main: Callable[[Any], object]) -> None:
        """When the concurrent.futures.Future is done, on_main(future) runs inside a pump()."""
    def spawn(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        on_main: Callable[[Any], object] | None = None,
        on_progress: Callable[[float, str | None], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Task:
        """Run func(*args, **kwargs) on the IO lane (with the GIL). on_main(value) /
        on_error(exc) (default sys.unraisablehook; a cancellation only if on_error is given) /
        on_progress(fraction, message) run inside pump() on the main thread."""
    def __enter__(self) -> "Runtime": ...
    def __exit__(self, *args: object) -> None: ...
