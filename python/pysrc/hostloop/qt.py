"""Drive a hostloop Runtime from a Qt event loop: PySide6, PySide2 or PyQt5 (Maya, Houdini,
Nuke and other Qt applications).

    att = hostloop.qt.attach(rt)       # after the QApplication exists, on its thread
    app.exec_()
    att.detach()

A ``QSocketNotifier`` on ``rt.wake_fd()`` pumps (``budget_ms``) when the fd is readable; it is
disabled while a pump runs, so a callback that runs a nested loop (a modal dialog,
``processEvents``) does not spin on the fd. A fallback ``QTimer`` (every ``timer_ms``, default
100) pumps only if the fd is readable or main-thread work is queued, so a notification the
loop missed is never a stall; an idle runtime costs it one ``poll`` per tick.
"""

import importlib
import select
import sys

from ._attach import Attachment

__all__ = ["attach", "QtAttachment", "find_qtcore"]

BINDINGS = ("PySide6", "PySide2", "PyQt5")


def find_qtcore():
    """The QtCore module to use: the first of PySide6, PySide2, PyQt5 already imported (an
    application must not mix bindings), else the first that imports."""
    for name in BINDINGS:
        mod = sys.modules.get(name + ".QtCore")
        if mod is not None:
            return mod
    errors = []
    for name in BINDINGS:
        try:
            return importlib.import_module(name + ".QtCore")
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise ImportError(
        "hostloop.qt needs PySide6, PySide2 or PyQt5 (or pass QtCore=): " + "; ".join(errors)
    )


class QtAttachment(Attachment):
    """An :class:`~hostloop._attach.Attachment` to the Qt main thread's event loop:
    ``notifier`` (the ``QSocketNotifier``), ``timer`` (the fallback ``QTimer``, or None)."""

    host = "qt"

    def __init__(self, rt, budget_ms, QtCore, timer_ms):
        super().__init__(rt, budget_ms)
        if timer_ms is not None and (
            isinstance(timer_ms, bool) or not isinstance(timer_ms, int) or timer_ms <= 0
        ):
            raise ValueError(f"timer_ms must be a positive int or None, not {timer_ms!r}")
        if QtCore.QCoreApplication.instance() is None:
            raise RuntimeError(
                "hostloop.qt.attach needs the QApplication (or QCoreApplication): create it first"
            )
        self.QtCore = QtCore
        sn = QtCore.QSocketNotifier
        read = getattr(sn, "Read", None)
        if read is None:
            read = sn.Type.Read
        self.notifier = None
        self.timer = None
        self._register()
        try:
            self.notifier = sn(self.fd, read)
            self.notifier.activated.connect(self._on_activated)
            if timer_ms is not None:
                self._poll = select.poll()
                self._poll.register(self.fd, select.POLLIN)
                self.timer = QtCore.QTimer()
                self.timer.setInterval(timer_ms)
                self.timer.timeout.connect(self._on_timer)
                self.timer.start()
        except BaseException:
            self._stop_qt()
            self._forget()
            raise

    def _on_activated(self, *_args):
        # PyQt5 passes the fd, PySide6 a QSocketDescriptor and the type: neither is needed.
        self._pump("fd")

    def _on_timer(self):
        if not self._attached or self._pumping is not None:
            return
        try:
            due = bool(self._poll.poll(0)) or (
                not self._rt.closed and self._rt.stats()["queued_main"] > 0
            )
        except Exception:  # noqa: BLE001 - shut down (pump detaches) or reported there
            due = True
        if due or self._rt.closed:
            self._pump("timer")

    def _before_pump(self):
        self.notifier.setEnabled(False)

    def _after_pump(self):
        self.notifier.setEnabled(True)

    def _stop_qt(self):
        # The objects stay referenced (deleting a notifier inside its own activated signal,
        # where a pump that met ShutDown detaches, would crash): stopped and disconnected,
        # they go with the attachment.
        for obj, signal, slot in (
            (self.notifier, "activated", self._on_activated),
            (self.timer, "timeout", self._on_timer),
        ):
            if obj is None:
                continue
            try:
                if signal == "activated":
                    obj.setEnabled(False)
                else:
                    obj.stop()
                getattr(obj, signal).disconnect(slot)
            except (RuntimeError, TypeError):  # already deleted (the app is gone) or disconnected
                pass

    def _unwatch(self):
        self._stop_qt()


def attach(rt, budget_ms=2.0, QtCore=None, timer_ms=100):
    """Watch ``rt.wake_fd()`` with a ``QSocketNotifier`` and pump (``budget_ms``) whenever it is
    readable, with a fallback ``QTimer`` every ``timer_ms`` (None: no timer). ``QtCore`` is the
    binding's QtCore module (default: :func:`find_qtcore`). Call it on the Qt main thread (the
    runtime's main thread) once the application object exists. Returns a
    :class:`QtAttachment`."""
    if QtCore is None:
        QtCore = find_qtcore()
    return QtAttachment(rt, budget_ms, QtCore, timer_ms)
