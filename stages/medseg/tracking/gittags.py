"""DVC's model registry in git: annotated tags that name a registered version and the stage it holds.

``dvc artifacts get REPO <dataset> --rev v<N>.0.0`` and ``--stage <stage>``
find the commit to download ``dvc.yaml``'s artifact ``<dataset>`` from by
git tags in GTO's format (DVC parses them with GTO), which this module writes:

- ``<dataset>@v<N>.0.0`` (``version_tag``): version N of MLflow's
  ``medseg-<dataset>``, on the commit whose ``dvc.lock`` holds that model.
  GTO takes semantic versions only, so N is the major part and the two
  registries count alike: ``synthetic@v3.0.0`` is ``medseg-synthetic`` version 3;
- ``<dataset>#<stage>#<k>`` (``stage_tag``): the k-th time the stage (the
  MLflow alias, ``champion``) was given to a version, on that version's
  commit. DVC serves the newest such tag by tag time; ``k`` counts up from 1.

``mirror`` makes the tags say what the registry says after a promotion: it
tags the candidate version on ``ref`` (once: a version tag never moves, and
one found on another commit is a warning: the registry has restarted its
count) and,
when the alias holder is not the version the newest stage tag points at,
adds a stage tag on the holder's commit. Tags are made locally; pushing
them (``git push origin <tag>``) is the caller's step (``.ci/retrain.sh``).
"""
from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from medseg.io.errors import StageError

log = logging.getLogger(__name__)

# GTO's artifact name and stage name (gto.constants.name_re, without folders).
_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?$")


def version_tag(dataset: str, version: str | int) -> str:
    """``synthetic``, 3 -> ``synthetic@v3.0.0``."""
    _check_name(dataset, "dataset")
    if not str(version).isdigit():
        raise StageError(f"model version {version!r} is not a whole number: it cannot become a git tag")
    return f"{dataset}@v{int(version)}.0.0"


def stage_tag(dataset: str, stage: str, counter: int) -> str:
    """``synthetic``, ``champion``, 2 -> ``synthetic#champion#2``."""
    _check_name(dataset, "dataset")
    _check_name(stage, "stage (mlflow.promotion.alias)")
    return f"{dataset}#{stage}#{counter}"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise StageError(f"{what} {name!r} cannot name a DVC model registry tag: letters, digits, '-', '_' and '/' "
                         "only, starting and ending with a letter or digit")


def tag_commit(root: Path, tag: str) -> str | None:
    """The commit ``tag`` points at, ``None`` when there is no such tag."""
    done = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"], cwd=root,
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else None


def stage_tags(root: Path, dataset: str, stage: str) -> dict[int, str]:
    """``{k: commit}`` of every ``<dataset>#<stage>#<k>`` tag."""
    pattern = re.compile(re.escape(f"{dataset}#{stage}#") + r"(\d+)$")
    names = _git(root, "tag", "--list", f"{dataset}#{stage}#*").splitlines()
    return {int(m.group(1)): tag_commit(root, name) for name in names if (m := pattern.match(name))}


def create(root: Path, tag: str, ref: str, message: str) -> None:
    """An annotated tag ``tag`` on ``ref`` (GTO ignores lightweight tags)."""
    _git(root, "tag", "-a", tag, "-m", message, f"{ref}^{{commit}}")
    log.info("git tag %s on %s", tag, _git(root, "rev-parse", "--short", f"{ref}^{{commit}}"))


def mirror(root: Path, dataset: str, version: str, holder: str | None, stage: str, ref: str = "HEAD") -> list[str]:
    """Tag ``version`` on ``ref`` unless tagged already, and give ``stage`` to ``holder``'s commit; the tags made.

    ``holder`` is the version holding the alias (``None``: none does). A
    holder without a version tag (registered before versions were tagged)
    gets no stage tag: there is no commit to point it at.
    """
    made = []
    tag = version_tag(dataset, version)
    tagged = tag_commit(root, tag)
    if tagged is None:
        create(root, tag, ref, f"{dataset}: version {version} of the registered model medseg-{dataset}")
        made.append(tag)
    elif tagged != _git(root, "rev-parse", f"{ref}^{{commit}}"):
        log.warning("%s is already on commit %s, not on %s: the MLflow registry counts versions anew (a store "
                    "thrown away after each job?), so the tag stays where it is; point MLFLOW_TRACKING_URI at a "
                    "lasting server", tag, tagged[:12], ref)
    if holder is None:
        return made
    target = tag_commit(root, version_tag(dataset, holder))
    if target is None:
        log.warning("%s: %s holds @%s but has no git tag: no stage tag made", dataset,
                    version_tag(dataset, holder), stage)
        return made
    assigned = stage_tags(root, dataset, stage)
    if assigned and assigned[max(assigned)] == target:
        return made
    tag = stage_tag(dataset, stage, max(assigned, default=0) + 1)
    create(root, tag, target, f"{dataset}: version {holder} takes the stage {stage}")
    made.append(tag)
    return made


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True)
    except subprocess.CalledProcessError as exc:
        raise StageError(f"git {' '.join(args)} failed in {root}: {exc.stderr.strip()}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StageError(f"git {' '.join(args)} failed in {root}: {exc}") from exc
    return done.stdout.strip()
