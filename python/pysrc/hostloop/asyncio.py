"""Drive a hostloop Runtime from an asyncio event loop: pump whenever the wake fd is readable."""

import asyncio as _asyncio


def attach(rt, loop=None, budget_ms=2.0):
    """Watch ``rt.wake_fd()`` with ``loop.add_reader`` and pump on each wake-up.

    Returns a callable that detaches (removes the reader). Call it from the loop's thread.
    """
    loop = loop or _asyncio.get_event_loop()
    fd = rt.wake_fd()

    def on_readable():
        if rt.closed:
            loop.remove_reader(fd)
            return
        rt.pump(budget_ms)

    loop.add_reader(fd, on_readable)
    done = []

    def detach():
        if not done:
            done.append(True)
            loop.remove_reader(fd)

    return detach
