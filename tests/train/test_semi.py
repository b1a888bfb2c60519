"""Semi-supervised training: FixMatch's masked pseudo-label loss, the mean teacher's EMA, the ramp-up, and tiny
``fit`` runs with each method that are deterministic and really use the unlabelled images."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_loop import CLASSES, CPU, small_cfg, toy_set
from torch import nn

from medseg.config import TrainConfig
from medseg.io.errors import StageError
from medseg.model.factory import build_model
from medseg.model.runtime import seed_everything
from medseg.train.datasets import ArraySet
from medseg.train.distributed import World
from medseg.train.loop import build_optimizer, fit
from medseg.train.semi import (
    MeanTeacher,
    bottleneck,
    build_consistency,
    consistency_loss,
    dropped_features,
    ema_update,
    pseudo_label_loss,
    ramp,
)


def logits(seed: int, shape=(2, 3, 8, 8), scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def unlabelled_set(n: int, seed: int) -> ArraySet:
    images = toy_set(n, seed)
    return ArraySet(images.images, torch.zeros_like(torch.from_numpy(images.labels)).numpy(), images.ids)


# --------------------------------------------------------------------------- FixMatch's loss
def test_threshold_zero_is_cross_entropy_to_the_argmax_and_one_keeps_no_pixel():
    strong, weak = logits(0), logits(1)
    loss, share = pseudo_label_loss(strong, weak, 0.0)
    assert torch.allclose(loss, F.cross_entropy(strong, weak.argmax(1)))
    assert float(share) == 1.0
    loss, share = pseudo_label_loss(strong, weak * 100, 1.0)  # saturated softmax: confidence 1.0 is not above 1
    assert float(loss) == 0.0 and float(share) == 0.0


def test_only_confident_pixels_count_and_the_mean_is_over_all_pixels():
    strong, weak = logits(2), logits(3)
    confidence = torch.softmax(weak, 1).max(1).values
    threshold = float(confidence.median())
    loss, share = pseudo_label_loss(strong, weak, threshold)
    keep = (confidence > threshold).float()
    ce = F.cross_entropy(strong, weak.argmax(1), reduction="none")
    assert torch.allclose(loss, (ce * keep).sum() / ce.numel())
    assert float(share) == pytest.approx(float(keep.mean()))


def test_the_gradient_flows_through_the_strong_branch_only():
    strong, weak = logits(4).requires_grad_(), logits(5).requires_grad_()
    pseudo_label_loss(strong, weak, 0.3)[0].backward()
    assert weak.grad is None
    assert strong.grad is not None and strong.grad.abs().sum() > 0


# --------------------------------------------------------------------------- mean teacher
def test_ema_update_moves_the_teacher_by_one_minus_decay_and_copies_counts():
    teacher, student = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(2.0)
        student.num_batches_tracked.fill_(7)
    ema_update(teacher, student.state_dict(), 0.9)
    assert torch.allclose(teacher.weight, torch.full((3,), 0.9 * 1.0 + 0.1 * 3.0))
    assert torch.allclose(teacher.running_mean, torch.full((3,), 0.1 * 2.0))
    assert int(teacher.num_batches_tracked) == 7


def test_the_teacher_is_not_optimised_and_follows_the_student_after_each_step():
    cfg = small_cfg(semi_supervised={"method": "mean_teacher", "ema_decay": 0.9})
    model = build_model(cfg.model, 1, len(CLASSES))
    semi = build_consistency(cfg, unlabelled_set(4, 0), model, CPU, torch.contiguous_format, World())
    assert isinstance(semi, MeanTeacher)
    optimised = {id(p) for group in build_optimizer(model, cfg).param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in semi.teacher.parameters()}
    assert not any(p.requires_grad for p in semi.teacher.parameters())
    before = {k: v.clone() for k, v in semi.teacher.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    semi.after_step()  # first step: decay min(0.9, 1 - 1/2) = 0.5, as the paper warms it up
    name = next(n for n, _ in model.named_parameters())
    assert torch.allclose(semi.teacher.state_dict()[name], before[name] + 0.5)
    semi.after_step()  # then min(0.9, 1 - 1/3)
    assert torch.allclose(semi.teacher.state_dict()[name], before[name] + 0.5 + (1 - 2 / 3) * 0.5, atol=1e-6)


def test_consistency_losses_are_zero_at_agreement_and_mse_is_the_probability_distance():
    a, b = logits(6), logits(7)
    assert float(consistency_loss(a, a, "mse")) == 0.0
    expected = ((torch.softmax(a, 1) - torch.softmax(b, 1)) ** 2).sum(1).mean()
    assert torch.allclose(consistency_loss(a, b, "mse"), expected)
    entropy = -(torch.softmax(a, 1) * torch.log_softmax(a, 1)).sum(1).mean()
    assert torch.allclose(consistency_loss(a, a, "ce"), entropy)
    assert consistency_loss(a, b, "ce") > consistency_loss(b, b, "ce")


def test_the_ramp_rises_from_zero_to_one_over_its_share_of_training():
    assert ramp(0.0, 0.2) == 0.0
    values = [ramp(p, 0.2) for p in (0.0, 0.05, 0.1, 0.15, 0.2, 0.6)]
    assert values == sorted(values) and values[-2:] == [1.0, 1.0]
    assert ramp(0.1, 0.2) == pytest.approx((math.exp(-5 * 0.25) - math.exp(-5)) / (1 - math.exp(-5)))
    assert ramp(0.0, 0.0) == 1.0  # no ramp


# --------------------------------------------------------------------------- feature perturbation
def test_feature_dropout_drops_channels_of_the_last_samples_at_the_bottleneck_only():
    cfg = small_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, len(CLASSES)).eval()
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    block, seen = bottleneck(model), []
    with torch.no_grad():
        observer = block.register_forward_hook(lambda _m, _i, out: seen.append(out))
        clean = model(x)
        observer.remove()
        with dropped_features(block, 0.5, 2, torch.Generator().manual_seed(1)):
            observer = block.register_forward_hook(lambda _m, _i, out: seen.append(out))  # runs after the dropout
            perturbed = model(x)
            observer.remove()
        after = model(x)
    assert torch.equal(clean[:2], perturbed[:2]) and not torch.equal(clean[2:], perturbed[2:])
    assert torch.equal(clean, after)  # the hook is gone
    before, dropped = seen[0][2:], seen[1][2:]
    zeroed = dropped.abs().amax(dim=(2, 3)) == 0
    scaled = torch.isclose(dropped, 2 * before).all(dim=3).all(dim=2)  # kept channels scaled by 1 / (1 - 0.5)
    assert (zeroed | scaled).all()  # each channel whole: dropped or kept
    live = before.abs().amax(dim=(2, 3)) > 0
    assert (zeroed & live).any() and (~zeroed & live).any()


def test_feature_dropout_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="semi_supervised.feature_dropout: perturbs the weak view of fixmatch"):
        TrainConfig(semi_supervised={"method": "mean_teacher", "feature_dropout": 0.5})
    with pytest.raises(ValueError, match="needs the bottleneck of our U-Net"):
        TrainConfig(model={"name": "monai_unet"}, semi_supervised={"method": "fixmatch", "feature_dropout": 0.5})


# --------------------------------------------------------------------------- fit, end to end
METHODS = {"fixmatch": {"method": "fixmatch", "threshold": 0.6, "feature_dropout": 0.5},
           "mean_teacher": {"method": "mean_teacher", "consistency": "mse"}}


def semi_fit(semi: dict, unlabelled: ArraySet | None, **kw):
    cfg = small_cfg(epochs=2, steps_per_epoch=3, semi_supervised={"rampup": 0.0, "weight": 2.0, **semi}, **kw)
    seed_everything(cfg.seed, cfg.threads)
    model = build_model(cfg.model, 1, len(CLASSES))
    return fit(model, toy_set(8, 0), toy_set(4, 1), cfg, CLASSES, CPU, unlabelled=unlabelled)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_deterministically_on_the_unlabelled_images(method):
    unlabelled = unlabelled_set(10, 2)
    a = semi_fit(METHODS[method], unlabelled, bf16=True)
    b = semi_fit(METHODS[method], unlabelled, bf16=True)
    for key in a.best_state:
        assert torch.equal(a.best_state[key], b.best_state[key]), key
    metrics = a.history[-1].as_metrics()
    assert metrics["unsup_loss"] > 0 and metrics["unlabelled_per_s"] > 0
    assert ("unsup_confident" in metrics) == (method == "fixmatch")
    # the unlabelled images change the weights: the same run without them (method off) ends elsewhere
    alone = semi_fit({"method": "off"}, unlabelled, bf16=True)
    assert "unsup_loss" not in alone.history[-1].as_metrics()
    assert any(not torch.equal(v, alone.best_state[k]) for k, v in a.best_state.items())


def test_a_method_without_unlabelled_images_stops_with_a_clear_error():
    with pytest.raises(StageError, match="no unlabelled train images; set split.labelled_fraction below 1"):
        semi_fit(METHODS["fixmatch"], None)
