"""Where metsynth's log messages go: one setup for the command line and for worker processes."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

# Lightning logs through its own handlers (and advertises services at INFO).
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def configure_logging(level: int) -> None:
    """metsynth's messages at ``level`` on stderr (also in worker processes, which start bare)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # Keep Lightning's messages once, at WARNING unless at DEBUG (``--verbose``).
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
        logger.propagate = False
