"""Checks every host adapter must pass, run by test_adapter_*.py against its real loop.

A test file supplies a harness with:

* ``attach(rt, **kw)`` -> the adapter's Attachment (its loop's own arguments filled in);
* ``spin(until, timeout_s)`` -> runs the real loop until ``until()`` is true (True) or the
  deadline passes (False); ``until`` is checked from the loop every few milliseconds;
* ``turn(n)`` -> runs the loop through ``n`` of its own iterations (idle or zero-delay
  callbacks chained one after the other), with no pumping of its own.

Every wait is for a condition with a generous deadline; nothing sleeps a fixed time.
"""

import os
import select
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import hostloop

DEADLINE_S = 30.0


def hostloop_tasks():
    """Names of this process's threads that hostloop started (`hostloop-worker-0`, ...)."""
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith("hostloop"):
            names.append(name)
    return names


class Baseline:
    """Python threads and hostloop threads before a runtime was made."""

    def __init__(self):
        self.python_threads = threading.active_count()
        self.hostloop = hostloop_tasks()

    def check_clean(self):
        """After shutdown: the Python thread count is back and no hostloop thread remains
        (waits for the OS to reap joined threads, at most DEADLINE_S)."""
        deadline = time.monotonic() + DEADLINE_S
        while hostloop_tasks() != self.hostloop and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hostloop_tasks() == self.hostloop
        assert threading.active_count() == self.python_threads, threading.enumerate()


def in_thread(fn):
    """Runs ``fn`` on a new thread; returns the (started) thread."""
    t = threading.Thread(target=fn, name="poster")
    t.start()
    return t


def wait_readable(fd):
    r, _, _ = select.select([fd], [], [], DEADLINE_S)
    assert r == [fd], "the wake fd did not become readable"


def results_on_main_thread(h):
    """Work posted from other threads (call_soon, adopted futures) runs on the loop's (main)
    thread, inside pumps the wake fd caused, and the attachment counts every item."""
    base = Baseline()
    rt = hostloop.Runtime(workers=2)
    main = threading.get_ident()
    att = h.attach(rt)
    assert att.attached and att.fd == rt.wake_fd()
    got, adopted = [], []
    n = 40

    def post():
        for i in range(n):
            rt.call_soon(lambda i=i: got.append((i, threading.get_ident())))

    with ThreadPoolExecutor(2) as ex:
        for i in range(10):
            rt.adopt(ex.submit(pow, i, 2),
                     lambda f: adopted.append((f.result(), threading.get_ident())))
        t = in_thread(post)
        assert h.spin(lambda: len(got) == n and len(adopted) == 10, DEADLINE_S)
        t.join(DEADLINE_S)
    assert [i for i, _ in got] == list(range(n))  # FIFO
    assert sorted(v for v, _ in adopted) == [i * i for i in range(10)]
    assert {tid for _, tid in got + adopted} == {main}
    assert att.fd_pumps > 0
    stats = rt.stats()
    assert att.items == n + 10 == stats["main_items_run"]  # every item ran in its pumps
    assert stats["pumps"] == att.fd_pumps + att.timer_pumps
    att.detach()
    assert not att.attached
    rt.shutdown(5.0)
    base.check_clean()
    return att


