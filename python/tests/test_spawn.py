"""rt.spawn: Python callables on the IO lane, with results, progress and cancellation."""

import os
import sys
import threading
import time

import pytest

import hostloop

WAIT = 60.0  # generous: the machine may be loaded


def os_thread_name():
    """The OS name of the calling thread (``hostloop-io-<i>`` on an IO-lane thread)."""
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def test_value_reaches_on_main_on_the_main_thread(rt):
    main = threading.get_ident()
    got = []

    def add(a, b, *, scale=1):
        return (a + b) * scale, threading.get_ident(), os_thread_name()

    task = rt.spawn(add, 2, 3, scale=10,
                    on_main=lambda v: got.append((v, threading.get_ident())))
    assert isinstance(task, hostloop.Task)
    value, worker, name = task.result(WAIT)
    assert value == 50
    assert worker != main
    if name is not None:
        assert name.startswith("hostloop-io-")
    assert task.done and task.status == "finished" and not task.cancelled
    assert got == []  # callbacks run only inside pump
    assert rt.run_until(lambda: got, WAIT)
    assert got == [((50, worker, name), main)]


def test_result_is_repeatable_and_the_same_object(rt):
    obj = object()
    task = rt.spawn(lambda: obj)
    assert task.result(WAIT) is obj
    assert task.result(0) is obj


def test_keyword_arguments_pass_through_even_named_func(rt):
    task = rt.spawn(lambda **kw: kw, func=1, args=2)
    assert task.result(WAIT) == {"func": 1, "args": 2}


def test_name_defaults_to_qualname(rt):
    def fetch_asset():
        return 1

    task = rt.spawn(fetch_asset)
    assert task.name.endswith("fetch_asset")
    assert rt.spawn(fetch_asset, name="download tex").name == "download tex"
    assert "download" in repr(rt.spawn(fetch_asset, name="download"))
    task.result(WAIT)


def test_current_task_is_none_outside_a_task(rt):
    assert hostloop.current_task() is None
    seen = []
    rt.call_soon(lambda: seen.append(hostloop.current_task()))
    assert rt.run_until(lambda: seen, WAIT)
    assert seen == [None]


def test_current_task_inside(rt):
    def work():
        ctx = hostloop.current_task()
        return type(ctx).__name__, ctx.name, ctx.id, ctx.cancelled

    kind, name, ident, cancelled = rt.spawn(work, name="w").result(WAIT)
    assert kind == "TaskContext" and name == "w" and isinstance(ident, int)
    assert cancelled is False


def test_context_after_the_function_returned_raises(rt):
    ctx = rt.spawn(hostloop.current_task).result(WAIT)
    assert isinstance(ctx, hostloop.TaskContext)
    for use in (lambda: ctx.cancelled, ctx.check, lambda: ctx.progress(0.5)):
        with pytest.raises(hostloop.HostloopError, match="no longer usable"):
            use()


def test_context_usable_from_a_thread_of_the_function(rt):
    def work():
        ctx = hostloop.current_task()
        out = []

        def helper():
            out.append(hostloop.current_task())  # not a task's thread
            ctx.progress(0.25, "from helper")
            out.append(ctx.cancelled)

        t = threading.Thread(target=helper)
        t.start()
        t.join(WAIT)
        return out

    task = rt.spawn(work)
    assert task.result(WAIT) == [None, False]
    assert task.progress == (0.25, "from helper")


def test_progress_is_coalesced_and_lands_on_main(rt):
    main = threading.get_ident()
    prog, done = [], []

    def work():
        ctx = hostloop.current_task()
        for i in range(10001):
            ctx.progress(i / 10000, "done" if i == 10000 else None)
        return "ok"

    task = rt.spawn(work, on_progress=lambda f, m: prog.append((f, m, threading.get_ident())),
                    on_main=done.append)
    assert task.result(WAIT) == "ok"  # every report was made before any pump
    assert task.progress == (1.0, "done")
    assert rt.run_until(lambda: done, WAIT)
    # 10001 reports, no pump in between: one delivery, with the latest value.
    assert prog == [(1.0, "done", main)]
    assert done == ["ok"]


def test_progress_clamps_and_rejects_nan(rt):
    def work():
        ctx = hostloop.current_task()
        ctx.progress(7.0)
        try:
            ctx.progress(float("nan"))
        except ValueError as e:
            return str(e)
        return None

    task = rt.spawn(work)
    assert "finite" in task.result(WAIT)
    assert task.progress == (1.0, None)


