"""The training loop: seeded, validated each epoch, best model by foreground Dice.

``fit(model, train, valid, cfg, num_classes, ...)`` trains on in-memory
``ArraySet``s and returns a ``FitResult`` with the best state dict (by
validation foreground Dice), the epoch it came from and the per-epoch
history. A non-finite loss raises ``NonFiniteLoss`` naming epoch and batch;
the state that produced it is never kept as best.

Determinism on CPU: ``seed_everything`` fixes the seeds and the thread
count, batches come from a seeded ``torch.Generator``, and nothing else
draws random numbers, so two runs on one machine give identical weights.

Several processes (``medseg.distributed``): pass ``world``; each process
trains on its shard of every global batch through DDP, validates the whole
validation set, and follows process 0's validation Dice, so all processes
stop at the same epoch.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .config import TrainConfig
from .dataset import ArraySet, to_tensor
from .distributed import World, all_true, from_main, shard, total, wrap
from .errors import StageError
from .losses import build_loss

log = logging.getLogger(__name__)


class NonFiniteLoss(StageError):
    """The loss became NaN or infinite."""


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_dice: float  # mean over foreground classes present in the validation set
    val_dice_per_class: dict[str, float]
    lr: float
    seconds: float
    images_per_s: float

    def as_metrics(self) -> dict[str, float]:
        out = {k: getattr(self, k) for k in ("train_loss", "val_loss", "val_dice", "lr", "seconds", "images_per_s")}
        out.update({f"val_dice_{name}": v for name, v in self.val_dice_per_class.items()})
        return out


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_dice: float
    history: list[EpochStats] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class Batches:
    """Seeded shuffled mini-batches over an ``ArraySet``, as tensors on ``device``.

    ``batch_size`` is the global batch; with several processes (``world``) each
    yields its shard of every global batch, from the same permutation.
    """

    def __init__(self, data: ArraySet, batch_size: int, device: torch.device, memory_format, seed: int,
                 world: World = World()) -> None:
        self.data, self.batch_size, self.device, self.memory_format = data, batch_size, device, memory_format
        self.world = world
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        for x, y, _ in self.weighted():
            yield x, y

    def weighted(self):
        """``(x, y, weight)``: ``weight`` is this shard's size times the process count over the global batch size.

        Scaling each process's mean loss by it makes DDP's gradient average
        the gradient of the global batch's mean loss, also for an uneven last batch.
        """
        order = torch.randperm(len(self.data), generator=self.generator).numpy()
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start:start + self.batch_size])
            part = shard(idx, self.world)
            if part is not None:
                yield *self.tensors(part), len(part) * self.world.size / len(idx)

    def tensors(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_tensor(self.data.images[idx]).to(self.device, memory_format=self.memory_format)
        y = torch.from_numpy(self.data.labels[idx]).long().to(self.device)
        return x, y


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train_epoch(model: nn.Module, batches: Batches, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                cfg: TrainConfig, epoch: int, bf16: bool) -> float:
    """One pass over ``batches``; the mean training loss over all processes' images."""
    model.train()
    world = batches.world
    loss_sum, seen = 0.0, 0
    bar = tqdm(batches.weighted(), total=len(batches), desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=None if world.is_main else True)
    for number, (x, y, weight) in enumerate(bar, start=1):
        with _autocast(x.device, bf16):
            loss = loss_fn(model(x), y)
        if not all_true(bool(torch.isfinite(loss)), world, x.device):
            where = f"epoch {epoch}, batch {number}" + (f" (process {world.rank})" if world.distributed else "")
            raise NonFiniteLoss(f"loss became {'non-finite' if torch.isfinite(loss) else loss.item()} at {where}; "
                                "lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1 else loss).backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    loss_sum, seen = total([loss_sum, float(seen)], world, batches.device)
    return loss_sum / seen


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device,
                   bf16: bool = False, memory_format=torch.contiguous_format) -> torch.Tensor:
    """(N, H, W, C) uint8 -> float32 logits (N, classes, H, W) on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start:start + batch_size]).to(device, memory_format=memory_format)
        with _autocast(device, bf16):
            out.append(model(x).float().cpu())
    return torch.cat(out)


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[int, float]:
    """Dataset-level Dice per foreground class present in ``target`` (pixels pooled over images)."""
    scores = {}
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        denom = int(p.sum() + t.sum())
        if t.any():
            scores[c] = 2.0 * int((p & t).sum()) / denom
    return scores


def validate(model: nn.Module, valid: ArraySet, loss_fn: nn.Module, num_classes: int, cfg: TrainConfig,
             device: torch.device, bf16: bool, memory_format) -> tuple[float, dict[int, float], torch.Tensor]:
    logits = predict_logits(model, valid.images, cfg.batch_size, device, bf16, memory_format)
    target = torch.from_numpy(valid.labels).long()
    loss = float(loss_fn(logits, target))
    pred = logits.argmax(1)
    return loss, dice_per_class(pred, target, num_classes), pred


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.epochs, power=0.9)
    return None


def fit(model: nn.Module, train: ArraySet, valid: ArraySet, cfg: TrainConfig, classes: list[str],
        device: torch.device, on_epoch: Callable[[EpochStats, torch.Tensor], None] | None = None,
        world: World = World()) -> FitResult:
    """Train ``model`` and return the best state by validation foreground Dice.

    With several processes (``world``), call it in every process; ``on_epoch``
    is called in process 0 only.
    """
    bf16 = cfg.bf16 and bf16_supported(device)
    if cfg.bf16 and not bf16:
        log.warning("train.bf16 is set but %s does not support bf16; training in fp32", device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    net = wrap(model, world, device)
    loss_fn = build_loss(len(classes), dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight)
    optimizer = build_optimizer(net, cfg)
    batches = Batches(train, cfg.batch_size, device, memory_format, cfg.seed, world)
    scheduler = build_scheduler(optimizer, cfg)
    result = FitResult(best_state={}, best_epoch=0, best_dice=-1.0)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(net, batches, loss_fn, optimizer, cfg, epoch, bf16)
        seconds = time.perf_counter() - start
        val_loss, per_class, pred = validate(model, valid, loss_fn, len(classes), cfg, device, bf16, memory_format)
        val_dice = from_main(float(np.mean(list(per_class.values()))) if per_class else 0.0, world, device)
        stats = EpochStats(epoch, train_loss, val_loss, val_dice, {classes[c]: d for c, d in per_class.items()},
                           lr, seconds, len(train) / seconds)
        result.history.append(stats)
        if world.is_main:
            log.info("epoch %d: train loss %.4f, val loss %.4f, val dice %.4f %s, lr %.2g, %.1f img/s", epoch,
                     train_loss, val_loss, val_dice, {k: round(v, 3) for k, v in stats.val_dice_per_class.items()},
                     lr, stats.images_per_s)
        if val_dice > result.best_dice:
            result.best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_dice = epoch, val_dice
        if on_epoch is not None and world.is_main:
            on_epoch(stats, pred)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_dice)
        elif scheduler is not None:
            scheduler.step()
        if epoch - result.best_epoch >= cfg.early_stopping:
            if world.is_main:
                log.info("no validation improvement for %d epochs; stopping early", cfg.early_stopping)
            result.stopped_early = True
            break
    return result
