"""The GIL rules, proven: blocking calls release the GIL, no lock is held while Python runs,
pool threads never run Python except on the IO lane, and interpreter exit never hangs.

Each deadlock regression runs in a subprocess with a timeout: a hang fails the test instead of
hanging pytest.
"""

import json
import subprocess
import sys
import textwrap

import pytest

TIMEOUT = 60  # seconds a subprocess may take: a hang, not slowness, fails the test

PRELUDE = '''
import json, os, sys, threading, time
import hostloop
WAIT = 30.0

def os_thread_name():
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"
'''


def run(code, *args, expect_rc=0):
    """Runs PRELUDE + ``code`` in a fresh interpreter; returns its stdout."""
    script = PRELUDE + textwrap.dedent(code)
    try:
        out = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                             capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the script hung (no exit within {TIMEOUT} s)\nstdout: {e.stdout}\n"
                    f"stderr: {e.stderr}")
    assert out.returncode == expect_rc, f"exit code {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_python_thread_holding_the_gil_while_main_waits_on_a_job():
    out = run('''
    rt = hostloop.Runtime(workers=1)
    stop = False
    def spin():                      # pure Python: holds the GIL except at forced switches
        x = 0
        while not stop:
            x += 1
    t = threading.Thread(target=spin)
    t.start()
    def work(n):
        total = 0
        for i in range(n):           # Python work on the IO lane needs the GIL too
            total += i
            if i % 1000 == 0:
                hostloop.current_task().progress(i / n)
        return total
    task = rt.spawn(work, 200000)
    value = task.result(WAIT)        # main waits on the job, GIL released
    done = []
    rt.spawn(work, 1000, on_main=done.append)
    ok = rt.run_until(lambda: done, WAIT)
    report = rt.shutdown(WAIT)
    stop = True
    t.join(WAIT)
    print(json.dumps([value, ok, done, report["stragglers"]]))
    ''')
    assert last_json(out) == [sum(range(200000)), True, [sum(range(1000))], 0]


def test_sink_callback_that_calls_back_into_the_runtime(particles):
    out = run('''
    rt = hostloop.Runtime(workers=1)
    seen = {"frames": 0, "reentrant": 0, "spawned": [], "soon": 0}
    def sink(topic, payload):
        seen["frames"] += 1
        rt.stats()
        rt.post_event("particles/unknown", b"x")
        rt.post_frame_changed(float(seen["frames"]))
        rt.call_soon(lambda: seen.__setitem__("soon", seen["soon"] + 1))
        rt.spawn(lambda: 1, on_main=seen["spawned"].append)
        for nested in (rt.pump, lambda: rt.run_until(lambda: False, 0.01)):
            try:
                nested()
            except hostloop.HostloopError as e:
                assert "re-entrant" in str(e), e
                seen["reentrant"] += 1
        if seen["frames"] == 5:
            rt.set_sink(second)      # replace the sink from inside it
    def second(topic, payload):
        seen["frames"] += 1
        if seen["frames"] >= 10 and seen["spawned"] and seen["soon"]:
            rt.set_sink(None)        # and remove it
            seen["report"] = rt.shutdown(WAIT)   # even shut down from inside a callback
    rt.set_sink(sink)
    plugin = rt.load_plugin(sys.argv[1])
    rt.post_event("particles/configure", b"agents=100")
    finished = rt.run_until(lambda: "report" in seen, WAIT)
    print(json.dumps([finished, seen["frames"], seen["reentrant"], seen["report"]["stragglers"],
                      rt.closed, len(seen["spawned"]) > 0]))
    ''', particles)
    finished, frames, reentrant, stragglers, closed, spawned = last_json(out)
    # Each of the first 5 frames tried pump and run_until from inside the sink.
    assert finished and frames >= 10 and reentrant == 10 and stragglers == 0 and closed
    assert spawned


def test_no_lock_held_while_python_runs():
    """Task functions, callbacks and a __del__ that runs as the task resolves all call back
    into the same task and runtime: a lock held around any of them would deadlock."""
    out = run('''
    rt = hostloop.Runtime(workers=1)
    out = []
    holder = []
    class Touch:
        def __del__(self):           # runs while the task resolves as cancelled
            t = holder[0]
            out.append(["del", t.status, t.cancel(), t.done])
    started, go = threading.Event(), threading.Event()
    def work():
        me = hostloop.current_task()
        me.progress(0.5, "half")
        t = holder[0]
        out.append(["in fn", t.status, list(t.progress), t.done])
        try:
            t.result(0)
        except TimeoutError:
            out.append("own result times out")
        rt.call_soon(lambda: out.append("soon from fn"))
        started.set()
        go.wait(WAIT)
        return Touch()               # cancelled meanwhile: this value is dropped at once
    def on_progress(f, m):
        out.append(["progress", holder[0].cancel() in (True, False)])
    def on_error(e):
        t = holder[0]
        out.append(["on_error", type(e).__name__, t.status, t.cancel()])
        rt.spawn(lambda: "again", on_main=out.append)
    holder.append(rt.spawn(work, on_error=on_error, on_progress=on_progress))
    assert started.wait(WAIT)
    holder[0].cancel()
    go.set()
    assert rt.run_until(lambda: "again" in out and "soon from fn" in out, WAIT)
    rt.shutdown(WAIT)
    print(json.dumps(out))
    ''')
    out = last_json(out)
    assert ["in fn", "running", [0.5, "half"], False] in out
    assert "own result times out" in out
    assert ["del", "cancelled", False, True] in out
    assert ["on_error", "Cancelled", "cancelled", False] in out
    assert "again" in out


