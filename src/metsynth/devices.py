"""Device selection shared by every stage that runs a network (DDPM, U-Net), and the ranks of a
study whose trainings run on several processes (DDP)."""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator

from .config import Settings
from .errors import ConfigError, MetsynthError

log = logging.getLogger(__name__)


# The precisions every training of a study takes (the DDPM's and the U-Nets'), and Lightning's name of each.
PRECISIONS = {"32": "32-true", "32-true": "32-true", "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed",
              "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true", "64-true": "64-true"}


class LightningDevices(Settings):
    """Where a training runs, passed to ``lightning.Trainer`` as is (multi-GPU, multi-node, mixed
    precision): the study's ``trainer`` section itself, and the first fields of every U-Net training's
    trainer settings (:meth:`metsynth.segmentation.presets.TrainerConfig.on_devices` puts a study's over a
    preset's); the DDPM's training takes them as arguments."""

    accelerator: str = Field("auto", description="Lightning accelerator: cpu, gpu, cuda, mps, auto, ...")
    devices: int | str = Field("auto", description="Devices per node: a number, a list like '0,1', or auto.")
    strategy: str = Field("auto", description="auto, ddp, ddp_spawn, fsdp, ... (several GPUs or nodes; SLURM is "
                                              "detected by Lightning).")
    num_nodes: int = Field(1, ge=1, description="Nodes of a multi-node DDP training.")
    precision: str = Field("32-true", description="32-true, 16-mixed (the paper preset on a GPU), bf16-mixed.")

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, value: Any) -> Any:
        # checked when the config is read, not when the first training starts (a study would have run
        # its stages up to the DDPM by then)
        if str(value) not in PRECISIONS:
            raise ValueError(f"{value!r} is not a precision every training takes; use one of "
                             f"{', '.join(dict.fromkeys(PRECISIONS.values()))}")
        return str(value)
T = TypeVar("T")


def resolve_device(device: str | None = "auto"):
    """``auto`` -> cuda if available, else cpu; ``gpu``/``cuda``/``cuda:N`` -> that GPU (error if
    absent); ``cpu`` -> cpu. Returns a ``torch.device`` (``str()`` of it for picklable tasks)."""
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: no CUDA GPU is available here; use --device cpu or auto")
        return torch.device("cuda" if name == "gpu" else name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device {device!r} is not supported; use auto, cpu, gpu or cuda:N")


def check_trainer(accelerator: str = "auto", devices: int | str | list[int] = "auto", strategy: str = "auto",
                  num_nodes: int = 1, precision: str | int = "32-true") -> None:
    """Raise ConfigError (one line) if Lightning cannot run these trainer settings on this machine.

    Called before a training writes anything, so a run folder is never claimed by a training that
    cannot start (e.g. ``--accelerator gpu`` where there is no GPU). Uses Lightning's own check
    (the connector the Trainer builds), so the answer is the Trainer's.
    """
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
        from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector
    except ImportError:  # another Lightning layout: the Trainer itself will tell
        return
    try:
        _AcceleratorConnector(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
                              precision=precision)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"trainer settings accelerator={accelerator!r}, devices={devices!r}, strategy={strategy!r}, "
                          f"precision={precision!r} cannot run here: {first} (`--accelerator auto` picks what "
                          "this machine has)") from None


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block (0: left as they are) and put back
    after it: a task's setting must not outlive it in a worker process kept for later tasks
    (:func:`metsynth.parallel.reuse_workers`)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

# ======================================================================= what a network ran on
# Environment variables that change which kernels torch runs on a CPU or GPU, hence the last bits of
# a training's results: recorded when set.
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")
CUDA_NUMERIC_ENV = ("CUBLAS_WORKSPACE_CONFIG",)  # set by Lightning's deterministic mode; matters on a GPU only


