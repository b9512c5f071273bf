"""Multi-process training under `torchrun`: process group set-up and the few collectives the
trainer needs. One code path for every world size: with one process every helper is a no-op.

    torchrun --nproc_per_node=2 -m ldlm train --config configs/micro.yaml --out runs/ddp

gloo on CPU, nccl on CUDA. Each process trains `train.batch_size` sequences per micro-batch; the
global batch of an optimizer step is batch_size x processes x grad_accum.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device_kind: str) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Dist(rank, world, local)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_(t: torch.Tensor, d: Dist, op: str = "sum") -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t


def mean_logs(logs: dict, d: Dist, device) -> dict:
    """Average a dict of floats over the processes (every rank must pass the same keys)."""
    if not d.enabled or not logs:
        return logs
    keys = sorted(logs)
    t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
    all_reduce_(t, d)
    return {k: float(v) / d.world_size for k, v in zip(keys, t.tolist())}


def average_state_(state: dict[str, torch.Tensor], d: Dist) -> dict[str, torch.Tensor]:
    """Average floating-point tensors over the processes in place (integer tensors are left alone:
    they are counters every rank advances identically)."""
    if d.enabled:
        dev = torch.device("cuda", d.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        for v in state.values():
            if v.is_floating_point():
                t = v.to(dev)
                all_reduce_(t, d)
                v.copy_(t / d.world_size)
    return state


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
