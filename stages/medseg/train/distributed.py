"""Multi-process data-parallel training with ``torch.distributed`` (DDP).

Two ways to start N training processes for one dataset:

* ``torchrun --nproc_per_node N stages/train.py <dataset>`` (the command
  line; add ``--nnodes``/``--node_rank``/``--rdzv_endpoint`` for several
  machines), or
* ``train.processes: N`` in ``params.yaml``: ``dvc repro`` runs
  ``python stages/train.py <dataset>`` as usual and the stage re-executes
  itself under torchrun (``relaunch``).

Every process loads the same data and draws the same seeded permutation;
each global batch of ``train.batch_size`` images is cut into one shard per
process (``shard``), so N processes see exactly the batches one process
would. Each shard's loss is weighted by its share of the global batch and
DDP averages the gradients, so the update equals the single-process one up
to floating-point summation order for the cross-entropy term. Exceptions:
the loss's batch Dice term is pooled over each process's shard rather than
the global batch, BatchNorm statistics are per process on CPU
(``SyncBatchNorm`` needs CUDA; on GPU ``wrap`` converts to it), and dropout
masks differ. Process 0 (``World.is_main``) alone writes files and logs to
MLflow.

Backend: ``auto`` picks NCCL for CUDA and gloo for CPU. On CPU the
``train.threads`` of a node are divided among its processes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

# Variables torchrun sets in every worker process.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """True inside a process started by torchrun."""
    return all(name in os.environ for name in _TORCHRUN_ENV)


def relaunch(processes: int, script: Path, argv: list[str]) -> None:
    """Replace this process with ``torchrun --standalone --nproc_per_node processes script *argv``.

    ``os.execv`` keeps the process id, so DVC (or a shell) that waits on it, or
    sends it SIGTERM, deals with torchrun, which passes signals on to its workers.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(script), *argv]
    log.info("starting %d training processes: %s", processes, " ".join(command))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def threads_per_process(threads: int, world: World) -> int:
    """A node's ``threads`` split among its processes, at least one each."""
    return max(1, threads // world.local_size)


def backend_for(choice: str, device: torch.device) -> str:
    """``gloo`` or ``nccl`` for ``choice`` in ``BACKENDS``; NCCL needs CUDA."""
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}; choose one of {list(BACKENDS)}")
    if choice == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if choice == "nccl" and device.type != "cuda":
        raise ValueError("train.dist_backend is 'nccl', which needs CUDA; use 'gloo' (or 'auto') on CPU")
    return choice


@contextlib.contextmanager
def session(backend: str, device: torch.device, timeout_s: float = 1800) -> Iterator[tuple[World, torch.device]]:
    """Join the process group when torchrun started us; yield this process's ``World`` and device.

    Without torchrun this yields ``World()`` and ``device`` unchanged. On CUDA each
    process takes the GPU of its local rank.
    """
    if not launched():
        yield World(), device
        return
    world = World(*(int(os.environ[name]) for name in _TORCHRUN_ENV))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    name = backend_for(backend, device)
    dist.init_process_group(name, timeout=timedelta(seconds=timeout_s))
    log.info("process %d of %d (%s, %s)", world.rank, world.size, name, device)
    try:
        yield world, device
    finally:
        dist.destroy_process_group()


def shard(idx: np.ndarray, world: World) -> np.ndarray | None:
    """This process's part of one global batch ``idx``; ``None`` when the batch has fewer items than processes.

    All processes get the same decision, so none waits for a gradient the others skip.
    """
    if len(idx) < world.size:
        return None
    return np.array_split(idx, world.size)[world.rank]


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several processes, else ``model``."""
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.info("BatchNorm statistics are computed per process on CPU (SyncBatchNorm needs CUDA)")
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_true(flag: bool, world: World, device: torch.device) -> bool:
    """``flag`` and-ed over all processes (each process passes its own)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def total(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value: float, world: World, device: torch.device) -> float:
    """Process 0's ``value``, on every process (keeps schedule and early stopping in step)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def average(tensors: list[torch.Tensor], world: World) -> list[torch.Tensor]:
    """Each tensor's element-wise mean over all processes (new tensors; the inputs are left as they are)."""
    if not world.distributed or not tensors:
        return tensors
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    flat /= world.size
    sizes = [t.numel() for t in tensors]
    return [part.reshape(t.shape).to(t.dtype) for part, t in zip(flat.split(sizes), tensors, strict=True)]
