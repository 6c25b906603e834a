"""Ctrl-C that always takes effect.

Python raises KeyboardInterrupt wherever the main thread happens to be; if that
is inside a finalizer (h5py and torch run many), the exception is printed as
"ignored" and the work goes on. The command line installs :func:`install`,
which also remembers the request, and long loops call :func:`check` at points
where stopping is safe, so a swallowed interrupt is raised again there.
"""

from __future__ import annotations

import signal
import sys

_requested = False


def _handler(signum, frame):
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    signal.signal(signal.SIGINT, _handler)
    previous_hook = sys.unraisablehook

    def quiet_about_interrupts(unraisable):
        # A swallowed Ctrl-C is raised again by check(); its "ignored" traceback is noise.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    sys.unraisablehook = quiet_about_interrupts


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed and not yet dealt with."""
    if _requested:
        raise KeyboardInterrupt


def clear() -> None:
    """The interrupt has been handled (e.g. training stopped and saves its best epoch)."""
    global _requested
    _requested = False
