"""Dice + CE loss: foreground-only Dice checked against hand-computed values."""
from __future__ import annotations

import pytest
import torch

from medseg.model.losses import build_loss

CONFIDENT = 30.0  # logit scale at which softmax is one-hot to float precision
# Equal weights, pooled batch Dice: the shipped params.yaml's train section.
DEFAULTS = {"dice_weight": 1.0, "ce_weight": 1.0, "class_weights": None, "batch_dice": True, "groups": [],
            "group_weight": 0.0}


def loss_of(num_classes: int, **options: object) -> torch.nn.Module:
    return build_loss(num_classes, **{**DEFAULTS, **options})


def _confident_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) labels -> (N, C, H, W) logits whose softmax is (almost exactly) one-hot."""
    return CONFIDENT * torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def _square_target() -> torch.Tensor:
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3, 1:3] = 1  # 4 foreground pixels
    return target


def test_dice_term_ignores_background() -> None:
    target = _square_target()
    pred = torch.zeros_like(target)
    pred[0, 1, 1:3] = 1  # 2 of the 4 foreground pixels found, no false positives
    loss = loss_of(2, dice_weight=1.0, ce_weight=0.0)(_confident_logits(pred, 2), target)
    # Foreground Dice = 2*2 / (2 + 4) = 2/3, so the loss is 1/3. Had background
    # (Dice 2*12 / (12 + 14) = 12/13) been included it would be 1 - (2/3 + 12/13)/2 ~ 0.205.
    assert loss.item() == pytest.approx(1 / 3, abs=1e-4)


def test_perfect_prediction_scores_near_zero_and_below_a_random_one() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    loss = loss_of(3)
    perfect = loss(_confident_logits(target, 3), target)
    random = loss(torch.randn(2, 3, 16, 16), target)
    assert torch.isfinite(random)
    assert perfect.item() < 1e-4 < random.item()


def test_gradient_descent_lowers_the_loss() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    logits = torch.zeros(2, 3, 16, 16, requires_grad=True)
    loss = loss_of(3)
    optimiser = torch.optim.Adam([logits], lr=0.5)
    start = loss(logits, target).item()
    for _ in range(20):
        optimiser.zero_grad()
        value = loss(logits, target)
        value.backward()
        optimiser.step()
    assert loss(logits, target).item() < start / 2


def test_class_weights_reach_cross_entropy() -> None:
    target = _square_target()
    wrong_on_foreground = _confident_logits(torch.zeros_like(target), 2)
    unweighted = loss_of(2, dice_weight=0.0)(wrong_on_foreground, target)
    background_only = loss_of(2, dice_weight=0.0, class_weights=[1.0, 0.0])(wrong_on_foreground, target)
    assert unweighted.item() > 1.0  # 4 of 16 pixels cost ~30 nats each
    assert background_only.item() < 1e-4  # the only errors are on a class weighted 0


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 3, "class_weights": [1.0, 2.0]}, "class_weights"),
        ({"num_classes": 3, "class_weights": [1.0, -1.0, 1.0]}, "class_weights"),
        ({"num_classes": 3, "dice_weight": 0.0, "ce_weight": 0.0}, "ce_weight"),
    ],
)
def test_bad_arguments_name_the_option(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        loss_of(**kwargs)


def test_target_with_channel_dim_is_refused() -> None:
    with pytest.raises(ValueError, match=r"target \(N, H, W\)"):
        loss_of(2)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))
