"""Evaluate's engines side by side on a trained dataset: PyTorch against ONNX Runtime, time and Dice, in one run.

For each dataset (default: ``synthetic``, after ``dvc repro``), scores every
round's model on its test images exactly as the evaluate stage does
(``medseg.evaluate.run.evaluate_round``) once per engine, with the plan's
thread count for both: PyTorch; ONNX Runtime with an empty export cache (the
export is part of its time, as in a first ``dvc repro``); ONNX Runtime again
with the export cached (a second evaluate or ``predict`` of the same
model). Reports the wall time, test images per second of inference, the test
mean foreground Dice (pooled per image as ``eval.json``'s ``mean_fg_dice``) and the share of
pixels whose label differs from PyTorch's. Writes
``benchmarks/results/engine_speed.md`` with the CPU model.

    nice -n 19 python benchmarks/engine_speed.py [--datasets synthetic ...] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import onnxruntime
import pandas as pd
import torch
from ct_volumes import cpu_model

from medseg.config.params import load_params
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.data.rounds import Round, rounds
from medseg.data.split import read_split
from medseg.evaluate.run import evaluate_round
from medseg.export.engine import ONNXRUNTIME, TORCH, on_engine
from medseg.export.graph import example_input
from medseg.io import paths
from medseg.model.checkpoint import load_checkpoint
from medseg.model.runtime import seed_everything

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "engine_speed.md"


def score(dataset: str, engine: str, params) -> tuple[float, dict]:
    """(seconds, {id: ImageResult}) for every round's test images with ``engine``."""
    plan = read_plan(dataset, params)
    cfg = plan.evaluate.model_copy(update={"engine": engine})
    seed_everything(cfg.seed, plan.train.threads)
    converted = ConvertedDataset(paths.converted_dir(dataset))
    split = read_split(paths.split_file(dataset))
    found = {}
    start = time.perf_counter()
    for round_ in rounds(plan.split.folds):
        found.update(evaluate_round(dataset, round_, converted, split, cfg, torch.device("cpu"))[0])
    return time.perf_counter() - start, found


def mean_fg_dice(found: dict) -> float:
    rows = pd.DataFrame([row for res in found.values() for row in res.rows])
    return float(rows.groupby("id")["dice"].mean().mean())


def forward_ms(dataset: str, engine: str, steps: int = 20) -> float:
    """Median milliseconds of the network alone on one canvas (batch 1) with ``engine``."""
    path = paths.model_dir(dataset) / Round().checkpoint
    ckpt = on_engine(load_checkpoint(path, "cpu"), path, engine, torch.device("cpu"))
    x = example_input(ckpt)
    times = []
    with torch.no_grad():
        ckpt.model(x)  # warm-up
        for _ in range(steps):
            start = time.perf_counter()
            ckpt.model(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(dataset: str, params, repeats: int) -> list[dict]:
    arms, forward = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ[paths.CACHE_ENV] = cache  # an empty export cache: the first ONNX run exports
        arms["ONNX Runtime, first run (exports)"] = [score(dataset, ONNXRUNTIME, params)]
        arms["ONNX Runtime, export cached"] = [score(dataset, ONNXRUNTIME, params) for _ in range(repeats)]
        arms["PyTorch"] = [score(dataset, TORCH, params) for _ in range(repeats)]
        forward = {"ONNX Runtime, export cached": forward_ms(dataset, ONNXRUNTIME),
                   "PyTorch": forward_ms(dataset, TORCH)}
        forward["ONNX Runtime, first run (exports)"] = forward["ONNX Runtime, export cached"]
    reference = arms["PyTorch"][0][1]
    n = len(reference)
    rows = []
    for name, runs in arms.items():
        seconds = statistics.median(s for s, _ in runs)
        found = runs[0][1]
        differ = sum(int((found[i].pred != reference[i].pred).sum()) for i in reference)
        pixels = sum(reference[i].pred.size for i in reference)
        rows.append({"dataset": dataset, "engine": name, "images": n, "seconds": seconds,
                     "images/s": n / seconds, "dice": mean_fg_dice(found), "differ": differ / pixels,
                     "forward_ms": forward[name]})
    return rows


def write(rows: list[dict], threads: int, repeats: int) -> None:
    torch_s = {r["dataset"]: r["seconds"] for r in rows if r["engine"] == "PyTorch"}
    lines = [
        "# Evaluate's engines: PyTorch against ONNX Runtime",
        "",
        f"{datetime.now():%Y-%m-%d}, {platform.machine()} ({cpu_model()}), {os.cpu_count()} cores, "
        f"{threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, float32; "
        f"median of {repeats} runs (the first ONNX Runtime run once, with an empty export cache). Each run scores "
        "every round's test images as the evaluate stage does (fit onto the canvas, sliding window and mirror "
        "averaging where the model has them, post-processing, scoring).",
        "",
        "| dataset | engine | test images | seconds | images/s | vs PyTorch | network alone, ms per canvas | "
        "mean fg Dice | pixels labelled otherwise than PyTorch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['engine']} | {r['images']} | {r['seconds']:.2f} | "
                     f"{r['images/s']:.1f} | {torch_s[r['dataset']] / r['seconds']:.2f}x | {r['forward_ms']:.1f} | "
                     f"{r['dice']:.4f} | "
                     f"{r['differ']:.2e} |")
    lines += ["", "Command: `nice -n 19 python benchmarks/engine_speed.py` (see its docstring).", ""]
    OUT.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.chdir(REPO)  # the stage paths are relative to the repository
    params = load_params(REPO / "params.yaml")
    rows = [row for name in args.datasets for row in measure(name, params, args.repeats)]
    write(rows, torch.get_num_threads(), args.repeats)
    print(OUT.read_text())


if __name__ == "__main__":
    main()
