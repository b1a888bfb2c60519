"""Semi-supervised training: a consistency loss on the unlabelled train images beside the supervised loss.

With ``train.semi_supervised.method`` on, every step of ``fit``
(``medseg.train.loop``) also draws a batch of unlabelled images
(``unlabelled_ratio`` per labelled image; seeded ``Batches`` whose online
transforms, ``train.online``, make the *weak* view), lays the ultrasound
perturbations of ``medseg.train.strong`` over it (the *strong* view: same
geometry, other intensities) and optimises

    supervised loss + weight * ramp(progress) * unsupervised loss,

``ramp`` rising from 0 to 1 over the first ``rampup`` share of the epochs.

- ``FixMatch`` (Sohn et al. 2020, for segmentation as in UniMatch, Yang et
  al. 2023): the model's own prediction on the weak view (no gradient) is
  a pseudo-label per pixel, kept where its confidence exceeds ``threshold``;
  the loss is the cross-entropy of the strong view to it, averaged over all
  pixels (an unconfident pixel adds 0). With ``feature_dropout`` the weak
  view also passes with channel dropout on the U-Net's bottleneck
  (UniMatch's feature perturbation), held to the same pseudo-labels, and
  the two losses are averaged.
- ``MeanTeacher`` (Tarvainen and Valpola 2017): a teacher whose weights are
  an exponential moving average of the student's predicts the weak view (in
  eval mode, no gradient); the student's strong-view probabilities are pulled
  towards the teacher's (squared error or cross-entropy). The teacher is not
  optimised: after each optimizer step it moves towards the student by
  ``1 - decay`` (less damped over the first steps, as in the paper), from
  the same weights in every process (DDP makes them equal; batch-norm
  statistics, which each process computes on its shard, are averaged first).

Labelled images and strong views pass the network in one forward (one graph
for DDP, one batch for batch norm, as FixMatch does). Strong views and
feature masks are drawn from a generator seeded from ``train.seed`` and the
process rank, unlabelled batches from ``Batches``' seeded generators, so two
runs give identical weights.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medseg.config import SEMI_METHODS, SemiSupervised, TrainConfig

from .datasets import ArraySet, Batches
from .distributed import World, average, total
from .strong import strong_view

STREAM_SEED = 15485863  # added to train.seed for the unlabelled batches: a stream apart from the labelled one
VIEW_SEED = 104729      # the same for strong views and feature masks, times (rank + 1)


def ramp(progress: float, rampup: float) -> float:
    """The share of the unsupervised weight at ``progress`` (0 at the start of training, 1 at its end).

    A sigmoid ``exp(-5 (1 - t)^2)`` of ``t = progress / rampup`` (Laine and Aila 2017), shifted and
    scaled to run from exactly 0 to 1; 1 from ``rampup`` on, and always when ``rampup`` is 0.
    """
    if rampup <= 0 or progress >= rampup:
        return 1.0
    floor = math.exp(-5.0)
    return (math.exp(-5.0 * (1.0 - max(progress, 0.0) / rampup) ** 2) - floor) / (1.0 - floor)


def pseudo_label_loss(strong: torch.Tensor, weak: torch.Tensor, threshold: float,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's loss on logits (N, C, H, W): cross-entropy of ``strong`` to the argmax of ``weak`` on the pixels
    whose weak confidence exceeds ``threshold``, averaged over all pixels; and the share of such pixels.

    ``weak`` is a target (detached): no gradient flows into it.
    """
    confidence, target = torch.softmax(weak.detach().float(), dim=1).max(dim=1)
    confident = (confidence > threshold).float()
    ce = F.cross_entropy(strong.float(), target, reduction="none")
    return (ce * confident).mean(), confident.mean()


