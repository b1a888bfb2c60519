"""Training loss: MONAI's Dice + cross-entropy on logits and integer label maps.

``build_loss(num_classes, *, dice_weight, ce_weight, class_weights, batch_dice)``
(``train.*`` in params.yaml) returns a module called as ``loss(logits, target)``:

- ``logits``: float (N, C, H, W), raw network output (softmax is applied inside);
- ``target``: integer (N, H, W), values in ``0..C-1``, 0 = background;
- returns a scalar tensor.

The Dice term ignores the background channel (``include_background=False``):
background covers most of an ultrasound image, so its near-perfect Dice would
dilute the signal from small lesions. Cross-entropy covers every class.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss
from torch import nn

_SMOOTH = 1e-5


class DiceCEOnLabels(nn.Module):
    """``DiceCELoss`` that takes (N, H, W) integer targets instead of (N, 1, H, W).

    With ``groups`` (lists of class indices, e.g. benign and malignant), a soft
    Dice of each group's union (the summed probabilities of its classes
    against the union of their labels) is added with ``group_weight``: the
    network is also rewarded for finding a mass when it confuses its kind.
    """

    def __init__(self, loss: DiceCELoss, num_classes: int, groups: Sequence[Sequence[int]] = (),
                 group_weight: float = 0.0) -> None:
        super().__init__()
        self.loss = loss
        self.num_classes = num_classes
        self.groups = [list(g) for g in groups]
        self.group_weight = group_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W), target (N, H, W) -> scalar."""
        if logits.ndim != target.ndim + 1 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"expected logits (N, {self.num_classes}, H, W) and target (N, H, W), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}"
            )
        loss = self.loss(logits, target.unsqueeze(1))
        if self.groups and self.group_weight > 0:
            probs = logits.float().softmax(1)
            for members in self.groups:
                p = probs[:, members].sum(1)
                t = torch.isin(target, torch.tensor(members, device=target.device)).float()
                dice = (2 * (p * t).sum() + _SMOOTH) / (p.sum() + t.sum() + _SMOOTH)
                loss = loss + self.group_weight * (1 - dice)
        return loss


def build_loss(
    num_classes: int,
    *,
    dice_weight: float,
    ce_weight: float,
    class_weights: Sequence[float] | None,
    batch_dice: bool,
    groups: Sequence[Sequence[int]],
    group_weight: float,
) -> nn.Module:
    """Dice (foreground classes) + cross-entropy (all classes), from MONAI.

    Args:
        num_classes: channels of the logits, background included (at least 2).
        dice_weight: factor on the Dice term (MONAI ``lambda_dice``), >= 0.
        ce_weight: factor on the cross-entropy term (MONAI ``lambda_ce``), >= 0.
        class_weights: one weight per class, background first, or None for equal
            weights. They rescale cross-entropy per class and (background
            dropped) the per-class Dice terms.
        batch_dice: compute Dice over the whole batch rather than per image. Images
            without a class (e.g. normal livers without a mass) then do not
            contribute a Dice of 0 or 1 of their own, which is noisy.
        groups: class index lists whose union gets a Dice term of its own.
        group_weight: factor on each group's Dice term.

    Raises:
        ValueError: bad ``num_classes``, negative or all-zero term weights, or
            ``class_weights`` of the wrong length or with negative values.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes: must be >= 2 (background + a foreground class), got {num_classes}")
    if dice_weight < 0 or ce_weight < 0 or dice_weight + ce_weight == 0:
        raise ValueError(f"dice_weight and ce_weight: must be >= 0, not both 0; got {dice_weight}, {ce_weight}")
    weight = None
    if class_weights is not None:
        if len(class_weights) != num_classes or min(class_weights) < 0:
            raise ValueError(
                f"class_weights: need {num_classes} values >= 0 (background first), got {list(class_weights)}"
            )
        weight = torch.tensor(class_weights, dtype=torch.float32)
    loss = DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=batch_dice,
        weight=weight,
        lambda_dice=dice_weight,
        lambda_ce=ce_weight,
    )
    return DiceCEOnLabels(loss, num_classes, groups, group_weight)
