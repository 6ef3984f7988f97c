"""Bad input from Python raises a Python exception with a clear message, never a crash."""

import concurrent.futures
import threading

import pytest

import hostloop

NAN, INF = float("nan"), float("inf")
WAIT = 60.0


def noop(*args):
    pass


@pytest.fixture
def closed_rt():
    rt = hostloop.Runtime(workers=1)
    rt.shutdown(5.0)
    return rt


# --- wrong types ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers, exc, fragment", [
    ("two", TypeError, None),
    (2.5, TypeError, "integer"),
    (0, ValueError, "workers must be between 1 and"),
    (-3, ValueError, "workers must be between 1 and"),
    (10**9, ValueError, "workers must be between 1 and"),
    (10**30, OverflowError, None),
])
def test_runtime_workers(workers, exc, fragment):
    with pytest.raises(exc, match=fragment):
        hostloop.Runtime(workers=workers)


def test_native_types_cannot_be_made_directly():
    for cls in (hostloop.Plugin, hostloop.Task, hostloop.TaskContext, hostloop.Array):
        with pytest.raises(TypeError, match="cannot create"):
            cls()


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda rt: rt.pump("fast"), TypeError, None),
    (lambda rt: rt.pump(None), TypeError, None),
    (lambda rt: rt.run_until(42, 1.0), TypeError, "predicate must be callable"),
    (lambda rt: rt.run_until(lambda: True, "soon"), TypeError, None),
    (lambda rt: rt.run_until(lambda: True, 1.0, budget_ms="x"), TypeError, None),
    (lambda rt: rt.shutdown("now"), TypeError, None),
    (lambda rt: rt.set_sink(42), TypeError, "sink must be callable or None"),
    (lambda rt: rt.set_sink("print"), TypeError, "sink must be callable or None"),
    (lambda rt: rt.post_event(1, b""), TypeError, None),
    (lambda rt: rt.post_event("a", "not bytes"), TypeError, None),
    (lambda rt: rt.post_event("a", 5), TypeError, None),
    (lambda rt: rt.post_event("a", b"", coalesce="yes"), TypeError, None),
    (lambda rt: rt.post_frame_changed("12"), TypeError, None),
    (lambda rt: rt.load_plugin(42), TypeError, None),
    (lambda rt: rt.load_plugin(None), TypeError, None),
    (lambda rt: rt.load_plugin("x.so", isolation=5), TypeError, None),
    (lambda rt: rt.call_soon(42), TypeError, "callback must be callable"),
    (lambda rt: rt.call_soon(None), TypeError, "callback must be callable"),
    (lambda rt: rt.adopt(concurrent.futures.Future(), 42), TypeError, "on_main must be callable"),
    (lambda rt: rt.adopt(42, noop), AttributeError, "add_done_callback"),
    (lambda rt: rt.spawn(), TypeError, "func"),
    (lambda rt: rt.spawn(42), TypeError, "spawn needs a callable"),
    (lambda rt: rt.spawn(noop, on_main=42), TypeError, "on_main must be callable or None"),
    (lambda rt: rt.spawn(noop, on_progress="x"), TypeError, "on_progress must be callable"),
    (lambda rt: rt.spawn(noop, on_error=[]), TypeError, "on_error must be callable"),
    (lambda rt: rt.spawn(noop, name=5), TypeError, None),
    (lambda rt: rt.wake_fd(1), TypeError, "takes no arguments"),
    (lambda rt: rt.stats(1), TypeError, "takes no arguments"),
])
def test_wrong_types(rt, call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call(rt)
    assert rt.pump() >= 0  # the runtime is unharmed


def test_task_wrong_types(rt):
    task = rt.spawn(lambda: 1)
    for bad in ("1", None, [1]):
        with pytest.raises(TypeError):
            task.result(bad)
    assert task.result(WAIT) == 1


def test_task_context_wrong_types(rt):
    def work():
        ctx = hostloop.current_task()
        errors = []
        for call in (lambda: ctx.progress("half"), lambda: ctx.progress(0.5, 7),
                     lambda: ctx.progress(NAN), lambda: ctx.progress(INF)):
            try:
                call()
            except (TypeError, ValueError) as e:
                errors.append(type(e).__name__)
        return errors

    assert rt.spawn(work).result(WAIT) == ["TypeError", "TypeError", "ValueError", "ValueError"]


def test_plugin_wrong_types(rt, particles):
    plugin = rt.load_plugin(particles)
    with pytest.raises(TypeError):
        plugin.unload("soon")
    with pytest.raises(TypeError):
        plugin.reload(42)
    with pytest.raises(TypeError):
        plugin.reload(deadline_s="x")
    assert plugin.loaded
    plugin.unload(WAIT)


# --- out of range values -------------------------------------------------------------------

@pytest.mark.parametrize("budget", [0.0, -1.0, NAN, INF, -INF, 1e9, 1e300])
def test_bad_budgets(rt, budget):
    with pytest.raises(ValueError, match="budget_ms must be a finite number of milliseconds"):
        rt.pump(budget)
    # Checked up front, even when the predicate is already true.
    with pytest.raises(ValueError, match="budget_ms"):
        rt.run_until(lambda: True, 1.0, budget_ms=budget)


@pytest.mark.parametrize("seconds", [-1.0, NAN, INF, 1e300])
def test_bad_deadlines_and_timeouts(rt, seconds):
    with pytest.raises(ValueError, match="timeout_s must be a finite number"):
        rt.run_until(lambda: True, seconds)
    with pytest.raises(ValueError, match="deadline_s must be a finite number"):
        rt.shutdown(seconds)
    task = rt.spawn(lambda: 1)
    with pytest.raises(ValueError, match="timeout_s must be a finite number"):
        task.result(seconds)
    assert task.result(WAIT) == 1
    assert not rt.closed


@pytest.mark.parametrize("frame", [NAN, INF, -INF])
def test_bad_frame(rt, frame):
    with pytest.raises(ValueError, match="frame must be finite"):
        rt.post_frame_changed(frame)


def test_plugin_bad_deadlines(rt, particles):
    plugin = rt.load_plugin(particles)
    for bad in (-1.0, NAN, INF, 1e300):
        with pytest.raises(ValueError, match="deadline_s must be a finite number"):
            plugin.unload(bad)
        with pytest.raises(ValueError, match="deadline_s must be a finite number"):
            plugin.reload(deadline_s=bad)
    assert plugin.loaded
    plugin.unload(WAIT)


@pytest.mark.parametrize("isolation", ["sideways", "", "shared:", "SHARED:x", "in process"])
def test_bad_isolation(rt, isolation):
    with pytest.raises(ValueError, match="isolation must be"):
        rt.load_plugin("libwhatever.so", isolation=isolation)


# --- not a plugin --------------------------------------------------------------------------

@pytest.mark.parametrize("isolation", ["in_process", "own_process"])
def test_plugin_path_that_does_not_exist(rt, tmp_path, isolation):
    missing = tmp_path / "libnothing.so"
    with pytest.raises(hostloop.HostloopError, match="no such file|no plugin library") as e:
        rt.load_plugin(missing, isolation=isolation)
    assert "libnothing.so" in str(e.value)


@pytest.mark.parametrize("isolation", ["in_process", "own_process"])
def test_plugin_path_that_is_a_text_file(rt, tmp_path, isolation):
    text = tmp_path / "libnotes.so"
    text.write_text("this is not a shared library\n" * 10)
    with pytest.raises(hostloop.HostloopError) as e:
        rt.load_plugin(str(text), isolation=isolation)
    assert "libnotes" in str(e.value)


def test_plugin_path_that_is_a_directory(rt, tmp_path):
    with pytest.raises(hostloop.HostloopError, match="directory"):
        rt.load_plugin(tmp_path)


def test_reload_from_a_bad_path_keeps_the_plugin(rt, particles, tmp_path):
    plugin = rt.load_plugin(particles)
    text = tmp_path / "libnotes.so"
    text.write_text("not a library")
    for bad in (tmp_path / "missing.so", text):
        with pytest.raises(hostloop.HostloopError):
            plugin.reload(bad)
        assert plugin.loaded
    plugin.reload()  # still works from its own path
    plugin.unload(WAIT)


# --- unload twice, reload after unload -----------------------------------------------------

def test_unload_twice_and_reload_after_unload(rt, particles):
    plugin = rt.load_plugin(particles)
    plugin.unload(WAIT)
    with pytest.raises(hostloop.HostloopError, match="already unloaded"):
        plugin.unload(WAIT)
    with pytest.raises(hostloop.HostloopError, match="is unloaded"):
        plugin.reload()
    assert not plugin.loaded and plugin.name == "particles"
    again = rt.load_plugin(particles)  # the name is free again
    assert again.loaded
    again.unload(WAIT)


def test_plugin_after_its_runtime_shut_down(particles):
    rt = hostloop.Runtime(workers=1)
    plugin = rt.load_plugin(particles)
    rt.shutdown(WAIT)
    with pytest.raises(hostloop.ShutDown):
        plugin.reload()
    plugin.unload(WAIT)  # releasing what is left is allowed
    with pytest.raises(hostloop.HostloopError, match="already unloaded"):
        plugin.unload(WAIT)


def test_load_the_same_plugin_twice(rt, particles):
    plugin = rt.load_plugin(particles)
    with pytest.raises(hostloop.HostloopError, match="already"):
        rt.load_plugin(particles)
    plugin.unload(WAIT)


# --- closed runtime ------------------------------------------------------------------------

CLOSED_CALLS = {
    "pump": lambda rt: rt.pump(),
    "wake_fd": lambda rt: rt.wake_fd(),
    "run_until": lambda rt: rt.run_until(lambda: True, 1.0),
    "stats": lambda rt: rt.stats(),
    "set_sink": lambda rt: rt.set_sink(noop),
    "set_sink None": lambda rt: rt.set_sink(None),
    "post_event": lambda rt: rt.post_event("a", b""),
    "post_frame_changed": lambda rt: rt.post_frame_changed(1.0),
    "load_plugin": lambda rt: rt.load_plugin("libwhatever.so"),
    "call_soon": lambda rt: rt.call_soon(noop),
    "adopt": lambda rt: rt.adopt(concurrent.futures.Future(), noop),
    "spawn": lambda rt: rt.spawn(noop),
}


@pytest.mark.parametrize("name", sorted(CLOSED_CALLS))
def test_closed_runtime(closed_rt, name):
    with pytest.raises(hostloop.ShutDown, match="shut down"):
        CLOSED_CALLS[name](closed_rt)


def test_closed_runtime_idempotent_parts(closed_rt):
    assert closed_rt.closed
    report = closed_rt.shutdown(5.0)
    assert isinstance(report, dict)
    with closed_rt as same:  # entering and leaving a closed runtime is harmless
        assert same is closed_rt


def test_closed_from_another_thread(rt):
    """Calls from another thread on a closed runtime raise too (no crash, no hang)."""
    rt.shutdown(5.0)
    out = []

    def other():
        for name in ("call_soon", "spawn", "post_event", "stats"):
            try:
                CLOSED_CALLS[name](rt)
            except hostloop.ShutDown:
                out.append(name)

    t = threading.Thread(target=other)
    t.start()
    t.join(WAIT)
    assert out == ["call_soon", "spawn", "post_event", "stats"]


def test_main_thread_only_calls_from_another_thread(rt):
    out = []

    def other():
        for call in (rt.pump, lambda: rt.run_until(lambda: False, 0.01)):
            try:
                call()
            except hostloop.HostloopError as e:
                out.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join(WAIT)
    assert len(out) == 2 and all("thread" in m for m in out)


def test_predicate_errors_propagate(rt):
    with pytest.raises(ZeroDivisionError):
        rt.run_until(lambda: 1 / 0, 1.0)

    class Falsy:
        def __bool__(self):
            raise RuntimeError("no truth")

    with pytest.raises(RuntimeError, match="no truth"):
        rt.run_until(Falsy, 1.0)