def test_progress_of_a_task_before_it_reports(rt):
    gate = threading.Event()
    task = rt.spawn(gate.wait, WAIT)
    assert task.progress == (0.0, None)
    gate.set()
    assert task.result(WAIT) is True


def _running(task):
    deadline = time.monotonic() + WAIT
    while task.status == "queued" and time.monotonic() < deadline:
        time.sleep(0.001)
    return task.status


def test_cancel_cooperative(rt):
    main = threading.get_ident()
    started = threading.Event()
    errors = []

    def loop():
        ctx = hostloop.current_task()
        started.set()
        while True:
            ctx.check()
            time.sleep(0.001)

    task = rt.spawn(loop, on_error=lambda e: errors.append((e, threading.get_ident())),
                    on_main=lambda v: errors.append("on_main ran"))
    assert started.wait(WAIT)
    assert task.status == "running"
    assert task.cancel() is True
    assert task.cancelled
    with pytest.raises(hostloop.Cancelled, match="cancelled"):
        task.result(WAIT)
    assert task.status == "cancelled" and task.done
    assert task.cancel() is False  # already done
    assert rt.run_until(lambda: errors, WAIT)
    (exc, tid), = errors
    assert isinstance(exc, hostloop.Cancelled) and tid == main
    assert issubclass(hostloop.Cancelled, hostloop.HostloopError)


def test_cancelled_task_resolves_cancelled_whatever_it_returns(rt):
    started = threading.Event()

    def polite():
        ctx = hostloop.current_task()
        started.set()
        while not ctx.cancelled:
            time.sleep(0.001)
        return "a value nobody should see"

    task = rt.spawn(polite)
    assert started.wait(WAIT)
    task.cancel()
    with pytest.raises(hostloop.Cancelled):
        task.result(WAIT)


def test_function_raising_cancelled_itself(rt):
    def give_up():
        raise hostloop.Cancelled("not worth it")

    task = rt.spawn(give_up)
    with pytest.raises(hostloop.Cancelled):
        task.result(WAIT)
    assert task.status == "cancelled"


def test_cancel_before_start_never_runs(rt):
    gate = threading.Event()
    ran = []
    errors = []
    # More blockers than the IO lane has threads: the task below waits in the queue.
    blockers = [rt.spawn(gate.wait, WAIT) for _ in range(8)]
    assert _running(blockers[0]) == "running"
    task = rt.spawn(lambda: ran.append(1), on_error=errors.append)
    assert task.status == "queued"
    assert task.cancel() is True
    assert task.status == "cancelled" and task.done and task.cancelled
    with pytest.raises(hostloop.Cancelled):
        task.result(0)  # resolved at once, not when the lane reaches it
    gate.set()
    assert all(b.result(WAIT) is True for b in blockers)
    assert rt.run_until(lambda: errors, WAIT)
    assert isinstance(errors[0], hostloop.Cancelled)
    assert ran == []


