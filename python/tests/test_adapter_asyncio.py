"""hostloop.asyncio against a real asyncio event loop (the default selector loop)."""

import asyncio
import sys
import threading

import pytest

import adapter_checks as checks
import hostloop
import hostloop.asyncio as hl_asyncio


class AsyncioHarness:
    def __init__(self):
        self.loop = asyncio.new_event_loop()

    def attach(self, rt, **kw):
        return hl_asyncio.attach(rt, loop=self.loop, **kw)

    def spin(self, until, timeout_s):
        async def wait():
            deadline = self.loop.time() + timeout_s
            while not until():
                if self.loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.005)
            return True

        return self.loop.run_until_complete(wait())

    def turn(self, n):
        async def turns():
            for _ in range(n):
                await asyncio.sleep(0)  # one loop iteration each (the selector polled)

        self.loop.run_until_complete(turns())

    def close(self):
        self.loop.close()


@pytest.fixture
def h():
    harness = AsyncioHarness()
    yield harness
    harness.close()


def test_results_on_main_thread(h):
    att = checks.results_on_main_thread(h)
    assert att.timer_pumps == 0  # no fallback timer here
    assert att.loop is h.loop


def test_one_attachment_per_runtime(h):
    checks.one_attachment_per_runtime(h)


def test_attach_in_coroutine_uses_running_loop_and_old_callable_api(rt):
    """loop=None inside a coroutine is the running loop; calling the attachment detaches (the
    callable attach used to return)."""

    async def main():
        att = hl_asyncio.attach(rt)
        got = []
        threading.Thread(target=lambda: rt.call_soon(lambda: got.append(1))).start()
        while not got:
            await asyncio.sleep(0.005)
        att()
        return att, asyncio.get_running_loop()

    att, loop = asyncio.run(main())
    assert att.loop is loop and not att.attached and att.fd_pumps >= 1
    assert isinstance(att, hostloop._attach.Attachment)


def test_pump_that_cannot_run_is_reported_and_detaches(rt, monkeypatch):
    """A loop on another thread than the runtime's main thread: its pump raises (wrong thread).
    That is reported to sys.unraisablehook, kept in att.error, and the attachment detaches
    instead of failing on every wake-up."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    result = {}

    def other_thread():
        loop = asyncio.new_event_loop()
        try:
            att = hl_asyncio.attach(rt, loop=loop)
            rt.call_soon(lambda: None)

            async def until_detached():
                deadline = loop.time() + checks.DEADLINE_S
                while att.attached and loop.time() < deadline:
                    await asyncio.sleep(0.005)

            loop.run_until_complete(until_detached())
            result["att"] = att
        finally:
            loop.close()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(checks.DEADLINE_S)
    att = result["att"]
    assert not att.attached and isinstance(att.error, hostloop.HostloopError)
    assert len(seen) == 1 and seen[0].exc_value is att.error
    assert rt.pump(2.0) == 1  # the item is still there for the right thread


class TestContract(checks.AdapterContract):
    """raising callbacks, budgets, detach, shutdown, plugin frames (adapter_checks)."""