def compute_environment(device: Any = "cpu", world_size: int = 1, precision: Any = None) -> dict[str, Any]:
    """What a network was trained on, as its record keeps it (``result.json`` of a U-Net training,
    ``trained.environment`` in a DDPM's ``model.yaml``).

    The same seeds give the same weights only on the same kind of machine: torch's CPU kernels and
    oneDNN take other paths on another instruction set (``cpu_capability``), thread count or GPU,
    and the last bits that differ grow over a training (the demo's Dice moved by up to 0.05 from one
    2-core machine to another: benchmarks/RESULTS.md, "the demo on another machine"). The record
    says which of these a run's numbers came from (a training resumed on another machine records the
    one it finished on).
    """
    import platform

    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    env: dict[str, Any] = {
        "torch": str(torch.__version__), "python": platform.python_version(), "machine": platform.machine(),
        "cpu": _cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(), "device": str(dev), "world_size": int(world_size),
    }
    if precision is not None:
        env["precision"] = str(precision)
    if dev.type == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["cuda"] = torch.version.cuda
    names = NUMERIC_ENV + (CUDA_NUMERIC_ENV if dev.type == "cuda" else ())
    overrides = {name: os.environ[name] for name in names if name in os.environ}
    if overrides:
        env["env"] = overrides
    return env


def _cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what :mod:`platform` says."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ======================================================================= memory format of 3D convolutions
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
MEMORY_FORMAT_HELP = (
    "Memory layout of the network's 3D tensors: channels_last (NDHWC) or contiguous (NCDHW). auto: "
    "channels_last in a training on a CPU in one process, where oneDNN's 3D convolutions with few channels are "
    "~20 % faster on it (benchmarks/bench_memory_format.py), contiguous elsewhere (not measured on a GPU; "
    "on several ranks DDP warns about it). Same network and weights either way; the sums run in another "
    "order, so the last bits differ.")


def uses_channels_last(device: Any, memory_format: str = "auto", world_size: int = 1) -> bool:
    """Whether a network on ``device`` runs on channels-last (NDHWC) tensors (:data:`MEMORY_FORMAT_HELP`);
    ``auto`` is contiguous in a training on several ranks (DDP's gradient buckets then copy the gradients
    of parameters whose layout is ambiguous, such as a one-channel input's convolution, and warn)."""
    if memory_format == "auto":
        return str(device).split(":")[0] == "cpu" and world_size == 1
    if memory_format not in ("channels_last", "contiguous"):
        raise ConfigError(f"memory_format {memory_format!r}: use auto, channels_last or contiguous")
    return memory_format == "channels_last"


def to_memory_format(x: Any, channels_last: bool) -> Any:
    """A module or a 5D tensor in channels-last layout when ``channels_last`` (else ``x`` itself).
    Converting a module keeps its parameter objects (an optimizer built on them still holds them)."""
    if not channels_last:
        return x
    import torch

    if isinstance(x, torch.Tensor):
        return x.contiguous(memory_format=torch.channels_last_3d) if x.dim() == 5 else x
    return x.to(memory_format=torch.channels_last_3d)


# ======================================================================= the ranks of a DDP study
# A study whose trainings run on several ranks (``trainer: {strategy: ddp, devices: 2}``) has one
# process per rank for the whole study: Lightning's subprocess launcher reruns the command line for
# ranks 1..n-1, SLURM and torchrun start every rank themselves. Only global rank 0 runs the stage
# chain and its bookkeeping (run folder, stage records, every non-training stage). The other ranks
# run no stage: they join rank 0's trainings. Before each training rank 0 publishes the call in
# the process group's key-value store (the TCPStore at MASTER_ADDR:MASTER_PORT); the others wait
# for it, make the same call (so the same Trainer, the same data, the same collectives), and wait
# for the next one, until rank 0 publishes the end of the study. Inside a training, what reads and
# writes the run folder before the fit (resume or start over, the settings records) is decided and
# done by rank 0 alone and its decision handed to the others (:func:`on_rank_zero`).
#
# Waiting ranks poll the store. A rank 0 that ends with an error publishes it (the others then end
# quietly: rank 0 reports it); one that dies takes the store with it (its process hosts the store's
# server), and a waiting rank stops at once with an error that says so; a store that stops
# answering (a lost node) stops it after STORE_TIMEOUT_S.
STORE_TIMEOUT_S = 300.0
POLL_S = 0.2
END_WAIT_S = 60.0


class LostRankZero(MetsynthError):
    """A rank > 0 lost contact with rank 0 of its study before the study ended."""


class RankZeroFailed(MetsynthError):
    """Rank 0 raised in a step that the other ranks share; rank 0 reports the error itself."""


