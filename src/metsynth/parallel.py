"""Map a function over tasks: in-process, on local processes, or on a Dask cluster.

One function, :func:`map_tasks`, serves every batch stage::

    for result in map_tasks(synthesize_task, tasks, workers=4, desc="synthesis"):
        ...

* ``workers=1`` (and no scheduler) runs the tasks one after the other in this process, which
  is the easiest to debug (breakpoints and tracebacks work as usual).
* ``workers=N`` uses a :class:`concurrent.futures.ProcessPoolExecutor` with the *spawn* start
  method (safe with threads, identical on Linux, macOS and Windows). ``fn`` and the tasks must
  therefore be picklable: define ``fn`` at module level, keep tasks small (ids and paths, not
  arrays).
* ``scheduler="tcp://host:8786"`` (or a ``distributed.Client``) sends the tasks to a Dask
  cluster through ``Client.get_executor()``; the workers must see the same files (shared file
  system) and have metsynth installed.

Inside :func:`reuse_workers` (the study runs its stages in it), the local processes are kept
between calls: one pool per worker count, started on first use and closed when the block ends,
so each worker process imports torch and the rest once per study instead of once per stage.
Tasks must then leave no state behind that changes a later task (torch's thread count is set by
the tasks that use torch; a module-level cache must be keyed by what it caches).

Results are yielded as tasks complete (not in task order). A task that raises does not stop the
others: its key and error are logged at once and collected as :class:`TaskFailure` records;
after the last task, :class:`TasksFailed` is raised with all of them (or, with
``raise_on_failure=False``, they are left in :attr:`TaskMap.failures`). Callers whose outputs
are files written atomically can simply rerun to retry the failed tasks.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, MetsynthError
from .progress import progress_bar

log = logging.getLogger(__name__)

__all__ = ["TaskFailure", "TaskMap", "TasksFailed", "map_tasks", "reuse_workers", "task_key"]


@dataclass(frozen=True)
class TaskFailure:
    """One task that raised: its key, the error in one line, and the full traceback."""

    key: str
    error: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.key}: {self.error}"


class TasksFailed(MetsynthError):
    """Raised after all tasks ran when some of them failed; ``.failures`` lists them."""

    def __init__(self, failures: list[TaskFailure], total: int, desc: str = "tasks") -> None:
        self.failures = list(failures)
        self.total = total
        shown = "; ".join(str(f) for f in self.failures[:5])
        more = f"; ... and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        if total == 1:
            message = f"{desc} failed ({shown}): fix the cause and rerun the same command"
        elif len(self.failures) == total:
            message = (f"all {total} {desc} failed ({shown}{more}): fix the cause and rerun the same command")
        else:
            message = (f"{len(self.failures)} of {total} {desc} failed ({shown}{more}); the others finished "
                       "and their outputs are kept: fix the cause and rerun the same command to redo only "
                       "the failed ones")
        super().__init__(message)


def task_key(task: Any) -> str:
    """The id of a task for messages: its ``key`` attribute, ``task["key"]``, or ``str(task)``."""
    key = getattr(task, "key", None)
    if key is None and isinstance(task, dict):
        key = task.get("key")
    return str(key if key is not None else task)


class TaskMap:
    """Iterable over the results of ``fn(task)``; see :func:`map_tasks`."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        tasks: Iterable[Any],
        *,
        workers: int = 1,
        scheduler: Any = None,
        progress: bool = True,
        desc: str = "tasks",
        key: Callable[[Any], str] = task_key,
        raise_on_failure: bool = True,
        max_pending: int | None = None,
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
        self.fn = fn
        self.tasks = list(tasks)
        self.workers = workers
        self.scheduler = scheduler
        self.progress = progress
        self.desc = desc
        self.key = key
        self.raise_on_failure = raise_on_failure
        self.max_pending = max_pending or max(4 * workers, 8)
        self.failures: list[TaskFailure] = []
        self.completed = 0

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        bar = progress_bar(len(self.tasks), self.desc, self.progress)
        try:
            if self.scheduler is not None:
                yield from self._run_dask(bar)
            elif self.workers == 1:
                yield from self._run_inline(bar)
            elif _KEPT is not None:
                yield from self._run_executor(_kept_pool(self.workers), bar)
            else:
                with _new_pool(self.workers) as pool:
                    yield from self._run_executor(pool, bar)
        finally:
            if bar is not None:
                bar.close()
        if self.failures and self.raise_on_failure:
            raise TasksFailed(self.failures, len(self.tasks), self.desc)

    def _record_failure(self, task: Any, err: BaseException) -> None:
        key = self.key(task)
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        failure = TaskFailure(key=key, error=f"{type(err).__name__}: {err}", traceback=text)
        self.failures.append(failure)
        # said as it happens in a batch; a single task's failure is the error the command ends with
        log.log(logging.ERROR if len(self.tasks) > 1 else logging.DEBUG, "task %s failed: %s", key, failure.error)
        log.debug("%s", text)

    def _run_inline(self, bar: Any) -> Iterator[Any]:
        for task in self.tasks:
            try:
                result = self.fn(task)
            except Exception as err:  # noqa: BLE001 - reported per task, the others go on
                self._record_failure(task, err)
            else:
                self.completed += 1
                yield result
            if bar is not None:
                bar.update(1)

    def _run_executor(self, executor: cf.Executor, bar: Any) -> Iterator[Any]:
        """Submit with a bounded window (memory stays flat for many tasks); yield as completed."""
        queue = iter(self.tasks)
        pending: dict[cf.Future, Any] = {}

        def fill() -> None:
            while len(pending) < self.max_pending:
                task = next(queue, _END)
                if task is _END:
                    return
                pending[executor.submit(self.fn, task)] = task

        try:
            fill()
            while pending:
                done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # noqa: BLE001
                        self._record_failure(task, err)
                    else:
                        self.completed += 1
                        yield result
                    if bar is not None:
                        bar.update(1)
                fill()
        finally:
            for future in pending:
                future.cancel()

    def _run_dask(self, bar: Any) -> Iterator[Any]:
        try:
            import distributed
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigError(
                "a Dask scheduler was given but 'distributed' is not installed; "
                "install it with `pip install \"dask[distributed]\"` or run without --scheduler"
            ) from None
        own_client = False
        client = self.scheduler
        if isinstance(client, str):
            try:
                client = distributed.Client(client)  # timeout: dask config distributed.comm.timeouts.connect
            except OSError as err:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at {self.scheduler!r} ({err}); start it with "
                    "`dask scheduler` (and workers with `dask worker ADDRESS`) or check the address"
                ) from None
            own_client = True
        elif not isinstance(client, distributed.Client):
            raise ConfigError(
                f"scheduler must be an address like 'tcp://host:8786' or a distributed.Client, "
                f"got {type(client).__name__}"
            )
        executor = client.get_executor(pure=False)
        try:
            yield from self._run_executor(executor, bar)
        finally:
            executor.shutdown(wait=False)
            if own_client:
                client.close()


