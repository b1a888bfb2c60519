"""Training loop: determinism, NaN guard, checkpoints that rebuild their model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import TrainConfig
from medseg.io.errors import DataError
from medseg.model.checkpoint import load_checkpoint, save_checkpoint
from medseg.model.factory import build_model
from medseg.model.inference import predict_logits
from medseg.model.runtime import seed_everything
from medseg.train.datasets import ArraySet
from medseg.train.loop import NonFiniteLoss, fit, loss_for, pooled_dice

CLASSES = ["background", "disc", "bar"]
CPU = torch.device("cpu")


def toy_set(n: int, seed: int, size: int = 32) -> ArraySet:
    """Bright discs (class 1) and dark bars (class 2) on noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for _ in range(n):
        label = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(3, 7))]
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        x0 = int(rng.integers(0, size - 6))
        label[2:size - 2, x0:x0 + 3][label[2:size - 2, x0:x0 + 3] == 0] = 2
        image = rng.normal(120, 20, (size, size))
        image[label == 1] += 100
        image[label == 2] -= 90
        images.append(np.clip(image, 0, 255).astype(np.uint8)[..., None])
        labels.append(label)
    return ArraySet(np.stack(images), np.stack(labels), [f"s{i}" for i in range(n)])


def small_cfg(**kw) -> TrainConfig:
    """A tiny full-resolution U-Net in fp32, a few epochs."""
    base = dict(model={"base_filters": 4, "depth": 2, "stem_stride": 1}, epochs=3, steps_per_epoch=None, batch_size=4,
                patch_size=None, class_weights={}, online={"p": 0.0}, lr=0.01, early_stopping=10, seed=7, bf16=False,
                channels_last=False, schedule="plateau", grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def train_once(cfg: TrainConfig, train: ArraySet, valid: ArraySet):
    seed_everything(cfg.seed, cfg.threads)
    model = build_model(cfg.model, 1, len(CLASSES))
    return model, fit(model, train, valid, cfg, CLASSES, CPU)


def test_two_runs_give_identical_weights():
    train, valid = toy_set(12, 0), toy_set(4, 1)
    _, a = train_once(small_cfg(), train, valid)
    _, b = train_once(small_cfg(), train, valid)
    assert a.best_epoch == b.best_epoch
    for key in a.best_state:
        assert torch.equal(a.best_state[key], b.best_state[key]), key
    _, c = train_once(small_cfg(seed=8), train, valid)
    assert any(not torch.equal(a.best_state[k], c.best_state[k]) for k in a.best_state)


def test_learns_the_toy_task_and_keeps_the_best_epoch():
    train, valid = toy_set(48, 2), toy_set(8, 3)
    _, result = train_once(small_cfg(epochs=12, model={"base_filters": 8, "depth": 2, "stem_stride": 1}), train,
                           valid)
    history = [s.val_dice for s in result.history]
    assert result.best_dice == max(history)
    assert result.best_epoch == 1 + history.index(max(history))
    assert result.best_dice > 0.6


def test_nan_loss_stops_with_epoch_and_batch():
    train, valid = toy_set(8, 0), toy_set(4, 1)
    cfg = small_cfg()
    seed_everything(cfg.seed, cfg.threads)
    model = build_model(cfg.model, 1, len(CLASSES))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at epoch 1, batch 1"):
        fit(model, train, valid, cfg, CLASSES, CPU)


def test_checkpoint_round_trip_reproduces_predictions(tmp_path):
    train, valid = toy_set(8, 0), toy_set(4, 1)
    cfg = small_cfg(epochs=1)
    model, result = train_once(cfg, train, valid)
    model.load_state_dict(result.best_state)
    path = tmp_path / "model.pt"
    save_checkpoint(path, result.best_state, cfg.model, CLASSES, 1, (32, 32), {"best_epoch": result.best_epoch})
    ckpt = load_checkpoint(path)  # uses weights_only=True
    assert ckpt.classes == CLASSES and ckpt.size == (32, 32) and ckpt.info["best_epoch"] == 1
    before = predict_logits(model, valid.images, 4, CPU)
    after = predict_logits(ckpt.model, valid.images, 4, CPU)
    assert torch.equal(before, after)


def test_broken_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a loadable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(DataError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_without_a_complete_model_config_is_refused(tmp_path):
    cfg = small_cfg().model
    model = build_model(cfg, 1, len(CLASSES))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model.state_dict(), cfg, CLASSES, 1, (32, 32), {})
    payload = torch.load(path, weights_only=True)
    del payload["model"]["stem_stride"]  # as written before the knob existed
    torch.save(payload, path)
    with pytest.raises(DataError, match=r"lacks \['stem_stride'\]"):
        load_checkpoint(path)  # never rebuilt with today's default stem instead


def test_pooled_dice_by_hand():
    pred = torch.tensor([[0, 1, 1, 2], [0, 1, 0, 0]])
    target = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0]])
    # class 1: |P|=3, |T|=3, overlap 2 -> 4/6; class 2 absent from target -> not scored
    assert pooled_dice(pred, target, 3) == {1: pytest.approx(4 / 6)}


def test_class_weights_from_params_reach_the_loss():
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 0] = 30.0  # everything predicted background
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, :2] = 2  # two 'bar' pixels missed
    plain = loss_for(small_cfg(dice_weight=0.0), CLASSES)(logits, target)
    heavy = loss_for(small_cfg(dice_weight=0.0, class_weights={"bar": 4.0}), CLASSES)(logits, target)
    assert heavy.item() > 2 * plain.item()


def test_moving_average_is_what_is_validated_and_kept(monkeypatch):
    """With ``ema``, the kept state is the average of every step's weights (checked by averaging them here)."""
    train, valid = toy_set(12, 0), toy_set(4, 1)
    decay = 0.5
    cfg = small_cfg(epochs=1, steps_per_epoch=3, ema=decay, early_stopping=0)
    steps = []
    step = torch.optim.AdamW.step

    def recording(self, *args, **kw):
        out = step(self, *args, **kw)
        steps.append([p.detach().clone() for p in self.param_groups[0]["params"]])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    model, result = train_once(cfg, train, valid)
    expected = [s.clone() for s in steps[0]]
    for weights in steps[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    names = [name for name, _ in model.named_parameters()]
    for name, value in zip(names, expected, strict=True):
        assert torch.allclose(result.best_state[name], value, atol=1e-6), name
    assert not torch.allclose(result.best_state[names[0]], steps[-1][0])  # not the last step's weights
    _, again = train_once(cfg, train, valid)
    assert all(torch.equal(result.best_state[k], again.best_state[k]) for k in result.best_state)
