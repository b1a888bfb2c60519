"""A model folder predicts as one: its rounds' probabilities averaged, the label decision most of them chose."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.config import ModelConfig
from medseg.io.errors import DataError
from medseg.model.checkpoint import load_checkpoint, save_checkpoint
from medseg.model.ensemble import Ensemble, combined, ensemble_labels, load_ensemble
from medseg.model.factory import build_model
from medseg.model.inference import checkpoint_labels, native_logits
from medseg.model.postprocess import PLAIN, Postprocess

CONFIG = ModelConfig(base_filters=4, depth=2, stem_stride=2)
CLASSES = ["background", "benign", "malignant"]
CPU = torch.device("cpu")


def checkpoint(path: Path, seed: int, fold: int, post: Postprocess = PLAIN, classes: list[str] = CLASSES) -> Path:
    torch.manual_seed(seed)
    model = build_model(CONFIG, 1, len(classes))
    save_checkpoint(path, model.state_dict(), CONFIG, classes, 1, (32, 32), {"fold": fold}, postprocess=post)
    return path


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (37, 45), dtype=np.uint8)


def test_the_decision_is_what_more_than_half_of_the_rounds_chose() -> None:
    grouped, largest = Postprocess(groups=((1, 2),)), Postprocess(largest_component=True, flip_tta=True)
    assert combined([grouped, grouped, largest]) == Postprocess(groups=((1, 2),))
    assert combined([grouped, largest, largest]) == Postprocess(largest_component=True)
    assert combined([grouped, largest]) == PLAIN  # half is not more than half
    assert combined([Postprocess(groups=((1, 2),), largest_component=True)] * 3) == Postprocess(
        groups=((1, 2),), largest_component=True)


def test_one_checkpoint_predicts_as_itself(tmp_path: Path) -> None:
    path = checkpoint(tmp_path / "model.pt", 1, -1, Postprocess(flip_tta=True, largest_component=True))
    alone = load_checkpoint(path)
    assert np.array_equal(ensemble_labels(load_ensemble(path), image(), CPU), checkpoint_labels(alone, image(), CPU))


def test_the_rounds_average_their_probabilities(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    paths = [checkpoint(folder / f"model_fold{r}.pt", seed=10 + r, fold=r,
                        post=Postprocess(flip_tta=r == 1)) for r in (2, 0, 1)]
    (folder / "mlflow_run.json").write_text("{}")  # not a checkpoint: left out
    ensemble = load_ensemble(folder)
    assert [m.info["fold"] for m in ensemble.members] == [0, 1, 2]  # round order, not file order

    probs = [native_logits(m.model, image(), m.size, CPU, m.window, m.postprocess.flip_tta).softmax(0)
             for m in map(load_checkpoint, sorted(paths))]
    expected = ((probs[0] + probs[1] + probs[2]) / 3).argmax(0).numpy().astype(np.uint8)
    got = ensemble_labels(ensemble, image(), CPU)
    assert got.shape == (37, 45) and np.array_equal(got, expected)
    assert any(not np.array_equal(got, checkpoint_labels(m, image(), CPU)) for m in ensemble.members)


def test_a_folder_without_checkpoints_or_with_mismatched_ones_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no checkpoint"):
        load_ensemble(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_ensemble(tmp_path / "absent")
    checkpoint(tmp_path / "model_fold0.pt", 1, 0)
    checkpoint(tmp_path / "model_fold1.pt", 2, 1, classes=["background", "lesion"])
    with pytest.raises(DataError, match="disagree on classes"):
        load_ensemble(tmp_path)
    with pytest.raises(DataError, match="holds no checkpoint"):
        Ensemble.of([], tmp_path)