def consistency_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean teacher's loss on logits (N, C, H, W), averaged over pixels: ``mse``, the squared distance of the
    class probabilities (summed over classes); ``ce``, the cross-entropy of the student to the teacher's
    probabilities. ``teacher`` is a target (detached)."""
    target = torch.softmax(teacher.detach().float(), dim=1)
    if kind == "mse":
        return ((torch.softmax(student.float(), dim=1) - target) ** 2).sum(dim=1).mean()
    if kind == "ce":
        return -(target * torch.log_softmax(student.float(), dim=1)).sum(dim=1).mean()
    raise ValueError(f"consistency: unknown {kind!r}; choose mse or ce")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: dict[str, torch.Tensor], decay: float) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student`` for every floating-point entry of the state
    (weights and batch-norm statistics); other entries (batch counts) are copied."""
    for name, value in teacher.state_dict().items():
        source = student[name].to(value.device)
        if value.is_floating_point():
            value.mul_(decay).add_(source.to(value.dtype), alpha=1.0 - decay)
        else:
            value.copy_(source)


def bottleneck(model: nn.Module) -> nn.Module:
    """The deepest encoder block of our U-Net (``medseg.model.unet``), whose output the decoder starts from."""
    downs = getattr(model, "downs", None)
    if not downs:
        raise ValueError(f"feature_dropout needs our U-Net's encoder blocks; {type(model).__name__} has none")
    return downs[-1]


