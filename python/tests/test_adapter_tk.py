"""hostloop.tk against a real Tk main loop (tkinter), on an Xvfb display this module starts.

Nothing here may leave a Tk object in a reference cycle: the cycle collector can run on any
thread (a poster thread, here), and Tcl aborts the process when an interpreter is freed off its
own thread. Closures that refer to themselves are unhooked after use.
"""

import os
import select
import shutil
import subprocess
import tempfile

import pytest

import adapter_checks as checks

tkinter = pytest.importorskip("tkinter", reason="tkinter is missing: apt-get install python3-tk")

import hostloop.tk as hl_tk  # noqa: E402


def start_xvfb():
    """Starts Xvfb on a free display (it picks one and tells us through -displayfd). Returns
    (process, display) or (None, why not)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None, "Xvfb is not installed (apt-get install xvfb)"
    r, w = os.pipe()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(
        [xvfb, "-displayfd", str(w), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
    )
    os.close(w)
    out = b""
    try:
        while not out.endswith(b"\n"):
            ready, _, _ = select.select([r], [], [], checks.DEADLINE_S)
            chunk = os.read(r, 64) if ready else b""
            if not chunk:
                break
            out += chunk
    finally:
        os.close(r)
    if not out.strip().isdigit():
        p.kill()
        p.wait(checks.DEADLINE_S)
        err.seek(0)
        return None, f"Xvfb did not start: {err.read().decode(errors='replace')[-500:]}"
    return p, ":" + out.strip().decode()


@pytest.fixture(scope="module")
def display():
    p, display = start_xvfb()
    if p is None:
        pytest.skip(f"no X server for Tk: {display}")
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    yield display
    if old is None:
        del os.environ["DISPLAY"]
    else:
        os.environ["DISPLAY"] = old
    p.terminate()
    p.wait(checks.DEADLINE_S)


@pytest.fixture
def root(display):
    r = tkinter.Tk()
    r.withdraw()
    yield r
    r.destroy()


class TkHarness:
    def __init__(self, root):
        self.root = root

    def attach(self, rt, **kw):
        return hl_tk.attach(rt, self.root, **kw)

    def spin(self, until, timeout_s):
        """Runs root.mainloop() until until() (checked every 5 ms) or the deadline."""
        root = self.root
        timers = []

        def check():
            if until():
                root.quit()
            else:
                timers.append(root.after(5, check))

        timers.append(root.after(5, check))
        timers.append(root.after(int(timeout_s * 1000), root.quit))
        if not until():
            root.mainloop()
        for t in timers:
            root.after_cancel(t)
        check = None  # noqa: F841 - breaks the closure's cycle (see test_no_tk_object_in_a_cycle)
        return bool(until())

    def turn(self, n):
        """n idle callbacks chained: Tk runs each in its own event-loop pass, after the file
        events that pass found."""
        left = [n]

        def idle():
            left[0] -= 1
            if left[0] == 0:
                self.root.quit()
            else:
                self.root.after_idle(idle)

        self.root.after_idle(idle)
        self.root.mainloop()
        idle = None  # noqa: F841 - breaks the closure's cycle


@pytest.fixture
def h(root):
    return TkHarness(root)


def test_results_on_main_thread(h):
    att = checks.results_on_main_thread(h)
    assert att.timer_pumps == 0 and att.root is None  # detached: it holds no Tk object


def test_one_attachment_per_runtime(h, rt):
    checks.one_attachment_per_runtime(h)
    with pytest.raises(TypeError):
        hl_tk.attach(rt, root="not a widget")


def test_update_in_callback(h):
    """root.update() inside a callback (a Tk habit): no re-entered pump, no spinning."""
    checks.nested_loop_in_callback(h, h.root.update)


def test_default_root(h, rt):
    assert tkinter._default_root is h.root
    att = hl_tk.attach(rt)
    assert att.root is h.root
    att.detach()


def test_no_tk_object_in_a_cycle(h, rt):
    """A detached attachment is freed by reference counting alone and holds no Tk object."""
    import gc
    import weakref

    att = hl_tk.attach(rt, h.root)
    ref = weakref.ref(att)
    att.detach()
    assert att.root is None
    gc.disable()
    try:
        del att
        assert ref() is None
    finally:
        gc.enable()


class TestContract(checks.AdapterContract):
    """raising callbacks, budgets, detach, shutdown, plugin frames (adapter_checks)."""
