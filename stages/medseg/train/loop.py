"""The training loop: seeded, validated each epoch, best model by per-image foreground Dice.

``fit(model, train, valid, cfg, classes, ...)`` trains on in-memory
``ArraySet``s for ``cfg.epochs`` epochs of ``cfg.steps_per_epoch`` steps,
on whole canvases or patches (``cfg.patch_size``), each batch transformed
online (``cfg.online``). After each epoch it predicts the validation canvases
(with a sliding window when training on patches) and scores them with the
statistic the test reports: per class, the mean over the images that contain
it of each image's Dice (``val_dice``; the pooled Dice is logged too). The
best epoch's state is kept (with ``cfg.ema`` > 0, validated and kept are the
weights' exponential moving average, BatchNorm statistics included, updated
after every step; off by default, it lost on us-liver-mini),
and on it the post-processing is chosen
(``choose_postprocess``): each of mirror averaging, class groups first and
largest region only is applied when ``cfg.postprocess`` says ``on``, or
when it says ``validation`` and raises the validation Dice. A non-finite loss
raises ``NonFiniteLoss`` naming epoch and batch.

Determinism on CPU: ``seed_everything`` (``medseg.model.runtime``) fixes the
seeds and the thread count, batches, crops and online transforms come from
seeded ``torch.Generator``s, and nothing else draws random numbers, so two
runs on one machine give identical weights. Precision and memory layout are
params, or (``auto``) the fastest on this machine, measured once and cached
(``medseg.train.precision``); determinism holds for a given choice.

Several processes (``medseg.train.distributed``): pass ``world``; each process
trains on its shard of every global batch through DDP, validates the whole
validation set, and follows process 0's validation Dice, so all processes
stop at the same epoch.

Semi-supervised (``cfg.semi_supervised``, ``medseg.train.semi``): given
``unlabelled`` images, each step adds a consistency loss on a batch of them;
``train_loss`` stays the supervised part, the history gains the
unsupervised loss and the unlabelled images per second.
"""
from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from medseg.config import TrainConfig
from medseg.data.converted import IGNORE
from medseg.io.errors import StageError
from medseg.model.inference import predict_logits
from medseg.model.losses import build_loss
from medseg.model.postprocess import Postprocess
from medseg.model.runtime import autocast

from .datasets import ArraySet, Batches
from .distributed import World, all_true, from_main, total, wrap
from .precision import choose_runtime
from .semi import Consistency, build_consistency

log = logging.getLogger(__name__)


class NonFiniteLoss(StageError):
    """The loss became NaN or infinite."""


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    # Per foreground class present in the validation images: the mean over
    # those images of each one's Dice (what evaluate reports as test
    # ``dice.<class>.mean``); ``val_dice`` is the mean over classes and groups.
    val_dice: float
    val_dice_per_class: dict[str, float]
    # The same with pixels pooled over all validation images (logged, not used to select).
    val_pooled_dice: float
    lr: float
    seconds: float
    images_per_s: float
    # Semi-supervised training alone (``medseg.train.semi``): the unsupervised loss and the method's other
    # statistics, and ``unlabelled_per_s``; ``seconds`` includes the unlabelled work.
    semi: dict[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        """The epoch's row of ``train_history.csv`` and its MLflow metrics (without the epoch)."""
        names = ("train_loss", "val_loss", "val_dice", "val_pooled_dice", "lr", "seconds", "images_per_s")
        out = {k: getattr(self, k) for k in names}
        out.update(self.semi)
        out.update({f"val_dice_{name}": v for name, v in self.val_dice_per_class.items()})
        return out


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_dice: float
    history: list[EpochStats] = field(default_factory=list)
    stopped_early: bool = False
    postprocess: Postprocess = field(default_factory=Postprocess)
    postprocess_dice: dict[str, float] = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)


