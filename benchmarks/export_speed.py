"""Inference speed of an exported network: ONNX Runtime and TorchScript against PyTorch, in one run.

Builds the network ``--checkpoint`` describes, or by default the U-Net of
``params.yaml``'s ``train.model`` with the widths the plan picks for the
synthetic dataset (``--base-filters``, ``--depth``, ``--stem-stride``) at a
``--size`` canvas, exports it (``medseg.export.graph``), checks the logits
agree (max abs difference), and times each runtime on the same batches with
the same thread counts (``--threads``, default 1 and 2: this project's
CPU machines have 2 cores). Writes ``benchmarks/results/export_speed.md``: images/s (median
of ``--repeats`` timed runs after a warm-up) per runtime and batch size,
with the CPU (``lscpu``).

    nice -n 19 python benchmarks/export_speed.py [--threads 1 2] [--size 256 256] [--checkpoint models/x/model.pt]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from ct_volumes import cpu_model

from medseg.config import ModelConfig
from medseg.config.params import load_params
from medseg.export.graph import export_onnx, export_torchscript, onnx_logits, onnx_session
from medseg.model.checkpoint import Checkpoint, load_checkpoint
from medseg.model.factory import build_model

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "export_speed.md"


def default_checkpoint(size: tuple[int, int], base_filters: int, depth: int, stem_stride: int) -> Checkpoint:
    """Random weights in the network params.yaml trains (the numbers of the weights do not change the speed)."""
    knobs = load_params(REPO / "params.yaml").train.model.model_dump()
    config = ModelConfig(**{**knobs, "base_filters": base_filters, "depth": depth, "stem_stride": stem_stride})
    torch.manual_seed(0)
    return Checkpoint(build_model(config, 1, 3).eval(), config, ["background", "a", "b"], 1, size, {})


def images_per_second(fn, x, repeats: int) -> float:
    fn(x)  # warm-up: allocations, ORT graph optimisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def measure(ckpt: Checkpoint, threads: int, batches: list[int], repeats: int) -> tuple[list[dict], dict]:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, ts_path = export_onnx(ckpt, Path(tmp) / "m.onnx"), export_torchscript(ckpt, Path(tmp) / "m.ts")
        session, scripted = onnx_session(onnx_path, threads), torch.jit.load(str(ts_path))
        model = ckpt.model.eval()

        def pytorch(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()

        def torchscript(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return scripted(torch.from_numpy(x)).numpy()

        runtimes = {"PyTorch (eager)": pytorch, "TorchScript": torchscript,
                    "ONNX Runtime": lambda x: onnx_logits(session, x)}
        rng = np.random.default_rng(0)
        rows, errors = [], {}
        for batch in batches:
            x = rng.random((batch, ckpt.channels, *ckpt.size), dtype=np.float32)
            reference = pytorch(x)
            for name, fn in runtimes.items():
                errors[name] = max(errors.get(name, 0.0), float(np.abs(fn(x) - reference).max()))
                rows.append({"runtime": name, "batch": batch, "ips": images_per_second(fn, x, repeats)})
    return rows, errors


def table(rows: list[dict], errors: dict) -> list[str]:
    base = {r["batch"]: r["ips"] for r in rows if r["runtime"] == "PyTorch (eager)"}
    lines = ["| runtime | batch | images/s | vs PyTorch | max abs logit diff |", "|---|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['batch']} | {r['ips']:.1f} | {r['ips'] / base[r['batch']]:.2f}x | "
              f"{errors[r['runtime']]:.1e} |" for r in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained model.pt (default: the params.yaml U-Net)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], help="canvas (H W) without --checkpoint")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--stem-stride", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="one table per thread count")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    ckpt = (load_checkpoint(args.checkpoint) if args.checkpoint else
            default_checkpoint(tuple(args.size), args.base_filters, args.depth, args.stem_stride))
    load = os.getloadavg()[0]
    tables = []
    for threads in args.threads:
        rows, errors = measure(ckpt, threads, args.batches, args.repeats)
        tables += [f"**{threads} thread{'s' if threads > 1 else ''}** (torch intra-op threads; ONNX Runtime "
                   "intra-op threads):", "", *table(rows, errors), ""]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    model = (str(args.checkpoint) if args.checkpoint else
             f"U-Net of params.yaml with base_filters {args.base_filters}, depth {args.depth}, stem_stride "
             f"{args.stem_stride}, 1 channel in, 3 classes, random weights")
    text = "\n".join([
        "# Export speed: ONNX Runtime and TorchScript against PyTorch", "",
        f"{model}; canvas {ckpt.size[0]}x{ckpt.size[1]}, float32, the same thread count for every runtime, "
        f"median of {args.repeats} timed runs after one warm-up. {datetime.now():%Y-%m-%d}, commit {commit}, "
        f"{platform.machine()} ({cpu_model()}, `lscpu`), {os.cpu_count()} cores, torch {torch.__version__}, "
        f"onnxruntime {__import__('onnxruntime').__version__}; 1-minute load average {load:.2f} when it started "
        f"(other work on the cores slows a runtime that waits on its threads' barriers most).", "",
        *tables,
        "Command: `nice -n 19 python benchmarks/export_speed.py` (see its docstring for the options).", ""])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
