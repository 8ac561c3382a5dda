"""The lab's child processes (Asterisk, SIPp, the agent) die with the process that
started them."""

from __future__ import annotations

import ctypes
import signal

try:  # resolved in the parent: the forked child must not dlopen (loader lock + threads)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
    _PRCTL = None


def die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the parent dies.

    A crashed or killed test run must not leave a lab Asterisk (or SIPp) holding ports.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