def train_epoch(model: nn.Module, batches: Batches, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                cfg: TrainConfig, epoch: int, bf16: bool, semi: Consistency | None = None,
                average: AveragedModel | None = None) -> float:
    """One pass over ``batches``; the mean (supervised) training loss over all processes' images.

    With ``semi`` each step also takes its batch of unlabelled images and adds their consistency loss;
    ``average`` (the weights' moving average) is updated after every step.
    """
    model.train()
    world = batches.world
    loss_sum, seen = 0.0, 0
    bar = tqdm(batches.weighted(), total=len(batches), desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=None if world.is_main else True)
    for number, (x, y, weight) in enumerate(bar, start=1):
        with autocast(x.device, bf16):
            if semi is None:
                loss = loss_fn(model(x), y)
                objective = loss * weight if weight != 1 else loss
            else:
                progress = (epoch - 1 + (number - 1) / len(batches)) / cfg.epochs
                loss, objective = semi.objective(model, x, y, weight, loss_fn, progress)
        if not all_true(bool(torch.isfinite(objective)), world, x.device):
            where = f"epoch {epoch}, batch {number}" + (f" (process {world.rank})" if world.distributed else "")
            raise NonFiniteLoss(f"loss became {'non-finite' if torch.isfinite(objective) else objective.item()} at "
                                f"{where}; lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        if semi is not None:
            semi.after_step()
        loss_sum += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    loss_sum, seen = total([loss_sum, float(seen)], world, batches.device)
    return loss_sum / seen


def pooled_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[int, float]:
    """Dice per foreground class present in ``target``, pixels pooled over all images; ``IGNORE`` pixels left out."""
    scores, valid = {}, target != IGNORE
    for c in range(1, num_classes):
        p, t = (pred == c) & valid, target == c
        denom = int(p.sum() + t.sum())
        if t.any():
            scores[c] = 2.0 * int((p & t).sum()) / denom
    return scores


def image_dice(pred: np.ndarray, target: np.ndarray, regions: dict[str, list[int]]) -> dict[str, float]:
    """Per region (a name and its class indices): the mean over images containing it of their Dice.

    ``pred`` and ``target`` are (N, H, W) label maps; ``IGNORE`` pixels of ``target`` are left out.
    """
    out, valid = {}, target != IGNORE
    for name, members in regions.items():
        p, t = np.isin(pred, members) & valid, np.isin(target, members)
        inter = (p & t).reshape(len(t), -1).sum(1)
        sizes = p.reshape(len(p), -1).sum(1) + t.reshape(len(t), -1).sum(1)
        present = t.reshape(len(t), -1).any(1)
        if present.any():
            out[name] = float(np.mean(2.0 * inter[present] / sizes[present]))
    return out


def regions_of(classes: list[str], groups: dict[str, list[int]]) -> dict[str, list[int]]:
    """Each foreground class on its own, then each group: what the validation Dice averages."""
    return {**{name: [c] for c, name in enumerate(classes) if c > 0}, **groups}


def validate(model: nn.Module, valid: ArraySet, loss_fn: nn.Module, regions: dict[str, list[int]], cfg: TrainConfig,
             device: torch.device, bf16: bool, layout: torch.memory_format,
             ) -> tuple[float, dict[str, float], float, torch.Tensor]:
    """Validation loss, per-image Dice per region, pooled mean Dice, and the predicted label maps."""
    logits = predict_logits(model, valid.images, cfg.batch_size, device, bf16, layout, window=cfg.patch_size)
    target = torch.from_numpy(valid.labels).long()
    loss = float(loss_fn(logits, target))
    pred = logits.argmax(1)
    pooled = pooled_dice(pred, target, logits.shape[1])
    return (loss, image_dice(pred.numpy(), valid.labels, regions),
            float(np.mean(list(pooled.values()))) if pooled else 0.0, pred)


def choose_postprocess(model: nn.Module, valid: ArraySet, cfg: TrainConfig, regions: dict[str, list[int]],
                       groups: dict[str, list[int]], device: torch.device, bf16: bool,
                       layout: torch.memory_format) -> tuple[Postprocess, dict[str, float]]:
    """The post-processing with the best validation Dice among those ``cfg.postprocess`` allows; all scores."""
    choices = cfg.postprocess
    options = {name: {"on": [True], "off": [False], "validation": [False, True]}[getattr(choices, name)]
               for name in ("flip_tta", "groups", "largest_component")}
    if not groups:
        options["groups"] = [False]
    logits = {flip: predict_logits(model, valid.images, cfg.batch_size, device, bf16, layout,
                                   window=cfg.patch_size, flip=flip) for flip in options["flip_tta"]}
    scored = {}
    for flip, grouped, largest in itertools.product(options["flip_tta"], options["groups"],
                                                    options["largest_component"]):
        post = Postprocess(flip, tuple(tuple(g) for g in groups.values()) if grouped else (), largest)
        pred = np.stack([post.labels(x) for x in logits[flip]])
        dice = image_dice(pred, valid.labels, regions)
        scored[post] = float(np.mean(list(dice.values()))) if dice else 0.0
    best = max(scored, key=lambda post: (scored[post], -sum(map(bool, (post.flip_tta, post.groups,
                                                                        post.largest_component)))))
    names = {post: f"flip_tta={post.flip_tta},groups={bool(post.groups)},largest_component={post.largest_component}"
             for post in scored}
    return best, {names[post]: round(dice, 6) for post, dice in scored.items()}


def loss_for(cfg: TrainConfig, classes: list[str], groups: dict[str, list[int]] | None = None) -> nn.Module:
    """The training loss with ``cfg``'s weights; classes not in ``class_weights`` weigh 1.

    ``IGNORE`` target pixels (the ignore label) are left out of it; a batch without any takes the plain loss.
    """
    weights = [cfg.class_weights.get(c, 1.0) for c in classes] if cfg.class_weights else None
    return build_loss(len(classes), dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight, class_weights=weights,
                      batch_dice=cfg.batch_dice, groups=list((groups or {}).values()),
                      group_weight=cfg.group_dice_weight, ignore_index=IGNORE)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW, fused: one kernel per step for all parameters (the optimiser step 4x faster than the
    per-tensor-list default on 2 CPU cores; whole steps 3-13% faster, ``benchmarks/step_speed.py``). Same
    update, deterministic."""
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.epochs, power=0.9)
    return None


def moving_average(model: nn.Module, cfg: TrainConfig) -> AveragedModel | None:
    """The exponential moving average of ``model``'s weights and buffers (``cfg.ema`` per step), or None when off."""
    if cfg.ema <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


def semi_supervision(cfg: TrainConfig, unlabelled: ArraySet | None, model: nn.Module, device: torch.device,
                     layout: torch.memory_format, world: World) -> Consistency | None:
    """The consistency method of ``cfg.semi_supervised`` over ``unlabelled``, or None when it is off.

    Raises:
        StageError: a method is on but there are no unlabelled images.
    """
    method = cfg.semi_supervised.method
    count = 0 if unlabelled is None else len(unlabelled)
    if method == "off":
        if count and world.is_main:
            log.info("%d unlabelled images left unused (train.semi_supervised.method: off)", count)
        return None
    if not count:
        raise StageError(f"train.semi_supervised.method is {method!r} but there are no unlabelled train images; "
                         "set split.labelled_fraction below 1, or method: off")
    if world.is_main:
        log.info("semi-supervised (%s): %d unlabelled images", method, count)
    return build_consistency(cfg, unlabelled, model, device, layout, world)


def batch_shape(train: ArraySet, cfg: TrainConfig, world: World) -> tuple[int, int, int, int]:
    """One process's training batch (N, C, H, W): its share of the global batch, at the patch or canvas size."""
    height, width = cfg.patch_size or train.images.shape[1:3]
    return max(1, cfg.batch_size // world.size), train.images.shape[3], height, width


def fit(model: nn.Module, train: ArraySet, valid: ArraySet, cfg: TrainConfig, classes: list[str],
        device: torch.device, on_epoch: Callable[[EpochStats, torch.Tensor], None] | None = None,
        world: World = World(), groups: dict[str, list[int]] | None = None,
        unlabelled: ArraySet | None = None) -> FitResult:
    """Train ``model`` and return the best state by ``val_dice``, with its chosen post-processing.

    ``groups`` names class groups (label values), e.g. ``{"mass": [2, 3]}``: they get a Dice term in the
    loss, count in the validation Dice, and may decide first at prediction. ``unlabelled`` images (their
    labels are never read) join every step when ``cfg.semi_supervised.method`` is on
    (``medseg.train.semi``). With several processes (``world``), call it in every process; ``on_epoch``
    is called in process 0 only.
    """
    groups = groups or {}
    choice = choose_runtime(model, cfg, batch_shape(train, cfg, world), len(classes), device, world)
    bf16, layout = choice.bf16, choice.layout
    model.to(device, memory_format=layout)
    semi = semi_supervision(cfg, unlabelled, model, device, layout, world)  # a mean teacher copies model first
    net = wrap(model, world, device)
    loss_fn = loss_for(cfg, classes, groups)
    regions = regions_of(classes, groups)
    optimizer = build_optimizer(net, cfg)
    batches = Batches(train, cfg.batch_size, device, layout, cfg.seed, world, steps=cfg.steps_per_epoch,
                      patch=cfg.patch_size, foreground=cfg.foreground_fraction, online=cfg.online)
    scheduler = build_scheduler(optimizer, cfg)
    average = moving_average(model, cfg)
    judged = model if average is None else average.module  # the weights validated and kept
    result = FitResult(best_state={}, best_epoch=0, best_dice=-1.0, runtime=choice.to_dict())
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(net, batches, loss_fn, optimizer, cfg, epoch, bf16, semi, average)
        seconds = time.perf_counter() - start
        semi_stats = {} if semi is None else semi.epoch_stats(device)
        if semi_stats:
            semi_stats["unlabelled_per_s"] = semi_stats.pop("unlabelled_images") / seconds
        val_loss, per_region, pooled, pred = validate(judged, valid, loss_fn, regions, cfg, device, bf16, layout)
        val_dice = from_main(float(np.mean(list(per_region.values()))) if per_region else 0.0, world, device)
        samples = len(batches) * cfg.batch_size
        stats = EpochStats(epoch, train_loss, val_loss, val_dice, per_region, pooled, lr, seconds, samples / seconds,
                           semi_stats)
        result.history.append(stats)
        if world.is_main:
            log.info("epoch %d: train loss %.4f, val loss %.4f, val dice %.4f %s, lr %.2g, %.1f samples/s",
                     epoch, train_loss, val_loss, val_dice, {k: round(v, 3) for k, v in per_region.items()}, lr,
                     stats.images_per_s)
            if semi_stats:
                log.info("epoch %d, unlabelled: %s", epoch, {k: round(v, 4) for k, v in semi_stats.items()})
        if val_dice > result.best_dice:
            result.best_state = copy.deepcopy(judged.state_dict())
            result.best_epoch, result.best_dice = epoch, val_dice
        if on_epoch is not None and world.is_main:
            on_epoch(stats, pred)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_dice)
        elif scheduler is not None:
            scheduler.step()
        if cfg.early_stopping and epoch - result.best_epoch >= cfg.early_stopping:
            if world.is_main:
                log.info("no validation improvement for %d epochs; stopping early", cfg.early_stopping)
            result.stopped_early = True
            break
    state = copy.deepcopy(model.state_dict())
    model.load_state_dict(result.best_state)
    result.postprocess, result.postprocess_dice = choose_postprocess(model, valid, cfg, regions, groups, device,
                                                                     bf16, layout)
    model.load_state_dict(state)
    if world.is_main:
        log.info("post-processing chosen on the validation images: %s (validation dice %s)", result.postprocess,
                 result.postprocess_dice)
    return result
