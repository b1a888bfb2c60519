#!/usr/bin/env bash
# Retraining: pull the DVC cache from the remote, `dvc repro`, push the cache
# back, register each dataset's new model and promote it to @champion only if
# it scores better (mlflow.promotion in params.yaml), commit dvc.lock and the
# git-tracked results to a branch, tag that commit for DVC's model registry
# (<dataset>@v<N>.0.0 = registered version N, <dataset>#champion#<k> when the
# alias moved), and write the metrics diff against the starting commit into
# the job summary.
#
# Usage: .ci/retrain.sh            (in a clean checkout of the commit to retrain)
#   RETRAIN_BRANCH   branch the results are committed to (default: retrain),
#                    recreated from the starting commit on every run
#   PUSH_BRANCH      1: force-push that branch, and push the new tags, to origin (default: 0)
#   DVC_REMOTE_URL   set: becomes the default remote `ci`, in .dvc/config.local
#                    (never committed); unset: the default remote of .dvc/config
#   GCS_CREDENTIALS_JSON  content of a GCP service-account key (gs:// remotes)
#   DVC_SSH_KEY           content of a private key (ssh:// remotes)
#                    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are read by dvc-s3 itself
#   MLFLOW_TRACKING_URI  the MLflow server holding the registry (unset: mlflow.tracking_uri,
#                    else the sqlite file in the checkout, which a CI job would throw away)
#   GITHUB_STEP_SUMMARY  file the report is appended to; unset: stdout
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

branch=${RETRAIN_BRANCH:-retrain}
start=$(git rev-parse --short HEAD)

# Key files live outside the work tree, readable by this user only.
secret_file() {
    local file
    file=$(mktemp "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/dvc-credential.XXXXXX")
    chmod 600 "$file"
    printf '%s\n' "$1" >"$file"
    echo "$file"
}

# requirements.txt pins plain dvc; a cloud remote needs the matching extra,
# at the same dvc version.
install_remote_plugin() {
    local extra
    case $1 in
        s3://*) extra=s3 ;;
        gs://*) extra=gs ;;
        ssh://*) extra=ssh ;;
        azure://*) extra=azure ;;
        *) return 0 ;;
    esac
    pip install --disable-pip-version-check -q "dvc[$extra]==$(python -c 'import dvc; print(dvc.__version__)')"
}

if [[ -n ${DVC_REMOTE_URL:-} ]]; then
    install_remote_plugin "$DVC_REMOTE_URL"
    dvc remote add --local --force --default ci "$DVC_REMOTE_URL"
    if [[ -n ${GCS_CREDENTIALS_JSON:-} ]]; then
        dvc remote modify --local ci credentialpath "$(secret_file "$GCS_CREDENTIALS_JSON")"
    fi
    if [[ -n ${DVC_SSH_KEY:-} ]]; then
        dvc remote modify --local ci keyfile "$(secret_file "$DVC_SSH_KEY")"
    fi
fi
if [[ -z $(dvc config core.remote 2>/dev/null) ]]; then
    echo "No default DVC remote: set DVC_REMOTE_URL or run 'dvc remote add -d NAME URL'." >&2
    exit 1
fi

# --allow-missing: on the first run the remote is empty (or lacks what a stale
# dvc.lock names); repro then builds what is missing. --run-cache and
# `repro --pull`: a stage whose deps and params match an earlier run is
# restored from the remote, not rerun, also when this commit has no dvc.lock.
dvc pull --run-cache --allow-missing
dvc repro --pull
dvc push --run-cache

# Gated promotion, while HEAD is still the commit the results come from (the
# run key holds it): each active dataset's model becomes a registered version,
# and takes @champion only if it beats the current one (stages/promote.py;
# the reasons, with both scores, go into the job summary). The record of what
# it decided becomes git tags once the results are committed.
record=$(mktemp "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/promotion.XXXXXX")
python stages/promote.py --record "$record"

# Git-tracked results: dvc.lock, the outputs with `cache: false` (split
# tables, metrics, plots), and the .gitignore files DVC keeps beside cached ones.
listed=$(python - <<'PY'
import os

from dvc.repo import Repo

with Repo(".") as repo:
    paths = {"dvc.lock"}
    for stage in repo.index.stages:
        for out in stage.outs:
            path = os.path.relpath(out.fs_path, repo.root_dir)
            paths.add(os.path.join(os.path.dirname(path), ".gitignore") if out.use_cache else path)
print("\n".join(sorted(p for p in paths if os.path.exists(p))))
PY
)
mapfile -t results <<<"$listed"
git checkout -B "$branch"
git add -- "${results[@]}"
if git diff --cached --quiet; then
    committed="Nothing changed: \`$branch\` is \`$start\` itself."
else
    git commit -q -m "Retrain $start: dvc.lock and metrics"
    committed="Committed \`$(git rev-parse --short HEAD)\` to \`$branch\`."
fi
# DVC's model registry: `dvc artifacts get REPO <dataset> --rev v<N>.0.0` or
# `--stage champion` downloads the model of the tagged commit. The tags must
# count on from origin's (fetched first), and keep the results commit alive
# when the branch is rebuilt.
if [[ ${PUSH_BRANCH:-0} == 1 ]]; then
    git fetch -q --tags origin
fi
tags_before=$(git tag --list | sort)
python stages/promote.py --tag "$record"
rm -f "$record"
mapfile -t new_tags < <(comm -13 <(echo "$tags_before") <(git tag --list | sort))
if [[ ${PUSH_BRANCH:-0} == 1 ]]; then
    # The branch is rebuilt from the starting commit each run: replace it.
    git push --force origin "$branch"
    if ((${#new_tags[@]})); then
        git push origin "${new_tags[@]/#/refs/tags/}"
    fi
fi

{
    echo "## Retraining of \`$start\`"
    echo
    echo "$committed DVC cache pushed to remote \`$(dvc config core.remote)\`."
    echo
    echo "### Metrics: \`$start\` → \`$branch\`"
    echo
    metrics_diff_md "$start" HEAD
    echo
} | summary
