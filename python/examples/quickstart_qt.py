"""hostloop in a Qt application: background work, its result shown in a widget on the Qt main
thread. Runs offscreen (no display needed) and quits itself when the result arrived.

    python python/examples/quickstart_qt.py
"""
import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PyQt5.QtCore import QTimer  # noqa: E402  (PySide6 / PySide2 work the same)
from PyQt5.QtWidgets import QApplication, QLabel  # noqa: E402

import hostloop  # noqa: E402
import hostloop.qt  # noqa: E402


def work(n):
    """Runs on a hostloop thread: never touch widgets here."""
    return sum(i * i for i in range(n))


def main():
    app = QApplication([])
    label = QLabel("working...")
    label.show()
    with hostloop.Runtime() as rt, hostloop.qt.attach(rt):

        def done(value):  # inside a pump, on the Qt main thread: widgets are fine here
            label.setText(f"result {value}")
            print(label.text(), "on", threading.current_thread().name)
            app.quit()

        rt.spawn(work, 1000, on_main=done)
        QTimer.singleShot(30_000, app.quit)  # a safety net: never hang
        app.exec_()
    return 0 if label.text().startswith("result") else 1


if __name__ == "__main__":
    raise SystemExit(main())
