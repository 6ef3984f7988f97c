"""Drive a hostloop Runtime from a Tk main loop (tkinter).

    root = tkinter.Tk()
    att = hostloop.tk.attach(rt, root)
    root.mainloop()
    att.detach()

Tk watches ``rt.wake_fd()`` with ``createfilehandler`` (Unix) and pumps (``budget_ms``) when it
is readable. The handler is taken off while a pump runs, so a callback that calls
``root.update()`` does not spin on the fd (or re-enter the pump).
"""

import tkinter

from ._attach import Attachment

__all__ = ["attach", "TkAttachment"]

# id(attachment) -> the handler Tk calls, while attached. Not kept on the attachment: a cycle
# through a Tk object can be collected on another thread, and Tcl aborts the process when an
# interpreter is freed off its own thread.
_handlers = {}


class TkAttachment(Attachment):
    """An :class:`~hostloop._attach.Attachment` to the Tk interpreter of ``root`` (the widget
    while attached; None once detached, so no Tk object outlives the attachment's use)."""

    host = "tk"

    def __init__(self, rt, root, budget_ms):
        super().__init__(rt, budget_ms)
        tk = getattr(root, "tk", None)
        if tk is None or not hasattr(tk, "createfilehandler"):
            raise TypeError(
                f"root must be a tkinter widget (e.g. tkinter.Tk()) on a platform with "
                f"createfilehandler, not {root!r}"
            )
        self.root = root
        self._tk = tk
        self._watching = False
        _handlers[id(self)] = self._on_readable
        self._register()
        try:
            self._watch()
        except BaseException:
            self._forget()
            self._let_go()
            raise

    def _watch(self):
        self._tk.createfilehandler(self.fd, tkinter.READABLE, _handlers[id(self)])
        self._watching = True

    def _on_readable(self, fd, mask):
        self._pump("fd")

    def _before_pump(self):
        self._watching = False
        self._tk.deletefilehandler(self.fd)

    def _after_pump(self):
        self._watch()

    def _unwatch(self):
        try:
            if self._watching:
                self._watching = False
                try:
                    self._tk.deletefilehandler(self.fd)
                except tkinter.TclError:  # the interpreter is gone, and its handlers with it
                    pass
        finally:
            self._let_go()

    def _let_go(self):
        # Detached: hold no Tk object (see _handlers).
        _handlers.pop(id(self), None)
        self.root = None
        self._tk = None


def attach(rt, root=None, budget_ms=2.0):
    """Watch ``rt.wake_fd()`` in ``root``'s Tk event loop (default: tkinter's default root) and
    pump (``budget_ms``) whenever it is readable. Call it on the Tk thread (the runtime's main
    thread). Returns a :class:`TkAttachment`; detach it before destroying ``root``."""
    if root is None:
        root = getattr(tkinter, "_default_root", None)
        if root is None:
            raise RuntimeError("no Tk root: create tkinter.Tk() first, or pass root=")
    return TkAttachment(rt, root, budget_ms)
