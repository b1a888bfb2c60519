"""Measured choice of precision and memory layout for training (``train.bf16`` / ``train.channels_last: auto``).

Which of fp32 and bf16 autocast, and of the contiguous and channels_last
layouts, trains fastest depends on the machine: bf16 wins on a CPU with AMX
and loses on one that only emulates it. ``choose_runtime`` times a few
optimiser steps of every candidate on the machine that trains (a copy of the
model, a random batch of the training shape, the candidates interleaved so
drift hits them alike), picks the fastest, and caches the choice per machine
(CPU model or GPU name, torch version, threads) and workload (model config,
batch shape), so repeated runs on one machine pick the same. The timing runs
under its own random state: the model, its weights and the training draws are
those of a run without it, so a given choice stays deterministic.

An explicit ``true`` / ``false`` in params is honoured and not timed. On CUDA
the candidates also include TF32 matmuls; fp16 is not a candidate (it needs
loss scaling, which the loop does not do; bf16 covers the same GPUs).

The cache is ``$MEDSEG_CACHE_DIR/runtime.json`` (default
``~/.cache/medseg/runtime.json``); delete it to measure again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medseg.config import AUTO, TrainConfig
from medseg.io import paths
from medseg.io.atomic import atomic_file
from medseg.model.runtime import autocast, bf16_supported, memory_format

from .distributed import World, from_main

log = logging.getLogger(__name__)

WARMUP_STEPS = 2
TIMED_STEPS = 3


@dataclass(frozen=True)
class Candidate:
    """One way to run a training step: ``precision`` (fp32, bf16 autocast, or tf32 matmuls on CUDA) and layout."""

    precision: str
    channels_last: bool

    @property
    def name(self) -> str:
        return f"{self.precision}/{'channels_last' if self.channels_last else 'contiguous'}"


@dataclass
class RuntimeChoice:
    """What training runs with, how it was chosen (``params``, ``measured``, ``cached``) and the timings."""

    precision: str
    channels_last: bool
    chosen_by: str
    machine: str
    step_ms: dict[str, float] = field(default_factory=dict)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def layout(self) -> torch.memory_format:
        return memory_format(self.channels_last)

    def to_dict(self) -> dict:
        return asdict(self)


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``), which decide which candidate wins."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def candidates(cfg: TrainConfig, device: torch.device) -> list[Candidate]:
    """Every combination the params leave open; bf16 only where the device supports it."""
    if cfg.bf16 == AUTO:
        precisions = ["fp32"] + (["tf32"] if device.type == "cuda" else []) + (["bf16"] if bf16_supported(device)
                                                                                 else [])
    elif cfg.bf16 and not bf16_supported(device):
        log.warning("train.bf16 is set but %s does not support bf16; training in fp32", device)
        precisions = ["fp32"]
    else:
        precisions = ["bf16" if cfg.bf16 else "fp32"]
    layouts = [False, True] if cfg.channels_last == AUTO else [bool(cfg.channels_last)]
    return [Candidate(p, c) for p in precisions for c in layouts]


def set_matmul_precision(precision: str, device: torch.device) -> None:
    """TF32 tensor cores on CUDA for ``tf32``; exact fp32 otherwise (CPU matmuls are unaffected)."""
    if device.type == "cuda":
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow


def time_candidates(model: nn.Module, options: list[Candidate], shape: tuple[int, int, int, int], n_classes: int,
                    device: torch.device, steps: int = TIMED_STEPS, warmup: int = WARMUP_STEPS) -> dict[str, float]:
    """Median milliseconds of one forward, backward and optimiser step per candidate, on a copy of ``model``."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        x = torch.randn(shape)
        y = torch.randint(0, n_classes, (shape[0], *shape[2:]))
        runs = {c: _Step(model, c, x, y, device) for c in options}
        times: dict[Candidate, list[float]] = {c: [] for c in options}
        for i in range(warmup + steps):
            for c, step in runs.items():  # interleaved: a slow moment of the machine hits every candidate
                seconds = step()
                if i >= warmup:
                    times[c].append(seconds)
    set_matmul_precision("fp32", device)
    return {c.name: round(1000 * statistics.median(t), 2) for c, t in times.items()}


