"""A DataLoader that makes its next batches in a background thread when it has no worker process.

With ``num_workers: 0`` (the demo: two folds train at once on two cores, so worker processes
would only compete for them) each patch was made between two optimizer steps: the training
waited 14-17 % of its step time, mostly in the rotated or scaled patches'
``scipy.ndimage.affine_transform``, which releases the GIL. Here one thread iterates the loader
``depth`` batches ahead, in order, so patch making overlaps the step wherever a core is free.
The batches and their order are the loader's own: the same bytes as without the thread (each
patch is seeded by its key, not by who makes it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()
PREFETCH_DEPTH = 2  # batches made ahead of the step (0: in the step, as a plain DataLoader)


class ThreadPrefetchLoader(torch.utils.data.DataLoader):
    """``torch.utils.data.DataLoader`` whose iteration runs ``depth`` batches ahead in a thread
    when ``num_workers`` is 0 (with workers it is the plain DataLoader)."""

    def __init__(self, *args: Any, depth: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.depth = PREFETCH_DEPTH if depth is None else depth

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        if self.num_workers > 0 or self.depth < 1:
            return batches
        return _ahead(batches, self.depth)


def _ahead(batches: Iterator[Any], depth: int) -> Iterator[Any]:
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the training loop, which raises it
            ready.put(_Failed(err))

    thread = threading.Thread(target=fill, name="metsynth-patches", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:  # the loop stopped early (max_steps, an error): let the thread end
        stop.set()
        while thread.is_alive():
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass


__all__ = ["PREFETCH_DEPTH", "ThreadPrefetchLoader"]