def raising_callback_is_reported(h, monkeypatch):
    """A callback that raises goes to sys.unraisablehook; the loop, the attachment and the
    items after it live on."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    base = Baseline()
    rt = hostloop.Runtime(workers=1)
    att = h.attach(rt)
    got = []

    def bad():
        raise ValueError("raised by a callback")

    def post():
        rt.call_soon(bad)
        rt.call_soon(lambda: got.append("after"))

    in_thread(post).join(DEADLINE_S)
    assert h.spin(lambda: got and seen, DEADLINE_S)
    assert seen[0].exc_type is ValueError and str(seen[0].exc_value) == "raised by a callback"
    assert att.attached and att.error is None
    in_thread(lambda: rt.call_soon(lambda: got.append("later"))).join(DEADLINE_S)
    assert h.spin(lambda: "later" in got, DEADLINE_S)
    assert got == ["after", "later"] and len(seen) == 1
    att.detach()
    rt.shutdown(5.0)
    base.check_clean()


def budgets_hold(h):
    """Tiny callbacks never spend a pump's budget (no overrun is counted); slow ones are split
    over many pumps by it, and the fd brings the loop back until the last one ran (a pump
    that stops with work left leaves the fd readable: no lost wake-up)."""
    base = Baseline()
    rt = hostloop.Runtime(workers=1)
    att = h.attach(rt, budget_ms=2.0)
    tiny = []
    in_thread(lambda: [rt.call_soon(lambda i=i: tiny.append(i)) for i in range(200)]).join(
        DEADLINE_S)  # all posted before the loop runs: no GIL contention inside a pump
    assert h.spin(lambda: len(tiny) == 200, DEADLINE_S)
    assert rt.stats()["budget_overruns"] == 0
    assert att.items == 200

    # Items of >= 1 ms each with a 2 ms budget: a pump runs two of them (the second ends past
    # the deadline), never more; 20 items take at least 10 pumps.
    per_pump = {}

    def slow():
        time.sleep(0.001)
        k = att.fd_pumps + att.timer_pumps  # the number of the pump running this item
        per_pump[k] = per_pump.get(k, 0) + 1

    pumps_before = att.fd_pumps + att.timer_pumps
    in_thread(lambda: [rt.call_soon(slow) for _ in range(20)]).join(DEADLINE_S)
    assert h.spin(lambda: sum(per_pump.values()) == 20, DEADLINE_S)
    assert max(per_pump.values()) <= 2, per_pump
    assert att.fd_pumps + att.timer_pumps - pumps_before >= 10
    assert att.fd_pumps > 0
    assert rt.stats()["budget_overruns"] > 0  # those pumps did spend their budget
    att.detach()
    rt.shutdown(5.0)
    base.check_clean()


def detach_stops_pumping(h):
    """After detach the loop leaves queued work alone (the fd stays readable) until someone
    pumps by hand; detach is idempotent, and the runtime can be attached again."""
    base = Baseline()
    rt = hostloop.Runtime(workers=1)
    att = h.attach(rt)
    att.detach()
    att.detach()
    assert not att.attached and att.runtime is None
    got = []
    in_thread(lambda: rt.call_soon(lambda: got.append(threading.get_ident()))).join(DEADLINE_S)
    wait_readable(rt.wake_fd())
    pumps = rt.stats()["pumps"]
    h.turn(50)
    assert got == [] and rt.stats()["pumps"] == pumps and att.fd_pumps == 0
    assert rt.pump(2.0) == 1 and got == [threading.get_ident()]

    again = h.attach(rt)
    in_thread(lambda: rt.call_soon(lambda: got.append("again"))).join(DEADLINE_S)
    assert h.spin(lambda: "again" in got, DEADLINE_S)
    assert again.fd_pumps > 0 and att.fd_pumps == 0
    rt.shutdown(5.0)
    again.detach()  # after shutdown: fine
    again.detach()
    base.check_clean()


def shutdown_detaches(h):
    """A runtime shut down while attached: the next wake-up's pump meets ShutDown and the
    attachment detaches itself (no error, no spinning on the fd); no thread is left."""
    base = Baseline()
    rt = hostloop.Runtime(workers=1)
    att = h.attach(rt)
    in_thread(lambda: rt.call_soon(lambda: None)).join(DEADLINE_S)
    wait_readable(rt.wake_fd())
    rt.shutdown(5.0)
    assert h.spin(lambda: not att.attached, DEADLINE_S)
    assert att.error is None and att.items == 0
    att.detach()
    base.check_clean()


def one_attachment_per_runtime(h):
    """A second attach of an attached runtime is refused with a clear error; after detach it
    is allowed. A bad budget is refused up front."""
    import pytest

    with hostloop.Runtime(workers=1) as rt:
        att = h.attach(rt)
        with pytest.raises(RuntimeError, match="already attached"):
            h.attach(rt)
        att.detach()
        for bad in (0, -1.0, float("nan"), float("inf"), 1e9):
            with pytest.raises(ValueError):
                h.attach(rt, budget_ms=bad)
        with pytest.raises(TypeError):
            h.attach(rt, budget_ms="fast")
        h.attach(rt).detach()
    with pytest.raises(hostloop.ShutDown):
        h.attach(rt)


def nested_loop_in_callback(h, run_nested):
    """A callback that runs the host loop itself (``run_nested()``: update(), processEvents,
    a context iteration) while work is queued neither re-enters the pump nor spins: the
    outer pump finishes, the rest arrives, nothing is reported."""
    base = Baseline()
    rt = hostloop.Runtime(workers=1)
    att = h.attach(rt)
    got = []

    def nests():
        run_nested()
        got.append("nested")

    def post():
        rt.call_soon(nests)
        for i in range(5):
            rt.call_soon(lambda i=i: got.append(i))

    in_thread(post).join(DEADLINE_S)
    assert h.spin(lambda: len(got) == 6, DEADLINE_S)
    assert got == ["nested", 0, 1, 2, 3, 4]
    assert att.attached and att.error is None
    att.detach()
    rt.shutdown(5.0)
    base.check_clean()


def plugin_frames_reach_sink(h, particles):
    """The particles plugin's frames arrive through the sink on the main thread, inside the
    attachment's wake-fd pumps (pumping == "fd"), until the plugin is unloaded."""
    base = Baseline()
    rt = hostloop.Runtime(workers=1)
    main = threading.get_ident()
    frames = []
    att = None

    def sink(topic, payload):
        if topic == "particles/positions":
            frames.append((payload.shape, threading.get_ident(), att.pumping))

    rt.set_sink(sink)
    plugin = rt.load_plugin(particles)
    rt.post_event("particles/configure", b"agents=2000 playing=1")
    att = h.attach(rt)
    assert h.spin(lambda: len([f for f in frames if f[0] == (2000, 3)]) >= 5, DEADLINE_S)
    att.detach()
    assert {tid for _, tid, _ in frames} == {main}
    who = {w for _, _, w in frames}  # inside its pumps: fd ones (Qt's timer may get some)
    assert "fd" in who and who <= {"fd", "timer"} and att.fd_pumps > 0
    assert plugin.unload(5.0)["stragglers"] == 0
    rt.shutdown(5.0)
    base.check_clean()


class AdapterContract:
    """The checks every adapter passes, as tests: a test module subclasses it as
    ``class TestContract(checks.AdapterContract)`` and provides the ``h`` fixture."""

    def test_raising_callback_is_reported(self, h, monkeypatch):
        raising_callback_is_reported(h, monkeypatch)

    def test_budgets_hold(self, h):
        budgets_hold(h)

    def test_detach_stops_pumping(self, h):
        detach_stops_pumping(h)

    def test_shutdown_detaches(self, h):
        shutdown_detaches(h)

    def test_plugin_frames_reach_sink(self, h, particles):
        plugin_frames_reach_sink(h, particles)
