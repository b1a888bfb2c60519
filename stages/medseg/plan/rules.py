"""The plan's rules: every ``auto`` knob from the fingerprint, the budget, and what is set.

``plan_sections(fp, sections, cfg, rounds, shares)`` takes the dataset's
sections (global params with its profile's overrides; knobs may be ``auto``)
and fills each ``auto`` knob, in this order, each rule using what came before:

1. **canvas** (``augment.size``): the median image shape, scaled down so the
   longer side is at most ``max_side``, rounded to multiples of 16. Images fit
   it with their aspect ratio kept and are padded (never squashed). Where the
   budget allows fewer than ``min_passes`` even at the narrowest width (rule
   6), the canvas shrinks by ``shrink_step`` and rules 2-7 run again, as long
   as the thinnest class stays ``shrink_floor_px`` wide on it: large, smooth
   structures (a nodule filling a third of a crop) lose little Dice at a
   lower resolution, and a model seen too few passes loses much.
2. **stem stride** (``train.model.stem_stride``): the largest of 4, 2, 1 at
   which the thinnest class's median region width, at the canvas scale,
   stays at least ``min_thickness_px`` where the convolutions run.
3. **patch** (``train.patch_size``): the whole canvas when it has at most
   ``max_patch_px`` pixels, else a crop of the canvas' shape with about that
   many pixels.
4. **depth**: the most down-sampling steps (up to ``max_depth``) that leave
   the deepest feature map at least ``min_bottleneck_px`` on its shorter side.
5. **batch size**: ``pixels_per_step`` over the patch's pixels, at least 2.
6. **width** (``base_filters``): the widest of ``widths`` that passes over the
   training pixels at least ``min_passes`` times within the budget, else the
   narrowest. The cost of a step is counted (forward and backward FLOPs, on
   the meta device, so planning costs nothing) and converted to seconds with
   ``reference_gflops``, plus its pixels at ``reference_mpx`` (the work that
   does not scale with the network; ``benchmarks/plan_calibration.py`` fits
   both). The validations come out of the budget first: each predicts the
   validation images (every sliding window, forward only) at the same rates,
   and choosing the post-processing predicts them twice more. There are
   ``validations`` of them, fewer where they would take more than
   ``max_validation_share`` of the budget.
7. **steps**: as many as the budget allows, at most ``max_passes`` passes;
   ``epochs`` (validations) and ``steps_per_epoch`` split them.
8. **class weights**: ``(background share / class share) ** 0.25`` per
   foreground class, capped at ``max_class_weight``.

Everything is a function of the fingerprint and the params, so the plan is
the same on every machine. ``decisions`` records, per planned knob, the value
and why; knobs that were set keep their value and are recorded as set.
"""
from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.config import AUTO, ModelConfig, PlanConfig
from medseg.model.factory import build_model

STEMS = (4, 2, 1)


def _round_to(value: float, multiple: int, floor: bool = False) -> int:
    steps = math.floor(value / multiple) if floor else round(value / multiple)
    return max(multiple, int(steps) * multiple)


def step_gflops(model: dict[str, Any], channels: int, classes: int, batch: int, patch: tuple[int, int],
                backward: bool = True) -> float:
    """GFLOPs of one training step (forward + backward), or of a forward pass only, counted on the meta device."""
    with torch.device("meta"):
        net = build_model(ModelConfig.model_validate(model), channels, classes)
        x = torch.empty(batch, channels, *patch)
        with FlopCounterMode(display=False) as counter:
            out = net(x)
            if backward:
                out.sum().backward()
    return counter.get_total_flops() / 1e9


