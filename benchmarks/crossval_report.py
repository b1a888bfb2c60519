"""Group k-fold cross-validation of one dataset through the real pipeline.

Clones this repository's committed HEAD into a temporary folder, points the
dataset's local source at ../shared/datasets by absolute path, sets
`active: [<dataset>]` and `split.folds: k`, runs `dvc repro compare`, and reports the
per-class and combined (`evaluate.combine`) Dice: pooled over all held-out
images, and mean ± std of the per-fold means. Prints and saves
benchmarks/results/<dataset>_cv.md.

    python benchmarks/crossval_report.py --dataset us-liver-mini --folds 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def configure(clone: Path, dataset: str, folds: int, overrides: dict) -> dict:
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    source = params["datasets"][dataset]["source"]
    if source["kind"] == "local" and not Path(source["path"]).is_absolute():
        source["path"] = str((REPO / source["path"]).resolve())
    params["active"] = [dataset]
    params["split"]["folds"] = folds
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def repro(clone: Path) -> float:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", "compare"], cwd=clone, env=env, check=True)
    return time.perf_counter() - start


def report(command: str, dataset: str, folds: int, metrics: dict, train: dict, seconds: float, commit: str,
           params: dict) -> str:
    cv = metrics["cv"]
    lines = [f"# {dataset}: {folds}-fold group cross-validation\n",
             f"Commit {commit}, {datetime.now():%Y-%m-%d}, {os.cpu_count()} cores, `dvc repro` {seconds:.0f} s. "
             f"Command: `{command}`. "
             f"Each round: one fold test, the next fold validation (model selection), the rest train, with "
             f"{params['augment']['copies']} augmented copies per train image at {params['augment']['size']}; "
             f"every image is tested once by a model that never saw it.\n",
             f"Training images per round: {train['fold0']['n_train']} samples including augmented copies; "
             f"validation {train['fold0']['n_valid']} images.\n",
             "| class | pooled Dice over held-out images [95% CI] | n | per-fold mean ± std |", "|---|---|---|---|"]
    for cls, stat in metrics["dice"].items():
        fold = cv["dice"][cls]
        pooled = "n/a" if stat["mean"] is None else \
            f"{stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"
        lines.append(f"| {cls} | {pooled} | {stat['n']} | {fold['mean']:.3f} ± {fold['std']:.3f} |")
    lines.append(f"\nMean foreground Dice per fold: {cv['per_fold_mean_fg_dice']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="us-liver-mini")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML",
                        help="extra params overrides, e.g. train.epochs=30")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this report needs the shared real-data samples")
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        params = configure(clone, args.dataset, args.folds, overrides)
        seconds = repro(clone)
        out = clone / "metrics" / "datasets" / args.dataset
        metrics = json.loads((out / "eval.json").read_text())
        train = json.loads((out / "train.json").read_text())
    command = " ".join(["python benchmarks/crossval_report.py", *sys.argv[1:]])
    text = report(command, args.dataset, args.folds, metrics, train, seconds, commit, params)
    print(text)
    (REPO / "benchmarks" / "results" / f"{args.dataset}_cv.md").write_text(text)


if __name__ == "__main__":
    main()
