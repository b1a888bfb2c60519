"""Real-data benchmark: the default pipeline, unchanged, on the real samples in ../shared/datasets.

For each dataset it copies the repository (the committed files and the
working tree's changes, not its results) into a temporary folder, makes
that dataset the only active one, points its source at the shared sample,
runs ``dvc repro`` and reads back the test scores, the plan's decisions and
the wall time of every stage. Each dataset runs with its profile's protocol
from params.yaml (5-fold group cross-validation, or a published test split).
Each dataset's numbers go to ``benchmarks/results/real_data/<dataset>.json``
as soon as it finishes; the table ``benchmarks/results/real_data.md`` is
then rebuilt from every dataset's file there, so datasets can be measured
in separate invocations (each file names the commit it measured).

    python benchmarks/real_data.py [--datasets us-liver-mini,chase-retina-mini] [--set train.lr=0.001 ...]

``--set`` applies params overrides to every dataset (for experiments: the
table then says so). Needs ``../shared/datasets``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "benchmarks" / "results"
# The class (or class group) each dataset is judged by, and the anchors to compare with.
DATASETS = {
    "us-liver-mini": {"score": "mass", "anchor": "nnU-Net v2 (2D, defaults) on AUL: mass 0.29 with 25 training images, "
                                                 "0.36 with 50 (published)", "target": 0.35,
                      "before": "0.137 [0.097, 0.177] (commit 051e826, same protocol)"},
    "ddti-thyroid": {"score": "nodule", "anchor": "no comparable published figure for nodule-centred crops",
                     "target": 0.90, "before": "0.898 [0.889, 0.906] (commit 051e826, fixed group split, 551 s "
                                               "of training)"},
    "chase-retina-mini": {"score": "vessel", "anchor": "U-Net F1 0.778, SA-UNet 0.815 (published, same protocol)",
                          "target": 0.80, "before": "0.117 [0.102, 0.130] (commit 051e826, random group split)"},
    "busi-malignant-mini": {"score": "lesion", "anchor": "-", "target": None, "before": "-"},
    "tsd-retinal-vessel-7z": {"score": "vessel", "anchor": "the same 28 CHASE images as chase-retina-mini, read "
                                                        "from the collection's three 7z archives", "target": None,
                              "before": "-"},
    "synthetic": {"score": None, "anchor": "-", "target": 0.90, "before": "0.938 (commit 051e826, fixed split)"},
}
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def copy_tree(dst: Path) -> None:
    """The repository's files (tracked, or untracked and not ignored), without pipeline results."""
    def listed(*which: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *which], cwd=REPO, capture_output=True, check=True).stdout
        return [os.fsdecode(n) for n in out.split(b"\0") if n]

    results = ("dvc.lock", "data/", "models/", "metrics/")
    for name in listed("--cached") + [n for n in listed("--others", "--exclude-standard")
                                      if not n.startswith(results)]:
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    for keep in ("data/raw/.gitignore", "data/converted/.gitignore", "data/augmented/.gitignore"):
        if (REPO / keep).is_file():
            shutil.copy2(REPO / keep, dst / keep)


