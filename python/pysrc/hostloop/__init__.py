"""hostloop for Python: a runtime whose results reach the host's main thread inside ``pump()``.

Create the :class:`Runtime` on the host's main thread. Sink payloads are copies for now
(``bytes`` or :class:`Array`). Every live runtime is shut down at interpreter exit.
"""

import atexit
import weakref

from . import _hostloop
from ._hostloop import Array, HostloopError, Plugin, ShutDown

__version__ = _hostloop.__version__
__all__ = ["Runtime", "Plugin", "Array", "HostloopError", "ShutDown", "__version__"]

_live = weakref.WeakSet()


class Runtime(_hostloop.Runtime):
    __doc__ = _hostloop.Runtime.__doc__

    def __init__(self, workers=None):
        _live.add(self)


@atexit.register
def _shutdown_all():
    for rt in list(_live):
        try:
            rt.shutdown(2.0)
        except Exception:
            pass
