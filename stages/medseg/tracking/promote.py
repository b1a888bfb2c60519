"""Gated promotion: a dataset's new model version takes the serving alias only when it scores better.

The candidate is the registered version of the run that records the result
on disk (``medseg.tracking.record.sync`` finds or creates it; a run logged
before models were registered gets its version now). Its score is
``eval.json``'s ``mlflow.promotion.metric`` and its test split the digest of
``data/split/<dataset>.csv`` (``record.split_digest``); the champion's are
its run's ``test.<metric>`` and ``test_split.digest`` tag. ``decide`` moves
the alias (``mlflow.promotion.alias``) when there is no champion yet, or
when the candidate beats it by more than ``mlflow.promotion.margin`` on the
same test split; scores on different test splits are never compared. Each
decision is written as a markdown job summary, with both numbers, to
``$GITHUB_STEP_SUMMARY`` when set, else to stdout.

Each dataset's ``Outcome`` (the candidate version and the alias holder
after the decision) can be kept in a JSON record (``write_record``), from
which ``tag_outcomes``, once the results are committed, writes the same
state as git tags for DVC's model registry (``medseg.tracking.gittags``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from medseg.config import Params
from medseg.config.tracking import PromotionConfig
from medseg.data import results
from medseg.data.split import read_split
from medseg.io import paths
from medseg.io.atomic import atomic_file
from medseg.io.errors import StageError

from . import gittags, record
from .registry import registered_name, version_of_run
from .run import Tracker
from .store import connect, find_repo_root, resolve_tracking_uri
from .values import evaluation_metric

log = logging.getLogger(__name__)

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@dataclass(frozen=True)
class Score:
    """A version's test score and the digest of the test split it was measured on."""

    version: str
    value: float
    split: str | None


@dataclass(frozen=True)
class Decision:
    promote: bool
    why: str


@dataclass(frozen=True)
class Outcome:
    """What a promotion left: ``dataset``'s candidate ``version`` and the version holding ``alias`` (or None)."""

    dataset: str
    version: str
    holder: str | None
    alias: str


def decide(candidate: Score, champion: Score | None, margin: float) -> Decision:
    """Whether ``candidate`` takes the alias from ``champion`` (None: nobody holds it)."""
    if champion is None:
        return Decision(True, "first model: no version holds the alias yet")
    if champion.version == candidate.version:
        return Decision(False, "this version already holds the alias")
    if champion.split is None or champion.split != candidate.split:
        return Decision(False, f"evaluated on different test splits (champion {champion.split}, "
                               f"candidate {candidate.split}): the scores are not comparable")
    if math.isnan(candidate.value):
        return Decision(False, "the candidate has no score (NaN)")
    if candidate.value > champion.value + margin:
        return Decision(True, f"beats the champion by {candidate.value - champion.value:.4f} > margin {margin}")
    return Decision(False, f"does not beat the champion by more than the margin {margin} "
                           f"(difference {candidate.value - champion.value:+.4f})")


def candidate_version(params: Params, dataset: str) -> str:
    """The registered version of the run that records ``dataset``'s result on disk, registered if need be."""
    run_id = record.sync(dataset, params)
    if run_id is None:
        raise StageError(f"MLflow store at {resolve_tracking_uri(params.mlflow, find_repo_root())} is unreachable: "
                         "nothing to promote")
    client = connect(resolve_tracking_uri(params.mlflow, find_repo_root()))
    version = version_of_run(client, registered_name(dataset), run_id)
    if version is None:  # a run logged before runs held models
        with Tracker.resume(params.mlflow, run_id, find_repo_root()) as tracker:
            for checkpoint in results.checkpoints(dataset):
                record.log_checkpoint(tracker, checkpoint)
        version = version_of_run(client, registered_name(dataset), run_id)
    if version is None:
        raise StageError(f"run {run_id} of {dataset}: its model could not be registered (see the warning above)")
    return version.version


