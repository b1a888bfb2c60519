"""Which runtime runs a checkpoint's network in evaluate and predict: PyTorch, or ONNX Runtime on its export.

``ENGINES`` are the choices (``evaluate.engine`` in params, ``predict
--engine``). With ``onnxruntime`` the checkpoint's network is exported once
(``medseg.export.graph.export_onnx``; seconds) into the machine's cache,
``$MEDSEG_CACHE_DIR/onnx/<key>.onnx`` with the key the checkpoint file's
SHA-256, torch's version and the opset, and replaced by ``OnnxNetwork``: the
session behind the ``nn.Module`` interface, so fitting images onto the
canvas, the sliding window, mirror averaging and post-processing
(``medseg.model.inference``) stay exactly those of PyTorch. Logits agree
within 1e-4 (``tests/export``); ONNX Runtime runs on the CPU only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from medseg.config.evaluate import Engine
from medseg.io import paths
from medseg.model.checkpoint import Checkpoint, load_checkpoint
from medseg.model.ensemble import Ensemble, member_paths

from .graph import OPSET, export_onnx, onnx_logits, onnx_session

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = get_args(Engine)
TORCH, ONNXRUNTIME = ENGINES


class OnnxNetwork(nn.Module):
    """An exported network run by ONNX Runtime: (N, C, H, W) float32 -> logits (N, classes, H, W) on the CPU."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = onnx_session(self.path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(onnx_logits(self.session, x.detach().float().cpu().numpy()))


def export_key(checkpoint_file: Path) -> str:
    """The cache key of a checkpoint's export: its bytes, torch's version (the exporter) and the opset."""
    digest = hashlib.sha256()
    with Path(checkpoint_file).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"torch {torch.__version__} opset {OPSET}".encode())
    return digest.hexdigest()[:32]


def cached_export(ckpt: Checkpoint, checkpoint_file: Path) -> Path:
    """The ONNX export of ``ckpt`` (loaded from ``checkpoint_file``), made once per checkpoint and machine."""
    path = paths.user_cache() / "onnx" / f"{export_key(checkpoint_file)}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to ONNX (once; cached as %s)", checkpoint_file, path)
        export_onnx(ckpt, path)  # atomic: a stopped export leaves no file behind
    return path


def on_engine(ckpt: Checkpoint, checkpoint_file: Path, engine: str, device: torch.device) -> Checkpoint:
    """``ckpt`` with its network run by ``engine``; the checkpoint itself when that is PyTorch."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == TORCH:
        return ckpt
    if torch.device(device).type != "cpu":
        raise ValueError(f"engine {ONNXRUNTIME} runs on the CPU, not on {device}: use engine {TORCH} there")
    network = OnnxNetwork(cached_export(ckpt, checkpoint_file), threads=torch.get_num_threads())
    return dataclasses.replace(ckpt, model=network)


def load_ensemble_on(path: Path, device: torch.device, engine: str) -> Ensemble:
    """``medseg.model.ensemble.load_ensemble`` with every member's network run by ``engine``."""
    members = [on_engine(load_checkpoint(p, device), p, engine, device) for p in member_paths(path)]
    return Ensemble.of(members, path)
