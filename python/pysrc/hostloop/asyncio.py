"""Drive a hostloop Runtime from an asyncio event loop: pump whenever the wake fd is readable.

    att = hostloop.asyncio.attach(rt)          # inside a coroutine, or pass loop=
    ...
    att.detach()

The loop watches ``rt.wake_fd()`` with ``loop.add_reader`` (a selector event loop: the default
on Unix). Call ``attach`` and ``detach`` on the loop's thread, which must be the runtime's main
thread.
"""

import asyncio as _asyncio

from ._attach import Attachment

__all__ = ["attach", "AsyncioAttachment"]


class AsyncioAttachment(Attachment):
    """An :class:`~hostloop._attach.Attachment` whose loop is an asyncio event loop (``loop``)."""

    host = "asyncio"

    def __init__(self, rt, loop, budget_ms):
        super().__init__(rt, budget_ms)
        self.loop = loop
        self._register()
        try:
            loop.add_reader(self.fd, self._pump, "fd")
        except BaseException:
            self._forget()
            raise

    def _unwatch(self):
        # remove_reader on a closed loop does nothing (and returns False).
        self.loop.remove_reader(self.fd)


def attach(rt, loop=None, budget_ms=2.0):
    """Watch ``rt.wake_fd()`` with ``loop.add_reader`` and pump (``budget_ms``) on each wake-up.

    ``loop`` defaults to the running loop (else ``asyncio.get_event_loop()``). Returns an
    :class:`AsyncioAttachment`: ``detach()`` (or calling it) removes the reader; it counts
    ``fd_pumps`` and ``items``.
    """
    if loop is None:
        try:
            loop = _asyncio.get_running_loop()
        except RuntimeError:
            loop = _asyncio.get_event_loop()
    return AsyncioAttachment(rt, loop, budget_ms)
