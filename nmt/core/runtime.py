"""Where a process computes: the device, CPU threads, the allocator, seeds, and a description
of the hardware for reports."""

from __future__ import annotations

import ctypes
import os
import platform
import random
from pathlib import Path

import torch


def return_freed_memory() -> bool:
    """Make glibc serve allocations of 8 MiB and more with mmap, so freeing returns them.

    Batches of varying length allocate differently sized activations every step; glibc's heap
    otherwise keeps the high-water mark and fragments, and a long batch leaves peak RSS 1.7x
    what the step needs. 8 MiB keeps the per-step [B, H] tensors on the heap (1 MiB cost a
    quarter of the speed in page faults); measured on the reference model, 2.5 -> 1.4 GiB peak
    for 6 % fewer tokens/s. Returns False where mallopt is unavailable (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 8 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a cgroup's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads for a process left to choose: ``OMP_NUM_THREADS`` where set, else every usable
    core. Two processes of all cores each on the same cores run far slower than one thread each
    (OpenMP threads spin while they wait: two 30-update runs at once took 139 s each with 2
    threads, 14.5 s with 1, on 2 cores), so whoever starts several sets OMP_NUM_THREADS."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return usable_cores()


def pick_device(name: str, threads: int | None = None) -> torch.device:
    """auto: CUDA when present, else CPU with ``threads`` threads (default ``cpu_threads()``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        torch.set_num_threads(threads or cpu_threads())
        return_freed_memory()
    return device


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pick_precision(name: str, device: torch.device, *, training: bool = False) -> torch.dtype:
    """auto: bf16 autocast where the hardware multiplies bf16 natively (CUDA with bf16, CPUs with
    AMX or AVX-512 BF16), fp32 elsewhere, where bf16 is emulated and slower than fp32 (on an
    AVX2-only CPU a bf16 matmul runs at about 1 GFLOP/s against 140 in fp32). ``training`` on a
    CPU: fp32 whatever the CPU, for what was measured on one with AMX (Xeon, 2 cores, at 537e276):
    bf16 training no faster than fp32 (3,216 against 3,242 target tokens/s on the reference GRU)
    and a default run's peak RSS 3.16 GiB against 0.82; decoding there gains from bf16."""
    if name not in PRECISIONS:
        raise ValueError(f"precision={name!r}: expected one of {', '.join(PRECISIONS)}")
    if name == "auto" and training and device.type == "cpu":
        name = "fp32"
    if name == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
        name = "bf16" if native else "fp32"
    return torch.bfloat16 if name == "bf16" else torch.float32


def autocast(device: torch.device, precision: torch.dtype):
    """The forward passes' context: bf16 autocast, or nothing in fp32. Losses, log-softmaxes and
    attention softmaxes compute in fp32 either way."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == torch.bfloat16)


def precision_name(precision: torch.dtype) -> str:
    return "bf16" if precision == torch.bfloat16 else "fp32"


def describe_device(device: torch.device) -> str:
    """What the run trained on, for reports: GPU name, or CPU model and thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {threads_text(torch.get_num_threads())} (torch {torch.__version__})"


def threads_text(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class OperatorCounter:
    """Counts what a block of PyTorch code dispatches (``with OperatorCounter() as ops: ...``):
    ``casts``, the dtype conversions (``_to_copy`` and ``copy_`` between two dtypes: autocast's
    casts among them), and, with ``timed=True``, the wall time spent in matrix products (``mm``,
    ``addmm``, ``bmm``, ``baddbmm``) and in everything. For benchmarks and tests of how much work
    a step does beside its products; timing each operator adds its own overhead."""

    PRODUCTS = frozenset({"mm", "addmm", "bmm", "baddbmm", "_addmm_activation"})

    def __init__(self, timed: bool = False, watch=()):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return counter._dispatch(func, args, kwargs or {})

        self._mode = _Mode()
        self.timed = timed
        self.casts = 0
        self.watched_casts = 0
        self._watched = {t.untyped_storage().data_ptr() for t in watch}
        self.product_seconds = 0.0
        self.seconds = 0.0
        self._start = 0.0

    def _dispatch(self, func, args, kwargs):
        import time

        name = func.overloadpacket.__name__
        start = time.perf_counter() if self.timed and name in self.PRODUCTS else None
        out = func(*args, **kwargs)
        if start is not None:
            self.product_seconds += time.perf_counter() - start
        if name in ("_to_copy", "copy_"):
            src, dst = (args[1], args[0]) if name == "copy_" else (args[0], out)
            tensors = isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor)
            if tensors and src.dtype != dst.dtype:
                self.casts += 1
                self.watched_casts += src.untyped_storage().data_ptr() in self._watched
        return out

    def __enter__(self) -> OperatorCounter:
        import time

        self._start = time.perf_counter()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        import time

        self._mode.__exit__(*exc)
        self.seconds = time.perf_counter() - self._start

    @property
    def product_share(self) -> float:
        """The share of the block's wall time spent in matrix products (``timed=True``)."""
        return self.product_seconds / self.seconds if self.seconds else 0.0
