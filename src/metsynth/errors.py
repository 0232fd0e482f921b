"""Errors a user can act on.

Every error raised for bad input or bad configuration is a :class:`MetsynthError`: its message
names the file, the case or the parameter, and says how to fix it. The command line prints the
message as one line (no traceback) and exits non-zero.
"""

from __future__ import annotations


class MetsynthError(Exception):
    """Base class of errors that are the user's to fix (not bugs)."""


class InputError(MetsynthError, ValueError):
    """An input file or its content is wrong: missing, unreadable, wrong grid, NaNs..."""


class ConfigError(MetsynthError, ValueError):
    """A configuration value is wrong, or a run directory belongs to another configuration."""
