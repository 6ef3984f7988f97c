"""Native part of hostloop (PyO3)."""
from os import PathLike
from typing import Any, Callable

__version__: str

class HostloopError(Exception):
    """A hostloop call failed."""

class ShutDown(HostloopError):
    """The runtime is shut down."""

class Array:
    """A typed array from the sink. It owns a COPY of the data (zero copy needs an sdk change).

    ``numpy.asarray(arr)`` views the owned bytes without another copy (``__array_interface__``);
    ``arr.memoryview()`` gives a read-only memoryview of shape ``(count, components)``.
    """
    @property
    def format(self) -> str: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def itemsize(self) -> int: ...
    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
    def tobytes(self) -> bytes: ...
    def memoryview(self) -> memoryview: ...

class Plugin:
    """A loaded plugin (main thread only)."""
    @property
    def name(self) -> str: ...
    @property
    def loaded(self) -> bool: ...
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
    def load_plugin(self, path: str | PathLike[str], isolation: str = "in_process") -> Plugin:
        """isolation: "in_process", "own_process" or "shared:<group>"."""
    def __enter__(self) -> "Runtime": ...
    def __exit__(self, *args: object) -> None: ...
