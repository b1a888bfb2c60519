# shellcheck shell=bash
# Shared by the CI scripts (sourced, not run): the job summary and the
# metrics/params diffs written into it.

# Append stdin to the job summary: $GITHUB_STEP_SUMMARY on GitHub Actions,
# stdout elsewhere.
summary() {
    if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
        cat >>"$GITHUB_STEP_SUMMARY"
    else
        cat
    fi
}

# True when $1 names a commit in this clone.
is_commit() {
    git rev-parse -q --verify "$1^{commit}" >/dev/null
}

# Markdown: `dvc metrics diff` from commit $1 to $2 (a commit; absent: the
# work tree). A base without committed metrics (no dvc.lock yet, or metrics
# never committed) gets a line saying so above the table of new values; a
# base that is not a commit here gets a line, not a failure.
metrics_diff_md() {
    local base=$1 state
    local -a revs=("$1")
    [[ -n ${2:-} ]] && revs+=("$2")
    if ! is_commit "$base"; then
        echo "Base \`$base\` is not a commit in this clone, so there is no metrics diff (fetch it first)."
        return
    fi
    state=$(dvc metrics diff "${revs[@]}" --all --json 2>/dev/null | python -c '
import json, sys
rows = [row for rows in json.load(sys.stdin).values() for row in rows.values()]
if all(row.get("old") == row.get("new") for row in rows):  # also: same commit, no rows at all
    print("same")
elif not any(row.get("old") is not None for row in rows):
    print("no-base")
else:
    print("changed")')
    case $state in
        same) echo "No metric changed against \`$base\`." ;;
        no-base)
            echo "Base \`$base\` has no committed metrics yet; the metrics of this run:"
            echo
            # stderr: DVC's warning that the base has no metrics, said above.
            dvc metrics diff "${revs[@]}" --all --md 2>/dev/null ;;
        *) dvc metrics diff "${revs[@]}" --md ;;
    esac
}

# Markdown: `dvc params diff` from commit $1 to $2 (absent: the work tree).
params_diff_md() {
    local base=$1
    local -a revs=("$1")
    [[ -n ${2:-} ]] && revs+=("$2")
    if ! is_commit "$base"; then
        echo "Base \`$base\` is not a commit in this clone, so there is no params diff (fetch it first)."
        return
    fi
    if [[ $(dvc params diff "${revs[@]}" --json) == "{}" ]]; then
        echo "No parameter changed against \`$base\`."
    else
        dvc params diff "${revs[@]}" --md
    fi
}
