"""hostloop.headless: no host loop (blender -b, hython, mayapy); the calling thread pumps,
sleeping on the wake fd in between."""

import sys
import threading

import pytest

import adapter_checks as checks
import hostloop
import hostloop.headless as headless


def test_run_delivers_on_main_thread_and_reports_raising_callbacks(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    base = checks.Baseline()
    rt = hostloop.Runtime(workers=1)
    main = threading.get_ident()
    got = []

    def bad():
        raise ValueError("raised by a callback")

    def post():
        for i in range(20):
            rt.call_soon(lambda i=i: got.append((i, threading.get_ident())))
            if i == 10:
                rt.call_soon(bad)

    t = checks.in_thread(post)
    assert headless.run(rt, until=lambda: len(got) == 20, timeout_s=checks.DEADLINE_S)
    t.join(checks.DEADLINE_S)
    assert [i for i, _ in got] == list(range(20)) and {tid for _, tid in got} == {main}
    assert len(seen) == 1 and seen[0].exc_type is ValueError
    stats = rt.stats()
    assert stats["doorbell_rings"] >= 1 and stats["main_items_run"] == 21
    assert stats["budget_overruns"] == 0
    rt.shutdown(5.0)
    base.check_clean()


def test_run_times_out_false(rt):
    assert headless.run(rt, until=lambda: False, timeout_s=0.05) is False
    with pytest.raises(ValueError):
        headless.run(rt, until=lambda: True, timeout_s=1.0, budget_ms=0)


def test_serve_forever_until_stop_event():
    """A worker-style host: serve_forever pumps until another thread sets the event."""
    base = checks.Baseline()
    rt = hostloop.Runtime(workers=1)
    stop = threading.Event()
    got = []

    def producer():
        done = threading.Event()
        for i in range(5):
            rt.call_soon(lambda i=i: got.append(i))
        rt.call_soon(done.set)
        done.wait(checks.DEADLINE_S)  # set on the main thread, inside a pump
        stop.set()

    t = checks.in_thread(producer)
    assert headless.serve_forever(rt, stop) is True
    t.join(checks.DEADLINE_S)
    assert got == list(range(5))
    rt.shutdown(5.0)
    base.check_clean()


def test_serve_forever_returns_false_once_shut_down(rt):
    rt.call_soon(lambda: rt.shutdown(5.0))  # a callback that shuts the runtime down
    assert headless.serve_forever(rt, lambda: False) is False
    assert rt.closed
    with pytest.raises(TypeError):
        headless.serve_forever(rt, "not callable")