SLOW_CALLS = '''
sys.setswitchinterval(30.0)      # main is never preempted: others run only when it releases
counter = [0]
stop = False
def count():
    while not stop:
        counter[0] += 1
        time.sleep(0.0005)           # hands the GIL back, so main gets it when it wants it
t = threading.Thread(target=count, daemon=True)
t.start()
while counter[0] == 0:
    time.sleep(0.001)
results = {}
def advanced(call):
    # Between the two reads main runs only bytecode (never preempted) and `call`: the counter
    # can only move if `call` released the GIL.
    c0 = counter[0]
    value = call()
    return counter[0] > c0, value
def inside(name, call, attempts=1):
    # A fast call may end before the counting thread is scheduled (a loaded machine): repeat it.
    try:
        for _ in range(attempts):
            ok, _ = advanced(call)
            results[name] = ok
            if ok:
                break
    except Exception as e:
        results[name + " raised"] = repr(e)
rt = hostloop.Runtime(workers=1)
inside("run_until", lambda: rt.run_until(lambda: False, 0.3))
gate = threading.Event()
slow = rt.spawn(gate.wait, WAIT)
def timed_out():
    try:
        slow.result(0.3)
    except TimeoutError:
        return
    raise AssertionError("no timeout")
inside("Task.result (timeout)", timed_out)
gate.set()
inside("Task.result", lambda: rt.spawn(time.sleep, 0.2).result(WAIT))
path = sys.argv[1]
for isolation in ("in_process", "own_process"):
    suffix = "" if isolation == "in_process" else " own_process"
    for attempt in range(20):
        try:
            loaded, plugin = advanced(lambda: rt.load_plugin(path, isolation=isolation))
            rt.post_event("particles/configure", b"agents=1000000")   # a big simulation
            simulating, _ = advanced(lambda: rt.run_until(lambda: False, 0.1))
            reloaded = advanced(plugin.reload)[0] if isolation == "in_process" else True
            unloaded, _ = advanced(lambda: plugin.unload(WAIT))
        except Exception as e:
            results["load/unload" + suffix + " raised"] = repr(e)
            break
        for name, ok in (("load_plugin", loaded), ("run_until (simulating)", simulating),
                         ("Plugin.reload", reloaded), ("Plugin.unload", unloaded)):
            results[name + suffix] = results.get(name + suffix, False) or ok
        if all(results[k + suffix] for k in ("load_plugin", "Plugin.reload", "Plugin.unload")):
            break
def stubborn():                  # ignores cancellation: shutdown waits its whole deadline
    while True:
        time.sleep(0.01)
straggler = rt.spawn(stubborn)
deadline = time.monotonic() + WAIT
while straggler.status != "running" and time.monotonic() < deadline:
    time.sleep(0.001)
inside("shutdown", lambda: results.setdefault("report", rt.shutdown(0.3)))
stop = True
print(json.dumps(results))
'''


def test_every_blocking_call_releases_the_gil(particles):
    results = last_json(run(SLOW_CALLS, particles))
    errors = {k: v for k, v in results.items() if k.endswith(" raised")}
    assert errors == {}
    expected = ["run_until", "run_until (simulating)", "Task.result (timeout)", "Task.result",
                "load_plugin", "load_plugin own_process", "Plugin.reload", "Plugin.unload",
                "Plugin.unload own_process", "shutdown"]
    assert {k: results[k] for k in expected} == {k: True for k in expected}
    assert results["report"]["stragglers"] == 1  # shutdown did wait out its deadline