def test_cancel_without_on_error_is_not_reported(rt, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    started = threading.Event()

    def loop():
        started.set()
        while True:
            hostloop.current_task().check()
            time.sleep(0.001)

    task = rt.spawn(loop)
    assert started.wait(WAIT)
    task.cancel()
    with pytest.raises(hostloop.Cancelled):
        task.result(WAIT)
    marker = []
    rt.call_soon(lambda: marker.append(1))  # queued after the task's continuation
    assert rt.run_until(lambda: marker, WAIT)
    assert [u for u in reported if isinstance(u.exc_value, hostloop.Cancelled)] == []


def test_exception_goes_to_on_error_on_main(rt):
    main = threading.get_ident()
    errors, values = [], []

    def fail():
        raise KeyError("missing asset")

    task = rt.spawn(fail, on_main=values.append,
                    on_error=lambda e: errors.append((e, threading.get_ident())))
    with pytest.raises(KeyError, match="missing asset"):
        task.result(WAIT)
    assert task.status == "failed" and task.done and not task.cancelled
    assert rt.run_until(lambda: errors, WAIT)
    (exc, tid), = errors
    assert isinstance(exc, KeyError) and tid == main
    assert values == []


def test_exception_without_on_error_goes_to_unraisablehook(rt, monkeypatch):
    # Filtered: a leftover object of another test may be reported meanwhile.
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def fail():
        raise ValueError("bad header")

    rt.spawn(fail)
    ours = lambda: [u for u in reported if isinstance(u.exc_value, ValueError)]  # noqa: E731
    assert rt.run_until(ours, WAIT)
    u, = ours()
    assert isinstance(u.exc_value, ValueError) and "bad header" in str(u.exc_value)
    assert u.object is fail


def test_callbacks_that_raise_are_reported_and_the_loop_goes_on(rt, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def boom(*args):
        raise RuntimeError("callback bug")

    def work():
        hostloop.current_task().progress(0.5)
        return 1

    rt.spawn(work, on_main=boom, on_progress=boom)
    rt.spawn(lambda: 1 / 0, on_error=boom)
    ours = lambda: [u for u in reported if "callback bug" in str(u.exc_value)]  # noqa: E731
    assert rt.run_until(lambda: len(ours()) == 3, WAIT)
    ok = []
    rt.call_soon(lambda: ok.append(1))
    assert rt.run_until(lambda: ok, WAIT)


def test_many_tasks(rt):
    main = threading.get_ident()
    n = 300
    got = {}
    before = rt.stats()["jobs_spawned"]
    tasks = [rt.spawn(lambda i=i: i * i, on_main=lambda v, i=i: got.setdefault(i, (v, threading.get_ident())))
             for i in range(n)]
    assert rt.run_until(lambda: len(got) == n, WAIT)
    assert got == {i: (i * i, main) for i in range(n)}
    assert [t.result(0) for t in tasks] == [i * i for i in range(n)]
    assert rt.stats()["jobs_spawned"] - before >= n


def test_result_on_the_main_thread_waits_without_pumping(rt):
    """The documented behaviour: result() on the main thread releases the GIL but does not
    pump, so a function that waits for the main thread makes it time out, not deadlock."""
    reply = threading.Event()

    def needs_main():
        hostloop_rt.call_soon(reply.set)  # runs only at a pump
        if not reply.wait(WAIT):
            raise TimeoutError("never pumped")
        return "answered"

    hostloop_rt = rt
    task = rt.spawn(needs_main)
    with pytest.raises(TimeoutError, match="did not finish"):
        task.result(0.2)
    assert rt.run_until(lambda: task.done, WAIT)
    assert task.result(0) == "answered"


def test_result_from_another_thread(rt):
    gate = threading.Event()
    task = rt.spawn(lambda: gate.wait(WAIT) and "late")
    out = []
    t = threading.Thread(target=lambda: out.append(task.result(WAIT)))
    t.start()
    gate.set()
    t.join(WAIT)
    assert out == ["late"]


def test_result_timeout_zero_polls(rt):
    gate = threading.Event()
    task = rt.spawn(gate.wait, WAIT)
    with pytest.raises(TimeoutError):
        task.result(0)
    assert not task.done
    gate.set()
    assert task.result(WAIT) is True


def test_callbacks_may_use_the_task_and_the_runtime(rt):
    """No lock is held while callbacks run: they call back into the task and the runtime."""
    out = []

    def on_main(v):
        out.append((task.status, task.result(0), task.cancel(), task.progress))
        rt.spawn(lambda: v + 1, on_main=out.append)

    def on_progress(f, m):
        out.append(("progress", task.status in ("running", "finished")))

    def work():
        me = hostloop.current_task()
        me.progress(0.5, "half")
        return 41

    task = rt.spawn(work, on_main=on_main, on_progress=on_progress)
    assert rt.run_until(lambda: 42 in out, WAIT)
    assert ("finished", 41, False, (0.5, "half")) in out


def test_shutdown_cancels_running_and_queued_tasks(rt):
    started = threading.Event()

    def loop():
        started.set()
        while True:
            hostloop.current_task().check()
            time.sleep(0.001)

    running = rt.spawn(loop)
    assert started.wait(WAIT)
    queued = [rt.spawn(loop) for _ in range(8)]
    report = rt.shutdown(WAIT)
    assert report["stragglers"] == 0
    for t in [running] + queued:
        with pytest.raises(hostloop.Cancelled):
            t.result(WAIT)
    with pytest.raises(hostloop.ShutDown):
        rt.spawn(loop)


def test_task_outlives_its_runtime_object():
    rt = hostloop.Runtime(workers=1)
    task = rt.spawn(lambda: os.getpid())
    assert task.result(WAIT) == os.getpid()
    rt.shutdown(WAIT)
    del rt
    assert task.status == "finished" and task.result(0) == os.getpid()