_END = object()

# worker count -> its process pool, while a reuse_workers() block is open (None: a pool per call)
_KEPT: dict[int, cf.ProcessPoolExecutor] | None = None


def _new_pool(workers: int) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _kept_pool(workers: int) -> cf.ProcessPoolExecutor:
    """The open pool of ``workers`` processes, or a new one (also in place of one a dead worker broke)."""
    assert _KEPT is not None
    pool = _KEPT.get(workers)
    if pool is not None and getattr(pool, "_broken", False):
        log.warning("a worker process of the kept pool died; starting new ones")
        pool.shutdown(wait=False, cancel_futures=True)
        pool = None
    if pool is None:
        pool = _KEPT[workers] = _new_pool(workers)
    return pool


@contextmanager
def reuse_workers() -> Iterator[None]:
    """Keep :func:`map_tasks`'s local worker processes between calls inside this block (see the
    module's docstring); they are closed when it ends. Nested blocks share the outer one's pools."""
    global _KEPT
    if _KEPT is not None:
        yield
        return
    _KEPT = {}
    try:
        yield
    finally:
        pools, _KEPT = _KEPT, None
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def map_tasks(
    fn: Callable[[Any], Any],
    tasks: Iterable[Any],
    *,
    workers: int = 1,
    scheduler: Any = None,
    progress: bool = True,
    desc: str = "tasks",
    key: Callable[[Any], str] = task_key,
    raise_on_failure: bool = True,
    max_pending: int | None = None,
) -> TaskMap:
    """Run ``fn(task)`` for every task; iterate the returned :class:`TaskMap` for the results.

    Parameters
    ----------
    fn:
        A module-level function (picklable) taking one task.
    tasks:
        Picklable task descriptions; ``key(task)`` names each in messages (default: its
        ``key`` attribute or ``str(task)``).
    workers:
        1 = in this process; N > 1 = N local processes (spawn). Ignored with a scheduler.
    scheduler:
        ``None`` (local), a Dask scheduler address ``"tcp://host:port"``, or a
        ``distributed.Client``.
    progress, desc:
        A tqdm progress bar labelled ``desc`` (off when ``metsynth --quiet``).
    raise_on_failure:
        Raise :class:`TasksFailed` after the last task if any failed (default); otherwise the
        failures are only in ``.failures``.
    max_pending:
        Most tasks submitted at once (default ``4 * workers``, at least 8).
    """
    return TaskMap(
        fn, tasks, workers=workers, scheduler=scheduler, progress=progress, desc=desc, key=key,
        raise_on_failure=raise_on_failure, max_pending=max_pending,
    )