@dataclass(frozen=True)
class TrainerWorld:
    """The ranks that the trainer settings make on this machine (Lightning's own answer)."""

    rank: int          # global rank of this process
    size: int          # ranks in all
    processes: int     # ranks on this node
    follows: bool      # the other ranks run this program too (subprocess launcher, SLURM, torchrun)
    launches: bool     # this process starts the other ranks of its node (Lightning's subprocess launcher)
    strategy: Any = field(default=None, compare=False, repr=False)


def trainer_world(accelerator: str = "auto", devices: int | str | list[int] = "auto", strategy: str = "auto",
                  num_nodes: int = 1, precision: str | int = "32-true") -> TrainerWorld | None:
    """The ranks of trainings with these settings, or None for settings Lightning refuses here
    (the training itself reports them). ``size`` 1: one process; ``follows`` False with ``size`` > 1:
    the ranks live inside each training only (``ddp_spawn``, ``ddp_fork``)."""
    try:
        from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
        from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector
    except ImportError:
        return None
    try:
        chosen = _AcceleratorConnector(accelerator=accelerator, devices=devices, strategy=strategy,
                                       num_nodes=num_nodes, precision=precision).strategy
    except Exception:  # noqa: BLE001 - Lightning's "cannot run here": check_trainer says it in one line
        return None
    env = getattr(chosen, "cluster_environment", None)
    size = int(getattr(chosen, "world_size", 1) or 1)
    if env is None or size <= 1:
        return TrainerWorld(0, 1, 1, False, False)
    external = bool(env.creates_processes_externally)
    by_script = external or isinstance(getattr(chosen, "launcher", None), _SubprocessScriptLauncher)
    return TrainerWorld(int(chosen.global_rank), size, int(getattr(chosen, "num_processes", 1)), by_script,
                        by_script and not external, chosen)


_CURRENT: "StudyRanks | None" = None


def on_rank_zero(decide: Callable[[], T]) -> T:
    """Run ``decide`` once for all ranks of a DDP study: on global rank 0, which hands its result
    (or its error, as :class:`RankZeroFailed`) to the other ranks. Outside a DDP study (one process,
    or a training started on its own), every process runs it.

    For what a training reads and writes in its folder before the fit: each rank deciding from the
    files could see them before or after another rank's writes and resume where another starts over.
    """
    ranks = _CURRENT
    return decide() if ranks is None else ranks.decide(decide)


