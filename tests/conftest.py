"""Shared test helpers: paths to the real sample datasets, tiny image writers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path to a sample in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real-data samples live beside the repo, not in it")
    return path


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    """Write an image with Pillow (so tests control the exact file format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)
    return path


def ramp(h: int = 24, w: int = 32, channels: int = 3) -> np.ndarray:
    """A deterministic test picture."""
    y, x = np.mgrid[0:h, 0:w]
    grey = ((x * 7 + y * 3) % 256).astype(np.uint8)
    return grey if channels == 1 else np.stack([grey, 255 - grey, grey // 2], axis=2)
