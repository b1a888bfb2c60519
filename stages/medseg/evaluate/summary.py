"""The compare stage's work: one summary of every active dataset's results.

Reads each dataset's ``eval.json`` and ``train.json`` (``medseg.data.results``)
and its converted ``report.json``; writes ``metrics/summary.json`` (keyed by
dataset), ``summary.md`` (Dice, IoU, HD95 per class and the mean foreground
Dice, with 95% intervals over patient groups and the images and groups each
rests on, dataset sizes, training time; cross-validation means; for datasets sliced from
CT volumes the per-volume 3D Dice and HD95 in mm beside the slice Dice), ``summary_dice.csv``
(data for ``dvc plots``) and ``summary.png`` (a bar chart of Dice with
intervals).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from medseg.data import results  # noqa: E402
from medseg.data.converted import ConvertedDataset  # noqa: E402
from medseg.io import paths  # noqa: E402
from medseg.io.atomic import atomic_file  # noqa: E402
from medseg.io.tables import write_csv, write_json  # noqa: E402


def collect(dataset: str) -> dict:
    """One dataset's entry in ``summary.json``: test scores, dataset size, training time."""
    evaluation = results.read_evaluation(dataset)
    training = results.read_training(dataset)
    report = ConvertedDataset(paths.converted_dir(dataset)).report
    entry = {"images": report["count"], "groups": report["groups"], "n_test": evaluation["n_test"],
             "n_test_groups": evaluation["n_test_groups"], "mean_fg_dice": evaluation["mean_fg_dice"],
             "mean_fg_dice_ci": evaluation["mean_fg_dice_ci"], "train_seconds": training["train_seconds"],
             "epochs_run": training["epochs_run"]}
    for metric in ("dice", "iou", "hd95"):
        entry[metric] = {cls: {k: stat[k] for k in ("mean", "ci_low", "ci_high", "n", "n_groups")}
                         for cls, stat in evaluation[metric].items()}
    if "cv" in evaluation:
        entry["cv"] = evaluation["cv"]
    if "volumes" in evaluation:
        entry["volumes"] = _volumes(evaluation["volumes"])
    return entry


def _volumes(scores: dict) -> dict:
    """The per-volume part of an entry: counts, Dice and HD95 (mm) per class, volumes that missed a class."""
    out = {k: scores[k] for k in ("n_volumes", "slices_scored", "slices_in_volumes", "mean_fg_dice", "missed")}
    for metric in ("dice", "hd95_mm"):
        out[metric] = {cls: {k: stat[k] for k in ("mean", "ci_low", "ci_high", "n", "n_groups")}
                       for cls, stat in scores[metric].items()}
    return out


def _fmt(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    ci = "" if stat["ci_low"] is None else f" [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"
    return f"{stat['mean']:.{digits}f}{ci}"


def markdown(summary: dict) -> str:
    """``summary.md``: one table over datasets and classes, and the cross-validation means."""
    lines = ["# Results by dataset", "",
             "Intervals resample whole patient groups; each rests on the images and groups scored.", "",
             "| dataset | class | Dice [95% CI] | IoU [95% CI] | HD95 px [95% CI] | images scored | groups scored "
             "| dataset images | test images | training s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in summary.items():
        rows = [(cls, e["dice"][cls], _fmt(e["iou"][cls]), _fmt(e["hd95"][cls], 1)) for cls in e["dice"]]
        fg = e["mean_fg_dice_ci"]
        rows.append(("mean foreground", {**fg, "n": fg["n_images"]}, "-", "-"))
        for cls, dice, iou, hd in rows:
            lines.append(f"| {name} | {cls} | {_fmt(dice)} | {iou} | {hd} | {dice['n']} | {dice['n_groups']} | "
                         f"{e['images']} | {e['n_test']} | {e['train_seconds']:.0f} |")
    lines += _volume_lines(summary)
    cv = {n: e["cv"] for n, e in summary.items() if "cv" in e}
    if cv:
        lines += ["", "Cross-validation (mean ± std of per-fold means):", "",
                  "| dataset | folds | class | Dice |", "|---|---|---|---|"]
        for name, c in cv.items():
            for cls, s in c["dice"].items():
                lines.append(f"| {name} | {c['folds']} | {cls} | {s['mean']:.3f} ± {s['std']:.3f} |")
    return "\n".join(lines) + "\n"


def _volume_lines(summary: dict) -> list[str]:
    """The per-volume table, with each class's slice Dice beside its volume scores; empty without volumes."""
    volumes = {n: e for n, e in summary.items() if "volumes" in e}
    if not volumes:
        return []
    lines = ["", "Per volume (test slices stacked back into their volumes, 3D; HD95 in mm over the volumes where "
             "truth and prediction both hold the class):", "",
             "| dataset | class | slice Dice | volume Dice [95% CI] | volume HD95 mm [95% CI] | volumes | missed "
             "| slices scored / in volumes |", "|---|---|---|---|---|---|---|---|"]
    for name, e in volumes.items():
        v = e["volumes"]
        for cls in v["dice"]:
            lines.append(f"| {name} | {cls} | {_fmt(e['dice'][cls])} | {_fmt(v['dice'][cls])} | "
                         f"{_fmt(v['hd95_mm'][cls], 1)} | {v['dice'][cls]['n']} | {v['missed'][cls]} | "
                         f"{v['slices_scored']} / {v['slices_in_volumes']} |")
    return lines


def dice_table(summary: dict) -> pd.DataFrame:
    """``summary_dice.csv``, the data of ``dvc plots``' bar chart."""
    rows = [{"label": f"{name} / {cls}", "dataset": name, "class": cls, "dice": s["mean"], "ci_low": s["ci_low"],
             "ci_high": s["ci_high"]}
            for name, e in summary.items() for cls, s in e["dice"].items() if s["mean"] is not None]
    return pd.DataFrame(rows, columns=["label", "dataset", "class", "dice", "ci_low", "ci_high"])


def bar_chart(table: pd.DataFrame, path: Path) -> None:
    """Horizontal bars of test Dice with their 95% intervals, one per dataset and class."""
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(table), 3) + 1))
    y = range(len(table))
    low, high = table["ci_low"].fillna(table["dice"]), table["ci_high"].fillna(table["dice"])
    err = [table["dice"] - low, high - table["dice"]]
    ax.barh(list(y), table["dice"], xerr=err, color="#4C78A8", capsize=3)
    ax.set_yticks(list(y), table["label"])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("test Dice (mean, 95% bootstrap interval)")
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def write_summary(datasets: list[str]) -> dict:
    """Summarise ``datasets`` into the four summary files; return ``summary.json``'s content."""
    summary = {name: collect(name) for name in datasets}
    write_json(paths.SUMMARY_JSON, summary)
    with atomic_file(paths.SUMMARY_MD) as fh:
        fh.write(markdown(summary))
    table = dice_table(summary)
    write_csv(paths.SUMMARY_DICE_CSV, table)
    bar_chart(table, paths.SUMMARY_PNG)
    return summary
