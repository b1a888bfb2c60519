#!/usr/bin/env bash
# CI pipeline check: run the whole pipeline on the default dataset with a
# small config, then write `dvc metrics diff` and `dvc params diff` against
# the base into the job summary.
#
# Usage: .ci/pipeline_check.sh [KEY=VALUE ...]
#   KEY=VALUE      extra overrides on top of SMALL_CONFIG below (VALUE is YAML)
#   BASE_REF       commit to compare with (e.g. origin/main); unset, empty or
#                  all zeros (a push that created a branch): origin/$DEFAULT_BRANCH
#   DEFAULT_BRANCH default: main
#   GITHUB_STEP_SUMMARY  file the report is appended to; unset: stdout
#
# It rewrites params.yaml in the work tree (comments dropped): run it in CI
# or in a throwaway clone, not in the clone you work in.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

# Small enough for a CI runner in about a minute, large enough to exercise
# every stage and every class. Each key must already exist in params.yaml,
# so a renamed parameter fails here instead of being silently ignored.
SMALL_CONFIG=(
    "active=[synthetic]"
    "datasets.synthetic.source.counts={Benign: 4, Malignant: 4, Normal: 4}"
    "datasets.synthetic.source.height=96"
    "datasets.synthetic.source.width=128"
    "augment.copies=1"
    "augment.size=[64, 64]"
    "augment.shard_size=10"
    "train.epochs=2"
    "train.steps_per_epoch=12"
    "train.batch_size=4"
    "train.preview_images=1"
    "train.model.base_filters=4"
    "train.model.depth=2"
    "evaluate.bootstrap=20"
    "evaluate.overlays=1"
)

base=${BASE_REF:-}
if [[ -z $base || $base =~ ^0+$ ]]; then
    base="origin/${DEFAULT_BRANCH:-main}"
fi

python - "${SMALL_CONFIG[@]}" "$@" <<'PY'
import sys

import yaml

with open("params.yaml") as f:
    params = yaml.safe_load(f)
for override in sys.argv[1:]:
    key, sep, value = override.partition("=")
    if not sep:
        sys.exit(f"override {override!r} is not KEY=VALUE")
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        sys.exit(f"override {override!r}: params.yaml has no key {key!r}")
    node[leaf] = yaml.safe_load(value)
with open("params.yaml", "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
PY

dvc repro

{
    echo "## Pipeline check: \`dvc repro\` on a small config"
    echo
    echo "Overrides of the committed \`params.yaml\` for this run:"
    # shellcheck disable=SC2016  # the backquotes are markdown
    printf -- '- `%s`\n' "${SMALL_CONFIG[@]}" "$@"
    echo
    echo "### Metrics: \`$base\` → this run"
    echo
    metrics_diff_md "$base"
    echo
    echo "### Params: \`$base\` → this run"
    echo
    params_diff_md "$base"
    echo
} | summary
