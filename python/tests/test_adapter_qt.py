"""hostloop.qt against a real Qt event loop: PyQt5 from the distribution, with a QApplication on
Qt's offscreen platform (no display needed)."""

import os

import pytest

import adapter_checks as checks
import hostloop

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtCore = pytest.importorskip("PyQt5.QtCore",
                             reason="PyQt5 is missing: apt-get install python3-pyqt5")
QtWidgets = pytest.importorskip("PyQt5.QtWidgets")

import hostloop.qt as hl_qt  # noqa: E402


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication(["hostloop-tests"])


class QtHarness:
    def __init__(self, **defaults):
        self.defaults = defaults

    def attach(self, rt, **kw):
        return hl_qt.attach(rt, **{**self.defaults, **kw})

    def spin(self, until, timeout_s):
        """Runs a QEventLoop (the main thread's dispatcher, as app.exec_() does) until until()."""
        loop = QtCore.QEventLoop()
        check = QtCore.QTimer()
        check.setInterval(5)
        check.timeout.connect(lambda: until() and loop.quit())
        deadline = QtCore.QTimer()
        deadline.setSingleShot(True)
        deadline.timeout.connect(loop.quit)
        check.start()
        deadline.start(int(timeout_s * 1000))
        if not until():
            loop.exec_()
        check.stop()
        deadline.stop()
        return bool(until())

    def turn(self, n):
        """n zero-delay timers chained: each fires in a separate dispatcher pass, and every pass
        polls the socket notifiers."""
        loop = QtCore.QEventLoop()
        left = [n]

        def tick():
            left[0] -= 1
            if left[0] == 0:
                loop.quit()
            else:
                QtCore.QTimer.singleShot(0, tick)

        QtCore.QTimer.singleShot(0, tick)
        loop.exec_()


@pytest.fixture
def h(app):
    return QtHarness(QtCore=QtCore)


def test_results_on_main_thread(h):
    att = checks.results_on_main_thread(h)
    assert att.QtCore is QtCore


def test_one_attachment_per_runtime(h):
    checks.one_attachment_per_runtime(h)


def test_nested_process_events_in_callback(h):
    checks.nested_loop_in_callback(h, lambda: QtCore.QCoreApplication.processEvents())


def test_binding_found_without_qtcore_argument(app, rt):
    """PyQt5 is the binding this process imported: find_qtcore picks it (never a second one)."""
    assert hl_qt.find_qtcore() is QtCore
    att = hl_qt.attach(rt)
    assert att.QtCore is QtCore and att.timer is not None
    att.detach()


def test_fallback_timer_pumps_when_the_notifier_missed_it(h):
    """With the notifier disabled (an edge the loop missed), the fallback timer sees the fd
    readable and pumps; its pump re-enables the notifier, which then drives the rest."""
    base = checks.Baseline()
    rt = hostloop.Runtime(workers=1)
    att = h.attach(rt, timer_ms=20)
    att.notifier.setEnabled(False)
    got = []
    checks.in_thread(lambda: rt.call_soon(lambda: got.append(att.pumping))).join(checks.DEADLINE_S)
    assert h.spin(lambda: got, checks.DEADLINE_S)
    assert got == ["timer"] and att.timer_pumps == 1 and att.fd_pumps == 0
    assert att.notifier.isEnabled()
    checks.in_thread(lambda: rt.call_soon(lambda: got.append(att.pumping))).join(checks.DEADLINE_S)
    assert h.spin(lambda: len(got) == 2, checks.DEADLINE_S)
    assert got[1] in ("fd", "timer") and att.items == 2
    att.detach()
    assert not att.timer.isActive() and not att.notifier.isEnabled()
    rt.shutdown(5.0)
    base.check_clean()


def test_idle_fallback_timer_does_not_pump(h):
    """An idle runtime: the fallback timer ticks (watched here through a timer of our own at
    twice its interval) without pumping."""
    with hostloop.Runtime(workers=1) as rt:
        att = h.attach(rt, timer_ms=10)
        ticks = [0]
        ours = QtCore.QTimer()
        ours.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
        ours.start(20)
        assert h.spin(lambda: ticks[0] >= 10, checks.DEADLINE_S)
        ours.stop()
        assert att.timer_pumps == 0 and att.fd_pumps == 0 and rt.stats()["pumps"] == 0
        att.detach()


def test_no_timer_and_bad_arguments(h, rt):
    att = h.attach(rt, timer_ms=None)
    assert att.timer is None
    att.detach()
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError):
            h.attach(rt, timer_ms=bad)
    att = hl_qt.attach(rt, QtCore=QtCore)  # the failures did not leave it "attached"
    assert att.attached
    att.detach()


class TestContract(checks.AdapterContract):
    """raising callbacks, budgets, detach, shutdown, plugin frames (adapter_checks)."""
