"""Checkpoints that rebuild their model alone, loaded with ``weights_only=True``.

A checkpoint is a plain dict: ``state_dict``, ``model`` (``ModelConfig`` as a
dict), ``classes``, ``channels``, ``size`` (training height, width) and a few
facts about training. Only tensors, numbers, strings, lists and dicts go in,
so ``torch.load(..., weights_only=True)`` can read it without unpickling code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_file
from .errors import DataError
from .model import ModelConfig, build_model


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    config: ModelConfig
    classes: list[str]
    channels: int
    size: tuple[int, int]
    info: dict


def save_checkpoint(path: Path, state_dict: dict, config: ModelConfig, classes: list[str], channels: int,
                    size: tuple[int, int], info: dict) -> None:
    payload = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "model": config.to_dict(),
        "classes": list(classes),
        "channels": int(channels),
        "size": [int(size[0]), int(size[1])],
        "info": info,
    }
    with atomic_file(path, "wb") as fh:
        torch.save(payload, fh)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(path, "checkpoint not found; run the train stage first") from None
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise DataError(path, f"not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    missing = {"state_dict", "model", "classes", "channels", "size"} - set(payload)
    if missing:
        raise DataError(path, f"checkpoint lacks {sorted(missing)}")
    config = ModelConfig.from_dict(payload["model"])
    model = build_model(config, payload["channels"], len(payload["classes"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return Checkpoint(model, config, payload["classes"], payload["channels"], tuple(payload["size"]),
                      payload.get("info", {}))