def windows(canvas: tuple[int, int], patch: tuple[int, int]) -> int:
    """Sliding windows over a canvas, overlapping by half (``medseg.model.inference``)."""
    return math.prod(1 + math.ceil(max(c - p, 0) / max(p // 2, 1)) for c, p in zip(canvas, patch, strict=True))


class Shares(NamedTuple):
    """The share of a dataset's images each model trains on, and validates on."""

    train: float
    valid: float


class Planner:
    """Fills ``auto`` knobs one rule at a time, keeping a record of each decision."""

    def __init__(self, fp: dict[str, Any], sections: dict[str, dict[str, Any]], cfg: PlanConfig, rounds: int,
                 shares: Shares, overridden: dict[str, list[str]]) -> None:
        self.fp, self.s, self.cfg = fp, sections, cfg
        self.rounds, self.shares, self.overridden = rounds, shares, overridden
        self.decisions: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ helpers
    def get(self, dotted: str) -> Any:
        section, *keys = dotted.split(".")
        node = self.s[section]
        for key in keys:
            node = node[key]
        return node

    def decide(self, dotted: str, planned: Any, why: str) -> Any:
        """Set ``dotted`` to ``planned`` if it is ``auto``; return its final value either way."""
        current = self.get(dotted)
        section, *keys = dotted.split(".")
        if current != AUTO:
            source = "dataset profile" if ".".join(keys) in self.overridden.get(section, []) else "params.yaml"
            self.decisions[dotted] = {"value": current, "source": source}
            return current
        node = self.s[section]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = planned
        self.decisions[dotted] = {"value": planned, "source": "planned", "why": why}
        return planned

    # ------------------------------------------------------------------ rules
    def canvas(self, shrink: float = 1.0) -> tuple[int, int]:
        height, width = self.fp["shape"]["median"]
        scale = min(1.0, self.cfg.max_side / max(height, width)) * shrink
        planned = [_round_to(height * scale, 16), _round_to(width * scale, 16)]
        why = f"median image {height}x{width} scaled by {scale:.3f} (longer side <= {self.cfg.max_side}"
        if shrink < 1:
            why += f", then by {shrink:.3f}: the budget allows too few passes at a larger canvas"
        size = self.decide("augment.size", planned, why + ")")
        self.scale = min(size[0] / height, size[1] / width)
        return tuple(size)

    def thinnest_on_canvas(self) -> float | None:
        """The median width of the thinnest class on the canvas, in pixels (None without foreground)."""
        widths = [c["width_px"]["median"] for c in self.fp["classes"].values() if c["width_px"]["median"]]
        return min(widths) * self.scale if widths else None

    def stem(self) -> int:
        if self.get("train.model.name") != "unet":
            return self.decide("train.model.stem_stride", 1, "only our U-Net has a space-to-depth stem")
        widths = {name: c["width_px"]["median"] for name, c in self.fp["classes"].items() if c["width_px"]["median"]}
        if not widths:
            return self.decide("train.model.stem_stride", 1, "no foreground regions to measure: full resolution")
        thinnest = min(widths, key=widths.get)
        at_canvas = widths[thinnest] * self.scale
        stem = next((s for s in STEMS if at_canvas / s >= self.cfg.min_thickness_px), STEMS[-1])
        return self.decide("train.model.stem_stride", stem,
                           f"{thinnest} regions are {widths[thinnest]:.1f} px wide (median), {at_canvas:.1f} px on "
                           f"the canvas: {at_canvas / stem:.1f} px at stride {stem} (>= {self.cfg.min_thickness_px} "
                           "wanted where possible)")

    def patch(self, canvas: tuple[int, int], stem: int) -> tuple[int, int]:
        area = canvas[0] * canvas[1]
        if area <= self.cfg.max_patch_px:
            value = self.decide("train.patch_size", None, f"the canvas has {area} <= {self.cfg.max_patch_px} pixels: "
                                                          "train on whole canvases")
        else:
            shrink = math.sqrt(self.cfg.max_patch_px / area)
            unit = 32 * stem
            value = self.decide("train.patch_size", [min(canvas[0], _round_to(canvas[0] * shrink, unit, floor=True)),
                                                     min(canvas[1], _round_to(canvas[1] * shrink, unit, floor=True))],
                                f"the canvas has {area} > {self.cfg.max_patch_px} pixels: crops of about that many")
        return tuple(value) if value else canvas

    def depth(self, patch: tuple[int, int], stem: int) -> int:
        side = min(patch) / stem
        depth = max(1, min(self.cfg.max_depth, int(math.log2(max(side / self.cfg.min_bottleneck_px, 1)))))
        return self.decide("train.model.depth", depth,
                           f"{min(patch)} px / stride {stem} / 2**{depth} = {side / 2 ** depth:.1f} px at the "
                           f"bottleneck (>= {self.cfg.min_bottleneck_px})")

    def batch(self, patch: tuple[int, int]) -> int:
        batch = max(2, round(self.cfg.pixels_per_step / (patch[0] * patch[1])))
        return self.decide("train.batch_size", batch, f"{self.cfg.pixels_per_step} pixels per step / "
                                                      f"{patch[0]}x{patch[1]} per patch")

    def seconds(self, gflop: float, pixels: float) -> float:
        """Seconds of work at the reference rates (``benchmarks/plan_calibration.py``)."""
        return gflop / self.cfg.reference_gflops + pixels / 1e6 / self.cfg.reference_mpx

    def width_and_steps(self, batch: int, patch: tuple[int, int], classes: int) -> None:
        canvas = tuple(self.get("augment.size"))
        train_px = self.fp["images"] * self.shares.train * float(canvas[0] * canvas[1])
        step_px = batch * patch[0] * patch[1]
        budget = self.cfg.budget_minutes * 60 / self.rounds  # seconds per round
        valid_images = self.fp["images"] * self.shares.valid
        model = self.get("train.model")
        options = self.cfg.widths if model["base_filters"] == AUTO else [model["base_filters"]]
        for width in options:
            net = {**model, "base_filters": width}
            cost = step_gflops(net, self.fp["channels"], classes, batch, patch)
            seconds = self.seconds(cost, step_px)
            # a validation predicts every validation image window by window; choosing the post-processing
            # predicts them twice more (plain and flipped)
            one = valid_images * windows(canvas, patch) * self.seconds(
                step_gflops(net, self.fp["channels"], classes, 1, patch, backward=False), patch[0] * patch[1])
            validations = max(1, min(self.cfg.validations, int(self.cfg.max_validation_share * budget / one) - 2))
            validating = (validations + 2) * one
            steps = int(max(budget - validating, 0) / seconds)
            passes = steps * step_px / train_px
            if passes >= self.cfg.min_passes:
                break
        self.enough_passes = passes >= self.cfg.min_passes
        self.decide("train.model.base_filters", width,
                    f"{cost:.1f} GFLOP and {step_px / 1e6:.2f} Mpx per step, {seconds * 1000:.0f} ms at "
                    f"{self.cfg.reference_gflops:g} GFLOP/s and {self.cfg.reference_mpx:g} Mpx/s, after "
                    f"{validations} validations of {one:.1f} s: {steps} steps ({passes:.0f} passes over the training "
                    f"pixels) fit {self.cfg.budget_minutes / self.rounds:.1f} min per round (>= "
                    f"{self.cfg.min_passes:g} passes wanted)")
        cap = int(self.cfg.max_passes * train_px / step_px)
        total = max(1, min(steps, cap))
        bound = "the budget" if steps <= cap else f"{self.cfg.max_passes:g} passes"
        per_epoch = self.decide("train.steps_per_epoch", math.ceil(total / validations),
                                f"{total} steps in all, bound by {bound}, over {validations} validations")
        epochs = self.decide("train.epochs", max(1, round(total / per_epoch)) if per_epoch else validations,
                             f"{total} steps / {per_epoch} per epoch")
        self.budget_binds = steps <= cap
        self.planned_seconds = (self.get("train.epochs") * self.get("train.steps_per_epoch") * seconds
                                + (epochs + 2) * one)

    def class_weights(self) -> None:
        shares = {name: c["pixel_fraction"] for name, c in self.fp["classes"].items() if c["pixel_fraction"]}
        background = 1.0 - sum(shares.values())
        weights = {name: round(min(self.cfg.max_class_weight, max(1.0, (background / share) ** 0.25)), 2)
                   for name, share in shares.items()}
        self.decide("train.class_weights", weights, "(background share / class share) ** 0.25, capped at "
                                                    f"{self.cfg.max_class_weight:g}")


def plan_sections(fp: dict[str, Any], sections: dict[str, dict[str, Any]], cfg: PlanConfig, rounds: int,
                  shares: Shares, classes: int,
                  overridden: dict[str, list[str]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The sections with every ``auto`` filled in, and the record of decisions (see the module docstring)."""
    shrink = 1.0
    while True:
        planner = Planner(fp, copy.deepcopy(sections), cfg, rounds, shares, overridden)
        canvas = planner.canvas(shrink)
        stem = planner.stem()
        patch = planner.patch(canvas, stem)
        planner.depth(patch, stem)
        batch = planner.batch(patch)
        planner.width_and_steps(batch, patch, classes)
        thinnest = planner.thinnest_on_canvas()
        smaller = planner.decisions["augment.size"]["source"] == "planned" and thinnest is not None and (
            thinnest * cfg.shrink_step >= cfg.shrink_floor_px)
        if planner.enough_passes or not smaller:
            break
        shrink *= cfg.shrink_step
    planner.class_weights()
    return planner.s, {"decisions": planner.decisions, "budget_binds": planner.budget_binds,
                       "planned_train_seconds": round(planner.planned_seconds * rounds, 1)}
