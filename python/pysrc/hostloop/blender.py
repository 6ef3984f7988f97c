"""Drive a hostloop Runtime from Blender's main loop, and own one runtime per add-on.

    att = hostloop.blender.attach(rt)      # on Blender's main thread (where rt was made)
    ...
    att.detach()

Blender has no API to watch a file descriptor, so :func:`attach` registers a
``bpy.app.timers`` callback (``persistent=True``, first run at once). Each tick does a
zero-timeout ``select.select([fd], [], [], 0)`` on ``rt.wake_fd()`` and pumps (``budget_ms``)
only when the fd is readable; those pumps are counted in ``fd_pumps``. The tick returns the next
interval: :data:`BUSY_INTERVAL_S` (0: the next turn of Blender's loop, which handles its events
and redraws in between) after a tick that found the fd readable, since a pump that spent its
budget with work left keeps the fd readable; ``interval_s`` (default :data:`IDLE_INTERVAL_S`,
1/60 s: a result waits at most about one display frame) after a tick that found nothing.

Everything the runtime delivers (the sink, ``call_soon`` and ``adopt`` callbacks) runs inside
those pumps, on Blender's main thread, where ``bpy`` may be used. Exceptions they raise go to
``sys.unraisablehook`` and the timer keeps ticking.

File > New and File > Open do not stop it: the timer is persistent, and a ``load_post``
handler (``@bpy.app.handlers.persistent``) registers it again should it be missing after a
load. The attachment detaches itself when the runtime is shut down (its next tick sees it).

``blender -b`` runs no event loop, so no timer ever fires there: drive the runtime with
``rt.run_until`` / :mod:`hostloop.headless` instead (attaching is harmless, and an add-on's
``register()`` may call :func:`register_runtime` in either mode).

For add-ons, :func:`register_runtime` / :func:`unregister_runtime` (call them from the add-on's
``register()`` / ``unregister()``) own one runtime per name: created and attached once, detached
and shut down (within its deadline) on unregister, and at Blender's exit.
"""

import atexit
import math
import numbers
import select
import threading

import bpy

from . import Runtime
from ._attach import Attachment, report

__all__ = [
    "attach", "BlenderAttachment", "register_runtime", "unregister_runtime", "attachment",
    "BUSY_INTERVAL_S", "IDLE_INTERVAL_S",
]

#: The interval a tick returns after it found the wake fd readable (and pumped).
BUSY_INTERVAL_S = 0.0
#: The default interval after a tick that found the fd not readable (``interval_s``).
IDLE_INTERVAL_S = 1.0 / 60.0