def test_pool_threads_never_run_python_except_on_the_io_lane(particles):
    """Every Python callback we hand the runtime, and every __del__ of what they capture
    (including what is dropped unrun at cancellation and shutdown), runs on the main thread;
    only spawned functions run on a hostloop IO thread."""
    out = run('''
    import concurrent.futures
    MAIN = threading.get_ident()
    where = []                       # (what, on main?, OS thread name)
    def mark(what):
        where.append((what, threading.get_ident() == MAIN, os_thread_name()))
    class Tracked:
        def __init__(self, what):
            self.what = what
        def __del__(self):
            mark("del " + self.what)
        def __call__(self, *args):
            mark(self.what)
    rt = hostloop.Runtime(workers=2)
    frames = []
    def sink(topic, payload):
        mark("sink")
        frames.append(topic)
    rt.set_sink(sink)
    plugin = rt.load_plugin(sys.argv[1])
    rt.post_event("particles/configure", b"agents=1000")
    def fn(token):
        mark("fn")
        hostloop.current_task().progress(1.0)
        return token
    def fail(token):
        mark("fn")
        raise ValueError("x")
    for i in range(20):
        rt.spawn(fn, Tracked("arg"), on_main=Tracked("on_main"), on_progress=Tracked("on_progress"))
    rt.spawn(fail, Tracked("arg"), on_error=Tracked("on_error"))
    rt.call_soon(Tracked("call_soon"))
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        rt.adopt(ex.submit(int, "7"), Tracked("adopt"))
    # Wait for every kind the assertions below expect: the failing task's on_error may land
    # after the 20 on_main callbacks, and what is still queued at shutdown is dropped unrun.
    expected = {"fn", "sink", "on_progress", "on_error", "call_soon", "adopt"}
    assert rt.run_until(lambda: len(frames) >= 5 and sum(w[0] == "on_main" for w in where) == 20
                        and expected <= {w[0] for w in where}, WAIT)
    # Dropped unrun: cancelled while queued, and queued at shutdown.
    gate = threading.Event()
    blockers = [rt.spawn(gate.wait, WAIT) for _ in range(8)]
    doomed = rt.spawn(fn, Tracked("cancelled arg"), on_main=Tracked("cancelled on_main"))
    doomed.cancel()
    late = [rt.spawn(fn, Tracked("late arg"), on_main=Tracked("late on_main")) for _ in range(4)]
    rt.call_soon(Tracked("late call_soon"))
    gate.set()
    plugin.unload(WAIT)
    rt.shutdown(WAIT)
    del doomed, late, blockers
    import gc
    gc.collect()
    rt.closed                        # attaches: runs any deferred reference drops
    print(json.dumps(where))
    ''', particles)
    where = last_json(out)
    kinds = {w[0] for w in where}
    assert {"fn", "sink", "on_main", "on_progress", "on_error", "call_soon", "adopt",
            "del arg", "del on_main"} <= kinds
    off_main = [w for w in where if not w[1]]
    # Callbacks run on the main thread only; off it, only the task functions run, and what
    # an IO thread drops (their arguments, released references) — always on the IO lane.
    assert all(not w[0].startswith(("sink", "on_", "call_soon", "adopt")) for w in off_main), \
        off_main
    assert all(w[2].startswith("hostloop-io-") for w in off_main), off_main
    assert any(w[0] == "fn" for w in off_main)


EXIT_WITH_WORK = '''
# Two runtimes (two IO threads each), so every kind of task below is running at exit.
rts = [hostloop.Runtime(workers=1) for _ in range(2)]
frames = []
rts[0].set_sink(lambda topic, payload: frames.append(topic))
plugin = rts[0].load_plugin(sys.argv[1])
rts[0].post_event("particles/configure", b"agents=2000")
def cooperative():
    while True:
        hostloop.current_task().check()
        time.sleep(0.005)
def stubborn():                  # ignores its cancel token
    while True:
        time.sleep(0.005)
def catches_everything():        # a retry loop that swallows every Exception
    while True:
        try:
            time.sleep(0.005)
        except Exception:
            pass
def spins():                     # pure Python, never sleeps
    x = 0
    while True:
        x += 1
running = [rts[0].spawn(stubborn), rts[0].spawn(catches_everything),
           rts[1].spawn(spins), rts[1].spawn(threading.Event().wait)]
queued = [rt.spawn(cooperative, on_main=print) for rt in rts for _ in range(3)]
cooperative_rt = hostloop.Runtime(workers=1)
running.append(cooperative_rt.spawn(cooperative))
assert rts[0].run_until(lambda: len(frames) >= 3 and all(t.status == "running" for t in running),
                        WAIT)
print("exiting", [t.status for t in queued], flush=True)
'''


@pytest.mark.parametrize("ending", ["", "sys.exit(3)", "rts[0].shutdown(0.2)"])
def test_interpreter_exit_with_jobs_in_flight(particles, ending):
    rc = 3 if "3" in ending else 0
    out = run(EXIT_WITH_WORK + ending + "\n", particles, expect_rc=rc)
    assert "exiting" in out