class _Step:
    """A copy of the model, its optimiser and a batch, laid out and run as one candidate."""

    def __init__(self, model: nn.Module, candidate: Candidate, x: torch.Tensor, y: torch.Tensor,
                 device: torch.device) -> None:
        self.candidate, self.device = candidate, device
        fmt = memory_format(candidate.channels_last)
        self.model = copy.deepcopy(model).to(device, memory_format=fmt).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-6)
        self.x = x.to(device).contiguous(memory_format=fmt)
        self.y = y.to(device)

    def __call__(self) -> float:
        set_matmul_precision(self.candidate.precision, self.device)
        start = time.perf_counter()
        with autocast(self.device, self.candidate.precision == "bf16"):
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def cache_path() -> Path:
    return paths.user_cache() / "runtime.json"


def cache_key(machine: str, options: list[Candidate], cfg: TrainConfig, shape: tuple[int, ...]) -> str:
    """Machine, torch and threads, the candidates, and the workload (model config, batch shape)."""
    workload = {"machine": machine, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "candidates": [c.name for c in options], "model": cfg.model.model_dump(mode="json"),
                "shape": list(shape)}
    return hashlib.sha256(json.dumps(workload, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); measuring again", path, exc)
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    """Add ``entry``; the cache is a convenience, so a write that fails is logged, not raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _read_cache(path)
        cache[key] = entry
        with atomic_file(path) as fh:
            fh.write(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("could not cache the runtime choice in %s: %s", path, exc)


def choose_runtime(model: nn.Module, cfg: TrainConfig, shape: tuple[int, int, int, int], n_classes: int,
                   device: torch.device, world: World = World()) -> RuntimeChoice:
    """The precision and layout to train with: from params, from this machine's cache, or measured now.

    ``shape`` is one process's batch (N, C, H, W). With several processes, process 0 decides for all.
    """
    options = candidates(cfg, device)
    machine = machine_name(device)
    if len(options) == 1:
        choice = RuntimeChoice(options[0].precision, options[0].channels_last, "params", machine)
    else:
        index = _decide(model, options, cfg, shape, n_classes, device, machine) if world.is_main else (0, {}, "")
        picked = int(from_main(float(index[0]), world, device))
        choice = RuntimeChoice(options[picked].precision, options[picked].channels_last, index[2] or "measured",
                               machine, index[1])
    set_matmul_precision(choice.precision, device)
    if world.is_main:
        log.info("training in %s with %s layout (%s%s)", choice.precision,
                 "channels_last" if choice.channels_last else "contiguous", choice.chosen_by,
                 f"; ms per step: {choice.step_ms}" if choice.step_ms else "")
    return choice


def _decide(model: nn.Module, options: list[Candidate], cfg: TrainConfig, shape: tuple[int, int, int, int],
            n_classes: int, device: torch.device, machine: str) -> tuple[int, dict[str, float], str]:
    path = cache_path()
    key = cache_key(machine, options, cfg, shape)
    names = [c.name for c in options]
    entry = _read_cache(path).get(key)
    if isinstance(entry, dict) and entry.get("choice") in names:
        return names.index(entry["choice"]), dict(entry.get("step_ms", {})), "cached"
    log.info("timing %d steps of %s on %s", TIMED_STEPS, ", ".join(names), machine)
    step_ms = time_candidates(model, options, shape, n_classes, device)
    best = min(names, key=step_ms.__getitem__)
    _write_cache(path, key, {"choice": best, "step_ms": step_ms, "machine": machine,
                             "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return names.index(best), step_ms, "measured"


def resolved(cfg: TrainConfig, model: nn.Module, shape: tuple[int, int, int, int], n_classes: int,
             device: torch.device) -> TrainConfig:
    """``cfg`` with ``bf16`` and ``channels_last`` as training would choose them (for benchmarks that time steps).

    ``bf16`` is true only where the device supports it."""
    choice = choose_runtime(model, cfg, shape, n_classes, device)
    return cfg.model_copy(update={"bf16": choice.bf16, "channels_last": choice.channels_last})
