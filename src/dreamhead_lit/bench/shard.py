"""The test set sharded over DDP ranks (clip ``i`` to rank ``i % world``) and the per-rank results merged back."""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from .config import BenchError


def distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the process group)."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) <= 1 and int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        env.setdefault("RANK", env["SLURM_PROCID"])  # SLURM (srun) without torchrun
        env.setdefault("WORLD_SIZE", env["SLURM_NTASKS"])
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        env.setdefault("MASTER_PORT", "29500")
    if int(env.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def share(items: list, rank: int, world: int) -> list:
    """This rank's share of the test set: item ``i`` goes to rank ``i % world``."""
    return items[rank::world]


def check_each_once(rows: list[dict[str, Any]], methods: Iterable[str], clip_ids: list[str], world: int) -> None:
    """Every (method, clip) of the merged rows exactly once: a clip lost or scored twice is a sharding bug."""
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        seen[(r["method"], r["clip"])] = seen.get((r["method"], r["clip"]), 0) + 1
    twice = sorted(k for k, n in seen.items() if n > 1)
    lost = sorted((m, c) for m in methods for c in clip_ids if (m, c) not in seen)
    if twice or lost:
        raise BenchError(f"sharding error: scored twice {twice[:5]}, lost {lost[:5]} (world size {world})")
