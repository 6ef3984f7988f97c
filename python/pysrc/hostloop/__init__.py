"""hostloop for Python: a runtime whose results reach the host's main thread inside ``pump()``.

Create the :class:`Runtime` on the host's main thread. The sink receives ``bytes`` or an
:class:`Array` — a simulation's frame is hostloop's own memory, viewed without a copy
(``numpy.asarray(arr)``, ``arr.memoryview()``), valid for new views inside the callback
(``arr.keep()`` to hold it). Every live runtime is shut down at interpreter exit.

``rt.spawn(fn, *args, on_main=..., on_progress=..., on_error=...)`` runs ``fn`` on the runtime's
IO lane (a ``hostloop-io-<i>`` thread, holding the GIL while Python runs: for downloads and file
IO, not for CPU-heavy Python) and returns a :class:`Task`. Inside ``fn``, :func:`current_task`
returns its :class:`TaskContext`: ``.cancelled``, ``.check()`` (raises :class:`Cancelled`) and
``.progress(fraction, message=None)``. The callbacks run only inside ``pump()`` on the main
thread.
"""

import atexit
import weakref

from . import _hostloop
from ._hostloop import Array, HostloopError, Plugin, ShutDown
from ._hostloop import Cancelled, Task, TaskContext, current_task

__version__ = _hostloop.__version__
__all__ = ["Runtime", "Plugin", "Array", "HostloopError", "ShutDown", "__version__",
           "Task", "TaskContext", "Cancelled", "current_task"]

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
    # A task function that ignored its cancel token would still run Python while the
    # interpreter finalizes (and abort the process when it next wakes): interrupt it, and
    # park what will not stop (see _hostloop._interrupt_tasks).
    try:
        _hostloop._interrupt_tasks(1.0, _Parked)
    except Exception:
        pass


class _Parked(BaseException):
    """Sent to a task function still running at interpreter exit: building it parks the thread
    outside Python until the process exits."""

    def __init__(self, *args):
        _hostloop._park()
