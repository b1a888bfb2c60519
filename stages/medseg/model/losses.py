"""Training loss: MONAI's Dice + cross-entropy on logits and integer label maps.

``build_loss(num_classes, *, dice_weight, ce_weight, class_weights, batch_dice)``
(``train.*`` in params.yaml) returns a module called as ``loss(logits, target)``:

- ``logits``: float (N, C, H, W), raw network output (softmax is applied inside);
- ``target``: integer (N, H, W), values in ``0..C-1``, 0 = background, or
  ``ignore_index`` (the ignore label, 255) for pixels of no class;
- returns a scalar tensor.

Ignored pixels contribute nothing: cross-entropy is averaged over the other
pixels (``ignore_index``), and their probabilities and one-hot targets are
zeroed before the soft Dice sums, as if they had been cropped away. A batch
without ignored pixels takes MONAI's ``DiceCELoss`` unchanged.

The Dice term ignores the background channel (``include_background=False``):
background covers most of an ultrasound image, so its near-perfect Dice would
dilute the signal from small lesions. Cross-entropy covers every class.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

_SMOOTH = 1e-5


class DiceCEOnLabels(nn.Module):
    """``DiceCELoss`` that takes (N, H, W) integer targets instead of (N, 1, H, W).

    With ``groups`` (lists of class indices, e.g. benign and malignant), a soft
    Dice of each group's union (the summed probabilities of its classes
    against the union of their labels) is added with ``group_weight``: the
    network is also rewarded for finding a mass when it confuses its kind.

    Target pixels equal to ``ignore_index`` are left out of every term;
    ``masked_dice`` is ``loss``'s Dice on probabilities and one-hot targets
    (no activation of its own), which that needs.
    """

    def __init__(self, loss: DiceCELoss, num_classes: int, groups: Sequence[Sequence[int]] = (),
                 group_weight: float = 0.0, ignore_index: int | None = None,
                 masked_dice: DiceLoss | None = None) -> None:
        super().__init__()
        if ignore_index is not None and (0 <= ignore_index < num_classes or masked_dice is None):
            raise ValueError(f"ignore_index: must lie outside 0..{num_classes - 1} and come with masked_dice, "
                             f"got {ignore_index}")
        self.loss = loss
        self.num_classes = num_classes
        self.groups = [list(g) for g in groups]
        self.group_weight = group_weight
        self.ignore_index = ignore_index
        self.masked_dice = masked_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W), target (N, H, W) -> scalar."""
        if logits.ndim != target.ndim + 1 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"expected logits (N, {self.num_classes}, H, W) and target (N, H, W), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}"
            )
        valid = None if self.ignore_index is None else target != self.ignore_index
        if valid is None or bool(valid.all()):
            valid = None
            loss = self.loss(logits, target.unsqueeze(1))
        elif not bool(valid.any()):
            return logits.sum() * 0.0  # nothing labelled: no loss, and a gradient of zeros
        else:
            loss = self._masked(logits, target, valid)
        if self.groups and self.group_weight > 0:
            probs = logits.float().softmax(1)
            keep = torch.ones_like(target, dtype=probs.dtype) if valid is None else valid.to(probs.dtype)
            for members in self.groups:
                p = probs[:, members].sum(1) * keep
                t = torch.isin(target, torch.tensor(members, device=target.device)).float() * keep
                dice = (2 * (p * t).sum() + _SMOOTH) / (p.sum() + t.sum() + _SMOOTH)
                loss = loss + self.group_weight * (1 - dice)
        return loss

    def _masked(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``loss`` with the pixels outside ``valid`` (N, H, W) left out of cross-entropy and the Dice sums."""
        keep = valid.unsqueeze(1)
        probs = torch.softmax(logits, 1) * keep
        onehot = F.one_hot(torch.where(valid, target, 0), self.num_classes).movedim(-1, 1).to(probs.dtype) * keep
        ce = F.cross_entropy(logits, torch.where(valid, target, self.ignore_index).long(),
                             weight=self.loss.cross_entropy.weight, ignore_index=self.ignore_index)
        return self.loss.lambda_dice * self.masked_dice(probs, onehot) + self.loss.lambda_ce * ce


def build_loss(
    num_classes: int,
    *,
    dice_weight: float,
    ce_weight: float,
    class_weights: Sequence[float] | None,
    batch_dice: bool,
    groups: Sequence[Sequence[int]],
    group_weight: float,
    ignore_index: int | None = None,
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
        ignore_index: the target value of pixels left out of every term (the
            ignore label), outside ``0..num_classes-1``; None: every pixel counts.

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
    masked = None
    if ignore_index is not None:
        masked = DiceLoss(include_background=False, batch=batch_dice, weight=None if weight is None else weight[1:])
    return DiceCEOnLabels(loss, num_classes, groups, group_weight, ignore_index, masked)