def _seconds(what, value, high, allow_zero):
    """``value`` as a float, or a TypeError/ValueError saying what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds, not {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (v == 0.0 and not allow_zero) or v > high:
        low = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be {low} and at most {high:g}, not {value!r}")
    return v


def _check_main_thread(what):
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"hostloop.blender.{what} must be called on Blender's main thread")


class BlenderAttachment(Attachment):
    """An :class:`~hostloop._attach.Attachment` driven by a ``bpy.app.timers`` callback.

    Besides the shared counters (``fd_pumps``, ``timer_pumps`` (always 0 here: every pump is
    gated on the fd), ``items``): ``ticks`` (timer calls), ``idle_ticks`` (ticks that found the
    fd not readable), ``loads`` (files loaded while attached) and ``reregistered`` (loads after
    which the timer was missing and was registered again). ``interval_s`` is the idle interval.
    :meth:`tick` is the timer callback itself.
    """

    host = "blender"

    def __init__(self, rt, budget_ms, interval_s):
        _check_main_thread("attach")
        super().__init__(rt, budget_ms)
        self.interval_s = _seconds("interval_s", interval_s, 60.0, allow_zero=False)
        self.ticks = 0
        self.idle_ticks = 0
        self.loads = 0
        self.reregistered = 0

        # bpy.app.timers knows a callback by its object, and a bound method is a new object at
        # each access: keep one function for register / is_registered / unregister.
        def timer():
            return self.tick()

        @bpy.app.handlers.persistent
        def on_load_post(*_args):
            self._on_load_post()

        timer.__qualname__ = "hostloop.blender.timer"
        on_load_post.__qualname__ = "hostloop.blender.on_load_post"
        self._timer = timer
        self._on_load = on_load_post
        self._register()
        try:
            bpy.app.timers.register(timer, first_interval=0.0, persistent=True)
            bpy.app.handlers.load_post.append(on_load_post)
        except BaseException:
            self.detach()
            raise

    @property
    def timer_registered(self):
        """Whether Blender holds the timer now."""
        return bpy.app.timers.is_registered(self._timer)

    def tick(self):
        """One tick (what the timer calls): pump if the wake fd is readable. Returns the next
        interval in seconds, or None (the timer ends) once detached. Never raises."""
        try:
            if not self._attached:
                return None
            if self._rt.closed:  # shut down elsewhere: its fd may be closed, or reused
                self.detach()
                return None
            self.ticks += 1
            readable, _, _ = select.select([self.fd], [], [], 0)
            if not readable:
                self.idle_ticks += 1
                return self.interval_s
            self._pump("fd")
            return BUSY_INTERVAL_S if self._attached else None
        except Exception as e:  # noqa: BLE001 - a timer that raises is dropped by Blender
            self._fail(e)  # reported (sys.unraisablehook), kept in `error`, detached
            return None

    def _on_load_post(self):
        if not self._attached:
            return
        self.loads += 1
        try:
            if not bpy.app.timers.is_registered(self._timer):
                bpy.app.timers.register(self._timer, first_interval=0.0, persistent=True)
                self.reregistered += 1
        except Exception as e:  # noqa: BLE001 - a handler's exception would only be printed
            report(e)

    def _unwatch(self):
        # Also runs at interpreter exit, when Blender may have freed its timers already.
        try:
            if bpy.app.timers.is_registered(self._timer):
                bpy.app.timers.unregister(self._timer)
        finally:
            handlers = bpy.app.handlers.load_post
            while self._on_load in handlers:
                handlers.remove(self._on_load)


def attach(rt, budget_ms=2.0, interval_s=IDLE_INTERVAL_S):
    """Pump ``rt`` from a persistent ``bpy.app.timers`` callback, gated on its wake fd.

    Each tick selects on ``rt.wake_fd()`` with a zero timeout and pumps for ``budget_ms`` only
    when it is readable; it comes back at Blender's next loop turn after a pump
    (:data:`BUSY_INTERVAL_S`), after ``interval_s`` seconds (default 1/60) when idle. Survives
    file loads; detaches itself once ``rt`` is shut down. Call it on Blender's main thread,
    which must be the runtime's. Returns a :class:`BlenderAttachment`; ``detach()`` (idempotent)
    unregisters the timer and the load handler.
    """
    return BlenderAttachment(rt, budget_ms, interval_s)


# -- one runtime per add-on ----------------------------------------------------------------------


class _Registration:
    __slots__ = ("runtime", "attachment", "workers", "deadline_s")

    def __init__(self, runtime, attachment, workers, deadline_s):
        self.runtime = runtime
        self.attachment = attachment
        self.workers = workers
        self.deadline_s = deadline_s


# name -> _Registration. Kept across an importlib.reload of this module (the add-ons' runtimes
# stay known, so unregister and exit still shut them down).
if "_registry" not in globals():
    _registry = {}


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (the add-on's module name), not {name!r}")
    if not name:
        raise ValueError("name must not be empty")
    return name


def register_runtime(name, workers=None, budget_ms=2.0, interval_s=IDLE_INTERVAL_S,
                     deadline_s=5.0):
    """The runtime registered as ``name`` (an add-on's module name, say), made and attached
    (:func:`attach`, ``budget_ms``, ``interval_s``) on the first call. Call it from the add-on's
    ``register()``, on Blender's main thread.

    Later calls return the same runtime while it runs (one made with other ``workers`` is a
    ValueError); one that was shut down meanwhile is replaced. :func:`unregister_runtime`
    detaches it and shuts it down within ``deadline_s``; so does Blender's exit.
    """
    _check_main_thread("register_runtime")
    _check_name(name)
    deadline_s = _seconds("deadline_s", deadline_s, 1.0e6, allow_zero=True)
    reg = _registry.get(name)
    if reg is not None:
        if not reg.runtime.closed and reg.attachment.attached:
            if workers is not None and workers != reg.workers:
                raise ValueError(
                    f"runtime {name!r} is registered with workers={reg.workers!r}, not "
                    f"{workers!r}: unregister it first")
            return reg.runtime
        del _registry[name]  # shut down (or detached) behind our back: start again
        reg.attachment.detach()
        _shutdown(reg)
    rt = Runtime(workers=workers)
    try:
        att = attach(rt, budget_ms, interval_s)
    except BaseException:
        rt.shutdown(deadline_s)
        raise
    _registry[name] = _Registration(rt, att, workers, deadline_s)
    return rt


def unregister_runtime(name):
    """Detaches and shuts down the runtime registered as ``name`` (within the ``deadline_s``
    given to :func:`register_runtime`; the GIL is released meanwhile). Returns the shutdown
    report (a dict, see ``Runtime.shutdown``), or None if none is registered. Idempotent."""
    _check_main_thread("unregister_runtime")
    reg = _registry.pop(_check_name(name), None)
    if reg is None:
        return None
    try:
        reg.attachment.detach()
    finally:
        result = _shutdown(reg)
    return result


def attachment(name):
    """The :class:`BlenderAttachment` of the runtime registered as ``name``, or None."""
    reg = _registry.get(_check_name(name))
    return reg.attachment if reg is not None else None


def _shutdown(reg):
    return reg.runtime.shutdown(reg.deadline_s)


@atexit.register
def _unregister_all():
    """Blender does not unregister add-ons when it quits: shut their runtimes down here."""
    while _registry:
        _name, reg = _registry.popitem()
        try:
            _shutdown(reg)
        except Exception:  # noqa: BLE001 - exiting: nothing left to tell
            pass
        try:
            reg.attachment.detach()
        except Exception:  # noqa: BLE001
            pass
