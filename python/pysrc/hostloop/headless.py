"""Drive a hostloop Runtime with no host event loop: ``blender -b``, ``hython``, ``mayapy``, a
render-farm job. The calling thread (the runtime's main thread) pumps, sleeping on the wake fd
with the GIL released in between.

    done = []
    rt.call_soon(lambda: done.append(True))
    hostloop.headless.run(rt, until=lambda: done, timeout_s=60)
"""

from ._attach import check_budget
from ._hostloop import ShutDown

__all__ = ["run", "serve_forever"]


def run(rt, until, timeout_s, budget_ms=2.0):
    """Pumps until ``until()`` is true (returns True) or ``timeout_s`` passes (False).
    ``until`` runs on this thread, before the first pump and after each one, and at least every
    50 ms while nothing arrives. A thin wrapper over ``rt.run_until``."""
    return rt.run_until(until, timeout_s, check_budget(budget_ms))


def serve_forever(rt, stop, budget_ms=2.0):
    """Pumps until ``stop`` is set (a ``threading.Event``, or a callable returning true; seen
    within 50 ms of being set from any thread): returns True. Returns False if the runtime is
    (or gets) shut down instead."""
    is_set = getattr(stop, "is_set", stop)
    if not callable(is_set):
        raise TypeError(f"stop must be a threading.Event or a callable, not {stop!r}")
    budget_ms = check_budget(budget_ms)
    while True:
        if rt.closed:
            return False
        try:
            if rt.run_until(lambda: is_set() or rt.closed, 3600.0, budget_ms):
                return not rt.closed
        except ShutDown:
            return False