class StudyRanks:
    """The ranks of one DDP study (see the comment above :data:`STORE_TIMEOUT_S`)."""

    def __init__(self, world: TrainerWorld, store: Any, address: str, stage_threads: int,
                 training_threads: int) -> None:
        self.world = world
        self.rank = world.rank
        self.size = world.size
        self.store = store
        self.address = address
        self.stage_threads = stage_threads
        self.training_threads = training_threads
        self._calls = 0
        self._call: int | None = None  # the call under way (both sides count the same calls)
        self._decisions = 0

    # ------------------------------------------------------------------ set-up and end
    @classmethod
    def start(cls, world: TrainerWorld) -> "StudyRanks":
        """Start the other ranks (rank 0 under Lightning's subprocess launcher: they rerun this
        command line) and join the process group as Lightning's DDP does (its trainings find it up)."""
        global _CURRENT
        import torch
        import torch.distributed as dist

        threads = torch.get_num_threads()
        omp = os.environ.get("OMP_NUM_THREADS")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # Lightning's choice for a rank of a training: the cores shared among the node's ranks
        training_threads = threads if omp is not None else max(1, cpus // world.processes)
        strategy = world.strategy
        if world.launches:
            strategy.launcher.launch(lambda: None)  # ranks 1..n-1 of this node start here
        try:
            strategy.setup_environment()  # as a Trainer's fit does: the rank's device, the process group
        except BaseException:
            if world.launches:  # they would wait for this rank until the process group's timeout
                import signal

                strategy.launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))
            raise
        if world.rank == 0:  # rank 0's stages keep the cores of a one-process study
            torch.set_num_threads(threads)
            _restore_env("OMP_NUM_THREADS", omp)
        else:
            torch.set_num_threads(training_threads)
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        from datetime import timedelta

        client = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=STORE_TIMEOUT_S))
        prefix = f"metsynth-study/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        ranks = cls(world, dist.PrefixStore(prefix, client), f"{host}:{port}", threads, training_threads)
        _CURRENT = ranks
        if world.rank == 0:
            log.info("trainings on %d ranks (%s); the other stages run on rank 0 while the other ranks wait",
                     world.size, type(strategy).__name__)
        return ranks

    def finish(self, error: BaseException | None = None) -> None:
        """Rank 0: tell the other ranks that the study ended (and how), wait for them, leave."""
        try:
            status = ("done", None) if error is None else ("failed", _one_line(error))
            self.store.set("end", pickle.dumps(status))
            deadline = time.monotonic() + (END_WAIT_S if error is None else 10.0)
            waiting = set(range(1, self.size))
            while waiting and time.monotonic() < deadline:
                waiting = {r for r in waiting if not self.store.check([f"left/{r}"])}
                if waiting:
                    time.sleep(POLL_S)
            if waiting:
                log.warning("rank(s) %s did not confirm the end of the study", sorted(waiting))
        except Exception as err:  # noqa: BLE001 - a rank that died already: nothing to tell it
            log.warning("could not tell the other ranks that the study ended: %s", _one_line(err))
        finally:
            self.close()

    def close(self) -> None:
        global _CURRENT
        import torch.distributed as dist

        if _CURRENT is self:
            _CURRENT = None
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ rank 0
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Rank 0: run a training on every rank (the others make the same call)."""
        import torch

        n = self._calls
        self._calls += 1
        self.store.set(f"call/{n}", pickle.dumps((fn, args, kwargs)))
        omp = os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(self.training_threads)
        os.environ["OMP_NUM_THREADS"] = str(self.training_threads)
        self._call, self._decisions = n, 0
        try:
            return fn(*args, **kwargs)
        finally:
            self._call = None
            torch.set_num_threads(self.stage_threads)
            _restore_env("OMP_NUM_THREADS", omp)

    def decide(self, decide: Callable[[], T]) -> T:
        if self._call is None:  # not in a call that the other ranks make
            return decide()
        key = f"call/{self._call}/decision/{self._decisions}"
        self._decisions += 1
        if self.rank == 0:
            try:
                value = decide()
            except BaseException as err:
                self.store.set(key, pickle.dumps(("error", _one_line(err))))
                raise
            self.store.set(key, pickle.dumps(("ok", value)))
            return value
        if self._wait(key, "end") == "end":  # rank 0 ended before it decided (an error on its side only)
            raise RankZeroFailed("rank 0 ended the study before this step")
        status, value = pickle.loads(self.store.get(key))
        if status == "error":
            raise RankZeroFailed(f"rank 0 stopped: {value}")
        return value

    # ------------------------------------------------------------------ ranks > 0
    def follow(self) -> None:
        """Rank > 0: make rank 0's training calls until rank 0 ends the study."""
        log.info("rank %d of %d: joining the trainings of rank 0", self.rank, self.size)
        package = logging.getLogger("metsynth")
        if package.getEffectiveLevel() > logging.DEBUG:  # rank 0 tells what the trainings do
            package.setLevel(logging.WARNING)
        n = 0
        try:
            while True:
                key = self._wait(f"call/{n}", "end")
                if key == "end":
                    break
                fn, args, kwargs = pickle.loads(self.store.get(key))
                if "progress" in kwargs:
                    kwargs["progress"] = False
                self._call, self._decisions = n, 0
                try:
                    fn(*args, **kwargs)
                except RankZeroFailed:
                    self._wait("end")
                    break
                finally:
                    self._call = None
                n += 1
            status, message = pickle.loads(self.store.get("end"))
            if status != "done":
                log.warning("rank %d: rank 0 ended the study with an error (it reports it: %s)", self.rank, message)
            self.store.set(f"left/{self.rank}", b"1")
        finally:
            self.close()

    def _wait(self, *keys: str) -> str:
        """The first of ``keys`` that rank 0 has set; a clear error if rank 0 is gone."""
        while True:
            for key in keys:
                try:
                    ready = self.store.check([key])
                except Exception as err:  # noqa: BLE001 - DistNetworkError, DistStoreError, RuntimeError
                    raise LostRankZero(
                        f"rank {self.rank}: lost contact with rank 0 of the study (its store at {self.address}: "
                        f"{_one_line(err)}); rank 0 stopped before the end of the study: its output says why"
                    ) from None
                if ready:
                    return key
            time.sleep(POLL_S)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
