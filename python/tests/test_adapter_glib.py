"""hostloop.glib against a real GLib main loop (PyGObject from python3-gi)."""

import pytest

import adapter_checks as checks

gi = pytest.importorskip("gi", reason="PyGObject is missing: apt-get install python3-gi")
gi.require_version("GLib", "2.0")
from gi.repository import GLib  # noqa: E402

import hostloop.glib as hl_glib  # noqa: E402


class GLibHarness:
    def attach(self, rt, **kw):
        return hl_glib.attach(rt, **kw)

    def spin(self, until, timeout_s):
        loop = GLib.MainLoop()
        result = []

        def check():
            if until():
                result.append(True)
                loop.quit()
                return GLib.SOURCE_REMOVE
            return GLib.SOURCE_CONTINUE

        def give_up():
            loop.quit()
            return GLib.SOURCE_REMOVE

        check_id = GLib.timeout_add(5, check)
        deadline_id = GLib.timeout_add(int(timeout_s * 1000), give_up)
        loop.run()
        for sid in (check_id, deadline_id):
            if GLib.MainContext.default().find_source_by_id(sid) is not None:
                GLib.source_remove(sid)
        return bool(result) or bool(until())

    def turn(self, n):
        """n idle callbacks chained: each is a separate context iteration (the fd source, at
        default priority, would be dispatched before any of them)."""
        loop = GLib.MainLoop()
        left = [n]

        def idle():
            left[0] -= 1
            if left[0] == 0:
                loop.quit()
                return GLib.SOURCE_REMOVE
            GLib.idle_add(idle)
            return GLib.SOURCE_REMOVE

        GLib.idle_add(idle)
        loop.run()


@pytest.fixture
def h():
    return GLibHarness()


def test_results_on_main_thread(h):
    att = checks.results_on_main_thread(h)
    assert att.timer_pumps == 0 and att.source_id is None


def test_one_attachment_per_runtime(h, rt):
    checks.one_attachment_per_runtime(h)
    with pytest.raises(TypeError):
        hl_glib.attach(rt, priority="high")


def test_nested_context_iteration_in_callback(h):
    ctx = GLib.MainContext.default()
    checks.nested_loop_in_callback(h, lambda: [ctx.iteration(False) for _ in range(10)])


def test_source_is_removed_on_detach(h, rt):
    att = hl_glib.attach(rt, priority=GLib.PRIORITY_HIGH)
    sid = att.source_id
    assert GLib.MainContext.default().find_source_by_id(sid) is not None
    att.detach()
    assert GLib.MainContext.default().find_source_by_id(sid) is None


class TestContract(checks.AdapterContract):
    """raising callbacks, budgets, detach, shutdown, plugin frames (adapter_checks)."""
