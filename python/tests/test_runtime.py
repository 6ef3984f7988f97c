import select
import subprocess
import sys
import threading
import time

import pytest

import hostloop


def test_version():
    assert isinstance(hostloop.__version__, str) and hostloop.__version__


def test_pump_empty_and_wake_fd(rt):
    assert rt.pump(2.0) == 0
    fd = rt.wake_fd()
    assert isinstance(fd, int) and fd >= 0
    got = []
    rt.set_sink(lambda t, p: got.append((t, p)))
    main = threading.get_ident()
    ran = []
    rt.call_soon(lambda: ran.append(threading.get_ident()))
    r, _, _ = select.select([fd], [], [], 10.0)
    assert r == [fd]
    assert ran == []  # only inside pump
    assert rt.pump(5.0) == 1
    assert ran == [main]
    r, _, _ = select.select([fd], [], [], 0)
    assert r == []  # pump cleared it
    assert rt.stats()["pumps"] >= 2


def test_shutdown_idempotent_and_closed(rt):
    rt.shutdown(5.0)
    rt.shutdown(5.0)
    assert rt.closed
    for call in (lambda: rt.pump(), rt.wake_fd, rt.stats, lambda: rt.set_sink(None),
                 lambda: rt.post_event("a", b"")):
        with pytest.raises(hostloop.ShutDown):
            call()
    assert issubclass(hostloop.ShutDown, hostloop.HostloopError)


def test_bad_input(rt):
    with pytest.raises(TypeError):
        rt.pump("fast")
    for bad in (-1.0, 0.0, float("nan"), float("inf"), 1e9):
        with pytest.raises(ValueError):
            rt.pump(bad)
    with pytest.raises(TypeError):
        rt.post_event(1, b"")
    with pytest.raises(TypeError):
        rt.post_event("a", "not bytes")
    with pytest.raises(TypeError):
        rt.set_sink(42)
    with pytest.raises(ValueError):
        rt.load_plugin("x.so", isolation="sideways")
    with pytest.raises(hostloop.HostloopError):
        rt.load_plugin("/nonexistent/libnothing.so")
    with pytest.raises(ValueError):
        hostloop.Runtime(workers=0)
    with pytest.raises(ValueError):
        hostloop.Runtime(workers=10**9)
    with pytest.raises(TypeError):
        hostloop.Runtime(workers="two")
    with pytest.raises(ValueError):
        rt.shutdown(-1.0)


def test_pump_off_main_thread_raises(rt):
    errors = []

    def other():
        try:
            rt.pump()
        except hostloop.HostloopError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(30)
    assert len(errors) == 1


def test_run_until_timeout(rt):
    t0 = time.monotonic()
    assert rt.run_until(lambda: False, 0.2) is False
    assert time.monotonic() - t0 >= 0.2
    assert rt.run_until(lambda: True, 0.2) is True


def test_shutdown_while_other_thread_holds_gil():
    """Deadlock regression: a Python thread busy-looping with the GIL while main shuts down."""
    rt = hostloop.Runtime(workers=1)
    stop = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        t0 = time.monotonic()
        rt.shutdown(5.0)
        assert time.monotonic() - t0 < 10.0
    finally:
        stop.set()
        t.join(30)


def test_interpreter_exit_with_live_runtime_is_bounded():
    code = "import hostloop; rt = hostloop.Runtime(workers=1); rt.pump(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