def candidate_score(dataset: str, version: str, cfg: PromotionConfig) -> Score:
    metrics = results.read_evaluation(dataset)
    value = metrics.get(cfg.metric)
    if not isinstance(value, (int, float)):
        raise StageError(f"{paths.metrics_dir(dataset)}/eval.json: mlflow.promotion.metric {cfg.metric!r} is not a "
                         f"top-level number there (numbers: {sorted(k for k, v in metrics.items() if _number(v))})")
    return Score(version, float(value), record.split_digest(read_split(paths.split_file(dataset))))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def champion_score(client, name: str, cfg: PromotionConfig) -> Score | None:
    """The alias holder's score and split, from its run; ``None`` when no version holds the alias."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, cfg.alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    run = client.get_run(version.run_id)
    value = run.data.metrics.get(evaluation_metric(cfg.metric), math.nan)
    return Score(version.version, value, run.data.tags.get(record.SPLIT_TAG))


def promote(params: Params, dataset: str) -> Outcome:
    """Register ``dataset``'s result, move the alias if it wins, write the job summary; what it left."""
    cfg = params.mlflow.promotion
    candidate = candidate_score(dataset, candidate_version(params, dataset), cfg)
    client = connect(resolve_tracking_uri(params.mlflow, find_repo_root()))
    decision, champion = settle(client, registered_name(dataset), candidate, cfg)
    holder = candidate.version if decision.promote else champion.version if champion else None
    return Outcome(dataset, candidate.version, holder, cfg.alias)


def settle(client, name: str, candidate: Score, cfg: PromotionConfig) -> tuple[Decision, Score | None]:
    """Compare ``candidate`` with the alias holder of ``name``, move the alias if it wins, write the summary.

    The decision, and the champion it was compared with.
    """
    champion = champion_score(client, name, cfg)
    decision = decide(candidate, champion, cfg.margin)
    if decision.promote:
        client.set_registered_model_alias(name, cfg.alias, candidate.version)
    log.info("%s version %s %s @%s: %s", name, candidate.version, "takes" if decision.promote else "does not take",
             cfg.alias, decision.why)
    write_summary(summary(name, cfg, candidate, champion, decision))
    return decision, champion


# --------------------------------------------------------------------------- the record, and git tags from it
def write_record(path: Path, outcomes: list[Outcome]) -> None:
    with atomic_file(path) as fh:
        json.dump([vars(outcome) for outcome in outcomes], fh, indent=1)


def read_record(path: Path) -> list[Outcome]:
    """The outcomes ``write_record`` kept; ``StageError`` naming the file when it is not such a record."""
    try:
        return [Outcome(**item) for item in json.loads(Path(path).read_text())]
    except (OSError, ValueError, TypeError) as exc:
        raise StageError(f"{path}: not a promotion record written by stages/promote.py --record ({exc})") from exc


def tag_outcomes(root: Path, outcomes: list[Outcome], ref: str = "HEAD") -> list[str]:
    """Each outcome as DVC model registry tags (``gittags.mirror``) on ``ref``; the tags made, in the summary."""
    made = [tag for o in outcomes for tag in gittags.mirror(root, o.dataset, o.version, o.holder, o.alias, ref)]
    listed = ", ".join(f"`{tag}`" for tag in made) or "none (every version and stage was tagged already)"
    write_summary(f"### DVC model registry\n\nGit tags made: {listed}.\n")
    return made


def summary(name: str, cfg: PromotionConfig, candidate: Score, champion: Score | None, decision: Decision) -> str:
    verdict = f"version {candidate.version} **promoted** to `@{cfg.alias}`" if decision.promote else \
        f"version {candidate.version} **not promoted**; `@{cfg.alias}` stays on version {champion.version}" \
        if champion else f"version {candidate.version} **not promoted**"
    rows = [f"| candidate (version {candidate.version}) | {candidate.value:.4f} | `{candidate.split}` |"]
    if champion is not None:
        rows.append(f"| champion (version {champion.version}) | {champion.value:.4f} | `{champion.split}` |")
    return "\n".join([f"### Promotion of `{name}`", "", f"{verdict}: {decision.why}.", "",
                      f"| | test {cfg.metric} | test split digest |", "|---|---|---|", *rows, ""]) + "\n"


def write_summary(text: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when set (a CI job's summary), else print to stdout."""
    target = os.environ.get(SUMMARY_ENV)
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
