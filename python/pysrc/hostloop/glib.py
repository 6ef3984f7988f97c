"""Drive a hostloop Runtime from a GLib main loop (GTK, PyGObject applications).

    att = hostloop.glib.attach(rt)     # on the thread that runs the default main context
    GLib.MainLoop().run()
    att.detach()

The default main context watches ``rt.wake_fd()`` with ``GLib.unix_fd_add_full`` and pumps
(``budget_ms``) when it is readable. A source is not dispatched again while it runs, so a
callback that iterates the context itself does not re-enter the pump.
"""

import gi

try:
    gi.require_version("GLib", "2.0")
except ValueError:  # another version was required already: use what is loaded
    pass
from gi.repository import GLib  # noqa: E402

from ._attach import Attachment  # noqa: E402

__all__ = ["attach", "GLibAttachment"]


class GLibAttachment(Attachment):
    """An :class:`~hostloop._attach.Attachment` to GLib's default main context; ``source_id``
    is the fd source's id (``GLib.source_remove`` is what :meth:`detach` does)."""

    host = "glib"

    def __init__(self, rt, budget_ms, priority):
        super().__init__(rt, budget_ms)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int (GLib.PRIORITY_*), not {priority!r}")
        self.priority = priority
        self.source_id = None
        self._register()
        try:
            self.source_id = GLib.unix_fd_add_full(
                priority, self.fd, GLib.IOCondition.IN, self._on_fd
            )
        except BaseException:
            self._forget()
            raise

    def _on_fd(self, fd, condition):
        if condition & GLib.IOCondition.NVAL:  # the fd is not open: nothing to watch
            self._forget()
            return GLib.SOURCE_REMOVE
        self._pump("fd")
        return GLib.SOURCE_CONTINUE if self._attached else GLib.SOURCE_REMOVE

    def _unwatch(self):
        sid, self.source_id = self.source_id, None
        # Removing an id twice logs a critical warning: only remove a source that still exists.
        if sid is not None and GLib.MainContext.default().find_source_by_id(sid) is not None:
            GLib.source_remove(sid)


def attach(rt, budget_ms=2.0, priority=GLib.PRIORITY_DEFAULT):
    """Watch ``rt.wake_fd()`` in GLib's default main context and pump (``budget_ms``) whenever
    it is readable. Call it on the thread that runs that context (the runtime's main thread).
    ``priority`` is the fd source's priority. Returns a :class:`GLibAttachment`."""
    return GLibAttachment(rt, budget_ms, priority)
