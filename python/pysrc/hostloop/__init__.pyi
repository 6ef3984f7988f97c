"""hostloop for Python (see _hostloop.pyi)."""
from ._hostloop import Array as Array, HostloopError as HostloopError, Plugin as Plugin, ShutDown as ShutDown
from ._hostloop import Cancelled as Cancelled, Task as Task, TaskContext as TaskContext
from ._hostloop import current_task as current_task
from ._hostloop import Runtime as _NativeRuntime

__version__: str

class Runtime(_NativeRuntime):
    """The hostloop runtime; shut down automatically at interpreter exit."""
