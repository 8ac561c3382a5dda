"""The one error the lab raises: what could not be prepared, started or driven."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not be prepared, started or driven (message says what to do)."""