def set_key(data: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value


def configure(clone: Path, dataset: str, overrides: dict[str, object]) -> None:
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["active"] = [dataset]
    source = params["datasets"][dataset]["source"]
    if source["kind"] == "local":
        source["path"] = str((REPO / source["path"]).resolve())
    for key, value in overrides.items():
        set_key(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def repro_env() -> dict[str, str]:
    """This interpreter's tools (dvc) first on PATH; no outside MLflow server."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def init_repo(clone: Path) -> None:
    """Make the copy a git repository with one commit (DVC and the run keys need one)."""
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c",
                                                                   "user.email=bench@localhost", "commit", "-qm", "x"]):
        subprocess.run(args, cwd=clone, check=True, capture_output=True)


def run_repro(clone: Path) -> tuple[float, dict[str, float], str]:
    init_repo(clone)
    return timed_repro(clone)


def timed_repro(clone: Path) -> tuple[float, dict[str, float], str]:
    """``dvc repro`` in ``clone`` (exits naming it when it fails); wall seconds in all and per stage, and its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=clone, env=repro_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    stages, current, since, log = {}, None, start, []
    for line in proc.stdout:
        log.append(line)
        match = STAGE_LINE.search(line)
        if match:
            now = time.perf_counter()
            if current:
                stages[current] = now - since
            current, since = match.group(1).split("@")[0], now
    if proc.wait() != 0:
        sys.exit(f"dvc repro failed in {clone}:\n{''.join(log[-60:])}")
    total = time.perf_counter() - start
    if current:
        stages[current] = time.perf_counter() - since
    return total, stages, "".join(log)


def fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    ci = "" if stat.get("ci_low") is None else f" [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"
    return f"**{stat['mean']:.3f}**{ci} (n={stat['n']})"


def measure(dataset: str, overrides: dict[str, object], keep: Path | None, commit: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / dataset
        copy_tree(clone)
        configure(clone, dataset, overrides)
        total, stages, _ = run_repro(clone)
        out = clone / "metrics" / "datasets" / dataset
        result = {"dataset": dataset, "commit": commit, "date": f"{datetime.now():%Y-%m-%d}",
                  "overrides": overrides, "seconds": total, "stages": stages,
                  "split_sides": split_sides(clone / "data" / "split" / f"{dataset}.csv"),
                  "eval": json.loads((out / "eval.json").read_text()),
                  "train": json.loads((out / "train.json").read_text()),
                  "plan": json.loads((clone / "data" / "plan" / f"{dataset}.json").read_text())}
        if keep is not None:
            shutil.copytree(out, keep / dataset, dirs_exist_ok=True)
    return result


def split_sides(path: Path) -> dict[str, int]:
    """How many patient groups the split put on one side (split and fold), and on more than one (a leak: must be 0)."""
    sides: dict[str, set[tuple[str, str | None]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["split"] != "unused":
                sides.setdefault(row["group"], set()).add((row["split"], row.get("fold")))
    return {"groups": len(sides), "groups_on_two_sides": sum(len(s) > 1 for s in sides.values())}


def protocol(plan: dict) -> str:
    split = plan["split"]
    if split.get("predefined") == "respect":
        return "the published train/valid/test split, each patient group kept whole"
    if split["folds"]:
        return f"{split['folds']}-fold group cross-validation, every image tested once"
    if split["test_groups"]:
        return f"published test groups `{split['test_groups']}`, validation drawn from the rest"
    return f"fixed group split (test {split['test']:.0%}, valid {split['valid']:.0%})"


def report(results: list[dict]) -> str:
    runs = sorted({(r["date"], r["commit"], json.dumps(r["overrides"])) for r in results})
    lines = ["# Real data: the default pipeline on real scans\n",
             f"{platform.machine()} ({cpu_model()}), {os.cpu_count()} cores, torch CPU. Command: "
             "`python benchmarks/real_data.py` (one dataset at a time: `--datasets <name>`). Measured: "
             + "; ".join(f"{date} at commit {commit}" + (f" with overrides {ov}" if ov != "{}" else
                                                          " (params.yaml as shipped)") for date, commit, ov in runs)
             + ".\n",
             "Each dataset runs alone through `dvc repro` in a fresh copy of the repository, with its profile's "
             "protocol; scores are per-image Dice at native resolution, pooled over all test images (with "
             "cross-validation: every image tested once, by the round that held it out), with a 95% bootstrap "
             "interval. The synthetic dataset is a smoke test of the pipeline, not evidence about real scans. The "
             "plan is the same on every machine; \"planned\" is its training time at the cost model's reference rates "
             "(`benchmarks/results/plan_calibration.md`), so the two times show how fast this CPU trains the plan.\n",
             "| dataset | protocol | scored | Dice [95% CI] | before | anchor | target | dvc repro | training |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = list(DATASETS)
    results = sorted(results, key=lambda r: order.index(r["dataset"]) if r["dataset"] in order else len(order))
    for r in results:
        meta = DATASETS[r["dataset"]]
        score = meta["score"] or "mean foreground"
        stat = r["eval"]["dice"].get(meta["score"]) if meta["score"] else {
            "mean": r["eval"]["mean_fg_dice"], "ci_low": None, "n": r["eval"]["n_test"]}
        target = "report" if meta["target"] is None else (
            f"≥ {meta['target']:.2f} " + ("met" if stat["mean"] is not None and stat["mean"] >= meta["target"]
                                          else f"missed by {meta['target'] - (stat['mean'] or 0):.3f}"))
        lines.append(f"| {r['dataset']} | {protocol(r['plan'])} | {score} | {fmt(stat)} | {meta['before']} | "
                     f"{meta['anchor']} | {target} | {r['seconds'] / 60:.1f} min | "
                     f"{r['train']['train_seconds']:.0f} s{planned_seconds(r['plan'])} |")
    lines += ["", "## What the plan chose\n"]
    for r in results:
        planned = {k: d["value"] for k, d in r["plan"]["decisions"].items()}
        binds = "the training budget binds" if r["plan"]["budget_binds"] else "the pass cap binds, not the budget"
        posts = {k: v.get("postprocess") for k, v in r["train"].items() if isinstance(v, dict) and "postprocess" in v}
        post = posts or {"model": r["train"].get("postprocess")}
        lines.append(f"- **{r['dataset']}**: {planned}; {binds}. Post-processing chosen on validation: {post}. "
                     f"Stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["stages"].items()) + "."
                     + (f" Split: {r['split_sides']['groups']} patient groups, "
                        f"{r['split_sides']['groups_on_two_sides']} on more than one side." if "split_sides" in r
                        else ""))
    return "\n".join(lines) + "\n"


def planned_seconds(plan: dict) -> str:
    planned = plan.get("planned_train_seconds")
    return "" if planned is None else f" (planned {planned:.0f} s)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML")
    parser.add_argument("--out", default=str(RESULTS / "real_data.md"))
    parser.add_argument("--store", default=str(RESULTS / "real_data"), help="one JSON per dataset measured")
    parser.add_argument("--keep", default=None, help="copy each dataset's metrics folder here")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the shared real-data samples")
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    keep = Path(args.keep) if args.keep else None
    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    for dataset in filter(None, args.datasets.split(",")):
        print(f"{dataset} ...", flush=True)
        r = measure(dataset, overrides, keep, commit)
        (store / f"{dataset}.json").write_text(json.dumps(r, indent=1) + "\n")
        print(json.dumps({"dataset": dataset, "minutes": round(r["seconds"] / 60, 1),
                          "dice": {k: v["mean"] for k, v in r["eval"]["dice"].items()}}), flush=True)
    text = report([json.loads(p.read_text()) for p in sorted(store.glob("*.json"))])
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
