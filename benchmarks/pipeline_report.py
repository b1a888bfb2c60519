"""Time the whole default pipeline in a fresh clone and report its test Dice.

Clones this repository's committed HEAD into a temporary folder, runs
`dvc repro` there (the README's pipeline command, with this interpreter's
environment), and records wall time per stage and in total together with
the test-split metrics from metrics/datasets/<dataset>/eval.json. Prints and saves
benchmarks/results/pipeline.md.

    python benchmarks/pipeline_report.py
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_repro(clone: Path) -> tuple[float, dict[str, float]]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    stages, current, since = {}, None, start
    for line in proc.stdout:
        sys.stdout.write(line)
        match = re.match(r"Running stage '([^']+)'", line)
        if match:
            now = time.perf_counter()
            if current:
                stages[current] = now - since
            current, since = match.group(1), now
    if proc.wait() != 0:
        sys.exit(f"dvc repro failed with status {proc.returncode}")
    total = time.perf_counter() - start
    if current:
        stages[current] = time.perf_counter() - since
    return total, stages


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        total, stages = run_repro(clone)
        results = {}
        for path in sorted((clone / "metrics" / "datasets").glob("*/eval.json")):
            train = json.loads((path.parent / "train.json").read_text())
            results[path.parent.name] = (json.loads(path.read_text()), train)
    lines = ["# Default pipeline, fresh clone\n",
             f"Commit {commit}, {datetime.now():%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores. "
             "Command: `python benchmarks/pipeline_report.py` (clones HEAD, runs `dvc repro`).\n",
             f"**Total `dvc repro` wall time: {total:.0f} s ({total / 60:.1f} min).**\n",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in stages.items()]
    for dataset, (metrics, train) in results.items():
        lines += ["", f"## {dataset}: test split ({metrics['n_test']} images)\n",
                  f"Mean foreground Dice **{metrics['mean_fg_dice']:.3f}**; best validation Dice (per image) "
                  f"{train['best_val_dice']:.3f} at epoch {train['best_epoch']} of {train['epochs_run']}; "
                  f"training {train['train_seconds']:.0f} s.\n",
                  "| class | Dice mean [95% CI] | IoU mean | HD95 mean (px) | n | false-positive rate |",
                  "|---|---|---|---|---|---|"]
        for cls, d in metrics["dice"].items():
            fp = metrics["false_positive"][cls]
            rate = "n/a" if fp["rate"] is None else f"{fp['rate']:.2f} of {fp['images']}"
            hd = metrics["hd95"][cls]["mean"]
            lines.append(f"| {cls} | {d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] | "
                         f"{metrics['iou'][cls]['mean']:.3f} | {'n/a' if hd is None else f'{hd:.1f}'} | {d['n']} | "
                         f"{rate} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "benchmarks" / "results" / "pipeline.md").write_text(text)


if __name__ == "__main__":
    main()
