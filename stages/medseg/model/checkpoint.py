"""Checkpoints that rebuild their model alone, loaded with ``weights_only=True``.

A checkpoint is a plain dict: ``state_dict``, ``model`` (the
``ModelConfig`` as a dict), ``classes``, ``channels``, ``size`` (the
training canvas: the preprocessing, ``medseg.data.preprocess``),
``inference`` (the sliding window, ``None`` for whole canvases, and the
``Postprocess`` chosen on validation) and ``info`` (facts about training). Only tensors, numbers, strings, lists
and dicts go in, so ``torch.load(..., weights_only=True)`` reads it without
unpickling code. The model config must be complete: a checkpoint never
borrows today's defaults for a knob it did not record.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from medseg.config import ModelConfig
from medseg.io.atomic import atomic_file
from medseg.io.errors import DataError

from .factory import build_model
from .postprocess import PLAIN, Postprocess

_KEYS = ("state_dict", "model", "classes", "channels", "size")


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module  # on the device asked for, in eval mode
    config: ModelConfig
    classes: list[str]
    channels: int
    size: tuple[int, int]
    info: dict
    window: tuple[int, int] | None = None
    postprocess: Postprocess = PLAIN


def save_checkpoint(path: Path, state_dict: dict, config: ModelConfig, classes: list[str], channels: int,
                    size: tuple[int, int], info: dict, window: tuple[int, int] | None = None,
                    postprocess: Postprocess = PLAIN) -> None:
    """Write the checkpoint; ``window``: the patch size when it is smaller than the canvas."""
    payload = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "model": config.model_dump(),
        "classes": list(classes),
        "channels": int(channels),
        "size": [int(size[0]), int(size[1])],
        "inference": {"window": None if window is None else [int(window[0]), int(window[1])],
                      "postprocess": postprocess.to_dict()},
        "info": info,
    }
    with atomic_file(path, "wb") as fh:
        torch.save(payload, fh)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model of the checkpoint at ``path``; ``DataError`` names the file and the problem."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(path, "checkpoint not found; run the train stage first") from None
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise DataError(path, f"not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict):
        raise DataError(path, f"not a checkpoint dict (got {type(payload).__name__})")
    missing = sorted(set(_KEYS) - set(payload))
    if missing:
        raise DataError(path, f"checkpoint lacks {missing}")
    config = _model_config(path, payload["model"])
    model = build_model(config, payload["channels"], len(payload["classes"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise DataError(path, f"weights do not fit the network the checkpoint describes: {exc}") from None
    model.to(device).eval()
    inference = payload.get("inference", {})
    window = inference.get("window")
    return Checkpoint(model, config, payload["classes"], payload["channels"], tuple(payload["size"]),
                      payload.get("info", {}), None if window is None else tuple(window),
                      Postprocess.from_dict(inference.get("postprocess")))


def _model_config(path: Path, stored: object) -> ModelConfig:
    if not isinstance(stored, dict):
        raise DataError(path, "checkpoint's model config is not a dict")
    missing = sorted(set(ModelConfig.model_fields) - set(stored))
    if missing:
        raise DataError(path, f"checkpoint's model config lacks {missing} (written by an older version; retrain)")
    try:
        return ModelConfig.model_validate(stored)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DataError(path, f"checkpoint's model config is invalid: {problems}") from None
