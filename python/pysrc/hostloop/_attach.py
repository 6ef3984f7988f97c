"""What every host adapter returns: an :class:`Attachment` of a runtime's pump to an event loop.

An adapter (``hostloop.qt``, ``.tk``, ``.glib``, ``.asyncio``) watches the runtime's wake fd in
the host's loop and calls :meth:`Attachment._pump` when it is readable. The fd is level
triggered: a pump that runs out of budget with work left leaves it readable (the runtime rings
again), so the loop comes back after handling its own events; a pump that drains the queue
clears it. Each adapter only says how to watch the fd and how to stop watching it.
"""

import math
import numbers
import threading

from ._hostloop import ShutDown

# id(runtime) -> its live attachment. A runtime is driven by one loop at a time: two watchers of
# one fd in one loop replace each other (asyncio's add_reader does) or pump each other's work.
# The attachment holds the runtime while attached, so the id cannot be reused meanwhile.
_live = {}
_live_lock = threading.Lock()


def check_budget(budget_ms):
    """``budget_ms`` as a float, or a TypeError/ValueError saying what is wrong with it."""
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, numbers.Real):
        raise TypeError(f"budget_ms must be a number of milliseconds, not {budget_ms!r}")
    b = float(budget_ms)
    if not math.isfinite(b) or b <= 0.0 or b > 60000.0:
        raise ValueError(f"budget_ms must be > 0 and at most 60000, not {budget_ms!r}")
    return b


class _Report:
    """Reports an exception through ``sys.unraisablehook``, as the runtime reports callbacks'
    exceptions (Python has no public call for it: an exception leaving ``__del__`` is one)."""

    def __init__(self, exc):
        self.exc = exc

    def __del__(self):
        raise self.exc


def report(exc):
    """Sends ``exc`` to ``sys.unraisablehook`` (it never propagates to the caller)."""
    _Report(exc)


class Attachment:
    """A runtime's pump attached to a host event loop, as returned by an adapter's ``attach``.

    Counters: ``fd_pumps`` (pumps the wake fd caused), ``timer_pumps`` (pumps a fallback timer
    caused; only the Qt adapter has one), ``items`` (main-thread items those pumps ran).
    ``attached`` says whether it still pumps; :meth:`detach` (or calling the attachment, as the
    callable ``hostloop.asyncio.attach`` used to return) stops it. ``pumping`` is ``"fd"`` or
    ``"timer"`` while one of its pumps runs (so a sink can tell who delivered), else ``None``.

    A pump that raises ``ShutDown`` (the runtime was shut down) detaches it. Any other
    exception out of ``rt.pump`` (the callbacks' own never leave it: the runtime reports them to
    ``sys.unraisablehook``) means the loop cannot drive this runtime (a pump from the wrong
    thread, say): it goes to ``sys.unraisablehook``, is kept in ``error``, and the attachment
    detaches rather than fail again on every wake-up.
    """

    host = "?"

    def __init__(self, rt, budget_ms):
        self.budget_ms = check_budget(budget_ms)
        if rt.closed:
            raise ShutDown("the runtime is shut down")
        self.fd = rt.wake_fd()
        self.fd_pumps = 0
        self.timer_pumps = 0
        self.items = 0
        self.error = None
        self._rt = rt
        self._pumping = None
        self._attached = False
        self.thread_ident = threading.get_ident()

    def _register(self):
        """Marks the runtime as attached (call before watching the fd)."""
        with _live_lock:
            other = _live.get(id(self._rt))
            if other is not None and other._attached:
                raise RuntimeError(
                    f"this runtime is already attached (by hostloop.{other.host}); "
                    "detach that attachment first"
                )
            _live[id(self._rt)] = self
            self._attached = True

    @property
    def attached(self):
        """Whether the loop still pumps the runtime."""
        return self._attached

    @property
    def pumping(self):
        """``"fd"`` or ``"timer"`` while a pump of this attachment runs, else ``None``."""
        return self._pumping

    @property
    def runtime(self):
        """The runtime while attached, else ``None`` (detaching lets go of it)."""
        return self._rt if self._attached else None

    def _pump(self, source):
        """One pump for ``source`` ("fd" or "timer"). Never raises; returns the items run."""
        if not self._attached or self._pumping is not None:
            return 0  # detached, or a nested loop run by a callback of this very pump
        rt = self._rt
        self._pumping = source
        try:
            self._before_pump()
            ran = rt.pump(self.budget_ms)
        except ShutDown:
            ran = None
            failed = None
        except Exception as e:  # noqa: BLE001 - reported, never silent, never into the loop
            ran = None
            failed = e
        finally:
            self._pumping = None
        if ran is None:
            if failed is not None:
                self._fail(failed)
            else:
                try:
                    self.detach()
                except Exception as e:  # noqa: BLE001 - the host loop must not see it
                    report(e)
            return 0
        if source == "fd":
            self.fd_pumps += 1
        else:
            self.timer_pumps += 1
        self.items += ran
        if self._attached:
            try:
                self._after_pump()
            except Exception as e:  # noqa: BLE001 - cannot watch again: say so and stop
                self._fail(e)
        return ran

    def _fail(self, exc):
        """Reports ``exc`` (kept in ``error``) and detaches; never raises."""
        self.error = exc
        if hasattr(exc, "add_note"):  # Python 3.11+: say what it broke
            exc.add_note(f"hostloop.{self.host}: the pump failed, so the attachment detached")
        report(exc)
        try:
            self.detach()
        except Exception as e:  # noqa: BLE001 - the host loop must not see it
            report(e)

    def _before_pump(self):
        """Hook: stop watching while a pump runs (so a nested loop does not spin on the fd)."""

    def _after_pump(self):
        """Hook: watch again after a pump (only called while still attached)."""

    def _unwatch(self):
        """Hook: stop watching the fd in the host loop (called once, by detach)."""

    def detach(self):
        """Stops pumping: the loop no longer watches the wake fd. Idempotent; safe after
        ``rt.shutdown()`` and after the host loop is gone. Call it on the loop's thread."""
        if not self._attached:
            return
        try:
            self._unwatch()
        finally:
            self._forget()

    def _forget(self):
        """Marks it detached and lets go of the runtime (without touching the host loop)."""
        self._attached = False
        with _live_lock:
            if _live.get(id(self._rt)) is self:
                del _live[id(self._rt)]
        self._rt = None

    def __call__(self):
        """Same as :meth:`detach` (``hostloop.asyncio.attach`` used to return a callable)."""
        self.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    def __repr__(self):
        state = "attached" if self._attached else "detached"
        return (
            f"<hostloop.{self.host} Attachment {state} fd={self.fd} fd_pumps={self.fd_pumps} "
            f"timer_pumps={self.timer_pumps} items={self.items}>"
        )
