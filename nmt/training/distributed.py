"""Data-parallel training under ``torchrun``: which rank this process is, the process group, and
the few agreements the training loop needs. torch.distributed does all the communicating
(DistributedDataParallel averages the gradients); this module only names what is exchanged.

One process per rank, each with its own model replica, taking its own share of every group of
``size`` consecutive batches of the same epoch order (``shard``). Rank 0 validates, logs and
writes checkpoints; the others wait for its scores. Without torchrun's environment nothing
here starts a process group and the single-process path is unchanged.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from nmt.core.runtime import usable_cores

__all__ = ["SINGLE", "World", "shard"]

# How long a rank waits in a collective: rank 0 validating or writing a checkpoint while the
# others wait must not count as a hang.
TIMEOUT = timedelta(minutes=int(os.environ.get("NMT_DIST_TIMEOUT_MIN", "60")))


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE); one rank of one when they are absent."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return SINGLE
        size = int(env["WORLD_SIZE"])
        return cls(
            rank=int(env.get("RANK", 0)),
            size=size,
            local_rank=int(env.get("LOCAL_RANK", 0)),
            local_size=int(env.get("LOCAL_WORLD_SIZE", size)),
        )

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def threads(self, requested: int | None) -> int:
        """CPU threads of this rank: ``requested``, or the usable cores shared among the ranks
        on the machine (not OMP_NUM_THREADS: torchrun sets it to 1 for ranks of its own)."""
        return requested or max(1, usable_cores() // self.local_size)

    def device(self, name: str) -> str:
        """The device name for this rank: its own GPU (LOCAL_RANK) when CUDA is used."""
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if self.enabled and name == "cuda":
            return f"cuda:{self.local_rank}"
        return name

    # -- the process group ------------------------------------------------------------------

    def start(self, device: torch.device) -> None:
        """Join the process group: nccl on CUDA, gloo on CPU."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=TIMEOUT)

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            # DistributedDataParallel lives in a reference cycle: collected now, its reducer lets
            # go of the process group while both are whole, not in the interpreter's teardown.
            gc.collect()
            dist.destroy_process_group()

    # -- the agreements the loop needs ------------------------------------------------------

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """What the training forward runs through: DistributedDataParallel, which averages the
        ranks' gradients during backward; alone, the model itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def total(self, *values: float, device: torch.device) -> list[float]:
        """Sums over the ranks of a few numbers, in one all-reduce."""
        if not self.enabled:
            return list(values)
        # float64 holds token counts and 0/1 flags exactly.
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()


SINGLE = World()


def shard(
    batches: Iterator[tuple[int, list[int]]], world: World
) -> Iterator[tuple[int, list[int]]]:
    """This rank's share of an epoch: from each group of ``world.size`` consecutive batches,
    the ``world.rank``-th, paired with the group's last position (so a checkpoint's position
    is where the next group starts). A last incomplete group is dropped, so every rank makes
    the same number of updates and none waits for a batch that never comes."""
    if not world.enabled:
        yield from batches
        return
    group: list[tuple[int, list[int]]] = []
    for item in batches:
        group.append(item)
        if len(group) == world.size:
            yield group[-1][0], group[world.rank][1]
            group = []
