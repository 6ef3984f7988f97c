"""hostloop for Python (see _hostloop.pyi)."""
from ._hostloop import Array as Array, HostloopError as HostloopError, Plugin as Plugin, ShutDown as ShutDown
from ._hostloop import Runtime as _NativeRuntime

__version__: str

class Runtime(_NativeRuntime):
    """The hostloop runtime; shut down automatically at interpreter exit."""