@contextlib.contextmanager
def dropped_features(block: nn.Module, rate: float, last: int, generator: torch.Generator) -> Iterator[None]:
    """Within it, the last ``last`` samples of a forward pass leave ``block`` with whole channels zeroed at
    ``rate`` (the others scaled by ``1 / (1 - rate)``), masks drawn from ``generator``."""
    def hook(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand(last, out.shape[1], 1, 1, generator=generator) >= rate).to(out.device, out.dtype)
        return torch.cat([out[:-last], out[-last:] * keep / (1.0 - rate)])

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class Consistency:
    """What both methods share: the unlabelled stream, the strong views, the step's objective, the epoch's stats."""

    STATS: tuple[str, ...] = ("unsup_loss",)  # per-epoch means over the unlabelled images, in train_history.csv

    def __init__(self, cfg: SemiSupervised, unlabelled: Batches, model: nn.Module, world: World, seed: int) -> None:
        self.cfg, self.unlabelled, self.model, self.world = cfg, unlabelled, model, world
        self.generator = torch.Generator().manual_seed(seed + VIEW_SEED * (world.rank + 1))
        self._stream = self._endless()
        self._sums = dict.fromkeys((*self.STATS, "images"), 0.0)  # each statistic times the images, the images

    def _endless(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        while True:
            yield from self.unlabelled.weighted()

    def objective(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, weight: float, loss_fn: nn.Module,
                  progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The supervised loss of the labelled batch ``(x, y)`` and the step's objective to back-propagate;
        ``weight`` and the unlabelled shard's own weight scale this process's part (``Batches.weighted``)."""
        weak, _, unlabelled_weight = next(self._stream)
        strong = strong_view(weak, self.cfg.strong, self.generator)
        with torch.no_grad():
            target = self.target(net, weak)
        n, m = len(x), len(weak)
        layout = self.unlabelled.memory_format
        with self.perturbed(m):
            logits = net(torch.cat([x, strong, *self.extra(weak)]).contiguous(memory_format=layout))
        supervised = loss_fn(logits[:n], y)
        unsupervised, stats = self.unsupervised(logits[n:n + m], logits[n + m:], target)
        for name, value in {"unsup_loss": unsupervised, **stats}.items():
            self._sums[name] += float(value.detach()) * m
        self._sums["images"] += m
        scale = self.cfg.weight * ramp(progress, self.cfg.rampup)
        return supervised, supervised * weight + scale * unsupervised * unlabelled_weight

    # The methods' parts.
    def target(self, net: nn.Module, weak: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra(self, weak: torch.Tensor) -> list[torch.Tensor]:
        return []

    def perturbed(self, m: int) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def unsupervised(self, strong: torch.Tensor, extra: torch.Tensor, target: torch.Tensor,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The unsupervised loss of the strong views' logits (and ``extra``'s) against the target logits, and the
        method's other ``STATS``."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimizer step."""

    def epoch_stats(self, device: torch.device) -> dict[str, float]:
        """This epoch's ``STATS`` and ``unlabelled_images`` seen, over all processes; then starts counting anew."""
        sums = dict(zip(self._sums, total(list(self._sums.values()), self.world, device), strict=True))
        self._sums = dict.fromkeys(self._sums, 0.0)
        seen = sums.pop("images")
        return {**{k: v / max(seen, 1.0) for k, v in sums.items()}, "unlabelled_images": seen}


class FixMatch(Consistency):
    """Pseudo-labels from the weak view, above ``threshold``, supervise the strong view (and the perturbed weak)."""

    STATS = ("unsup_loss", "unsup_confident")  # the share of pixels above the threshold

    def target(self, net: nn.Module, weak: torch.Tensor) -> torch.Tensor:
        return net(weak)

    def extra(self, weak: torch.Tensor) -> list[torch.Tensor]:
        return [weak] if self.cfg.feature_dropout > 0 else []

    def perturbed(self, m: int) -> contextlib.AbstractContextManager:
        if self.cfg.feature_dropout == 0:
            return contextlib.nullcontext()
        return dropped_features(bottleneck(self.model), self.cfg.feature_dropout, m, self.generator)

    def unsupervised(self, strong: torch.Tensor, extra: torch.Tensor, target: torch.Tensor,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, confident = pseudo_label_loss(strong, target, self.cfg.threshold)
        if len(extra):
            loss = 0.5 * (loss + pseudo_label_loss(extra, target, self.cfg.threshold)[0])
        return loss, {"unsup_confident": confident}


class MeanTeacher(Consistency):
    """An EMA teacher on the weak view supervises the student on the strong view."""

    def __init__(self, cfg: SemiSupervised, unlabelled: Batches, model: nn.Module, world: World, seed: int) -> None:
        super().__init__(cfg, unlabelled, model, world, seed)
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = 0
        self._buffers = [name for name, _ in model.named_buffers()]

    def target(self, net: nn.Module, weak: torch.Tensor) -> torch.Tensor:
        return self.teacher(weak)

    def unsupervised(self, strong: torch.Tensor, extra: torch.Tensor, target: torch.Tensor,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return consistency_loss(strong, target, self.cfg.consistency), {}

    def after_step(self) -> None:
        self.steps += 1
        state = self.model.state_dict()
        # Weights are equal in every process after a DDP step; batch-norm statistics are not.
        state.update(zip(self._buffers, average([state[name] for name in self._buffers], self.world), strict=True))
        ema_update(self.teacher, state, min(self.cfg.ema_decay, 1.0 - 1.0 / (self.steps + 1)))


METHODS: dict[str, type[Consistency]] = {"fixmatch": FixMatch, "mean_teacher": MeanTeacher}
assert {"off", *METHODS} == set(SEMI_METHODS), "every method the schema allows needs a class"


def build_consistency(cfg: TrainConfig, unlabelled: ArraySet, model: nn.Module, device: torch.device,
                      layout: torch.memory_format, world: World) -> Consistency:
    """The method ``cfg.semi_supervised.method`` over ``unlabelled``; ``model`` is the network DDP wraps.

    Each step takes ``unlabelled_ratio * batch_size`` unlabelled images (at least one per process), cut
    into the patches the labelled batch has, through the same online transforms (the weak view).
    """
    semi = cfg.semi_supervised
    if semi.method not in METHODS:
        raise ValueError(f"semi_supervised.method: unknown {semi.method!r}; choose one of {', '.join(METHODS)}")
    size = max(world.size, round(semi.unlabelled_ratio * cfg.batch_size))
    batches = Batches(unlabelled, size, device, layout, cfg.seed + STREAM_SEED, world, steps=1,
                      patch=cfg.patch_size, online=cfg.online)
    return METHODS[semi.method](semi, batches, model, world, cfg.seed)
