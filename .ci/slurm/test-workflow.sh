#!/usr/bin/env bash
# test-workflow.sh -- CI for issue #6: the tiny .test workflow on a real one-node SLURM cluster.
#
# Usage (as root on Debian 12, from anywhere; needs the project's venv active, or
# snakemake + snakemake-executor-plugin-slurm + latentwire on PATH):
#   bash .ci/slurm/test-workflow.sh
#
# Phases (each prints its elapsed time):
#   cluster   start slurmctld/slurmd/munge/slurmdbd+MariaDB (start-local-slurm.sh), fake GPUs
#   fail      full run through `--profile profiles/slurm` with one baseline job made to fail
#             (fault injection): expect exit != 0, the failed job's log path and SLURM state
#             in the output, one retry, and every independent job finished
#   resume    rerun without the fault: only the failed job and the aggregate table are
#             submitted (rerun continues from what finished); the workflow is then complete
#   ablation  change one ablation setting (.test baselines.budgets [8, 16] -> [8, 12]):
#             the dry run and the real run (checked in sacct) submit only the new budget's
#             baseline jobs and the aggregate table; then change one latent experiment's setting
#             (.test meanpool's train.lr): only its stage_a, stage_b and stage_c jobs and the
#             aggregates (results_table, stats_tables, sweep_tables, table_figures)
#   report    snakemake --report
# Job ids printed by Snakemake are checked against sacct (real sbatch jobs).
#
# Only CI settings are given on the command line; profiles/slurm is used unchanged:
#   LATENTWIRE_SLURM_ACCOUNT / LATENTWIRE_SLURM_PARTITION  (the local cluster's account/partition)
#   --slurm-init-seconds-before-status-checks               (plugin default 40 s; CI: 5 s)
#
# Knobs: LW_SLURM_WORK (work dir, default: fresh mktemp), LW_SLURM_STATUS_WAIT (default 5),
#        LW_SLURM_VERBOSE=1 (stream Snakemake's full output), LW_SLURM_BUDGET_S (default 600:
#        warn when the whole script takes longer).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${LW_SLURM_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/lw-slurm.XXXXXX")}
WF=$WORK/wf                 # the workflow's working directory (copy of .test)
LOGS=$WORK/logs             # Snakemake output of each phase
STATUS_WAIT=${LW_SLURM_STATUS_WAIT:-5}
BUDGET_S=${LW_SLURM_BUDGET_S:-600}
FAIL_JOB="baseline tiny-qwen2 budget-16"                     # words the injected fault matches
FAIL_COMMENT="rule_baseline_wildcards_squad_tiny-qwen2_budget-16"
FAIL_LOG="logs/baselines/squad/tiny-qwen2/budget-16.log"
NEW_BUDGET=12
# the .test meanpool run's stage wildcards (dataset, encoder, M, d_z, head, preset, seed), as the
# plugin's job comment joins them (latentwire.plan.paths.LATENT: .../meanpool/M6-dz16/shallow/meanpool/seed0)
MEANPOOL_JOB="squad_meanpool_6_16_shallow_meanpool_0"

T0=$SECONDS; TP=$SECONDS; PHASE=setup; PHASE_START=$(date +%Y-%m-%dT%H:%M:%S); RUN_START=$PHASE_START
TIMES=()
phase() { # phase NAME: close the previous phase, start the next
    if [ "$PHASE" != setup ]; then TIMES+=("$PHASE $((SECONDS - TP))s"); fi
    PHASE=$1; TP=$SECONDS; PHASE_START=$(date +%Y-%m-%dT%H:%M:%S)
    echo; echo "=== [$((SECONDS - T0))s] phase: $1"
}
ok() { echo "  ok: $*"; }
die() {
    echo "FAILED (phase $PHASE): $*" >&2
    echo "--- work dir: $WORK" >&2
    exit 1
}
trap 'rc=$?; [ $rc = 0 ] || { echo "--- $PHASE failed after $((SECONDS - T0))s; logs in $LOGS" >&2; tail -n 30 /var/log/slurm/slurmctld.log 2>/dev/null >&2 || true; }' EXIT

mkdir -p "$WF" "$LOGS"
cd "$REPO"
command -v snakemake >/dev/null || die "snakemake not on PATH (activate the venv)"
python3 -c 'import snakemake_executor_plugin_slurm' 2>/dev/null \
    || die "snakemake-executor-plugin-slurm missing: pip install snakemake-executor-plugin-slurm"
REAL_LATENTWIRE=$(command -v latentwire) || die "latentwire CLI not on PATH (pip install -e .)"

# Snakemake, as a user would call it, plus the CI-only settings.
SM=(env LATENTWIRE_SLURM_ACCOUNT=ci LATENTWIRE_SLURM_PARTITION=debug
    snakemake -s workflow/Snakefile --directory "$WF" --profile profiles/slurm
    --slurm-init-seconds-before-status-checks "$STATUS_WAIT")

# run_sm LOGNAME ARGS...: run Snakemake, keep its output in $LOGS/LOGNAME.log, return its exit code
run_sm() {
    local name=$1 rc=0; shift
    if [ "${LW_SLURM_VERBOSE:-0}" = 1 ]; then
        "${SM[@]}" "$@" 2>&1 | tee "$LOGS/$name.log" || rc=$?
    else
        "${SM[@]}" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
    fi
    return $rc
}

# submitted_ids LOGNAME: SLURM job ids that Snakemake reports as submitted
submitted_ids() {
    sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\) (log: .*/\1/p' "$LOGS/$1.log"
}

# slurm_jobs LOGNAME: check the phase's job ids in sacct (slurmdbd) and print one line per job:
# "<comment>" (the plugin's rule_<rule>_wildcards_<values>) -- also writes $LOGS/LOGNAME.sacct
slurm_jobs() {
    local ids n m
    ids=$(submitted_ids "$1" | paste -sd, -)
    [ -n "$ids" ] || die "no 'submitted with SLURM jobid' lines in $LOGS/$1.log"
    n=$(tr ',' '\n' <<<"$ids" | wc -l)
    # jobs reach slurmdbd a moment after they end; the plugin already saw them all in sacct
    # (-S: ignore older jobs with the same ids, should the cluster's job ids have restarted)
    sacct -X -n -P -j "$ids" -S "$PHASE_START" -o JobID,State,Comment >"$LOGS/$1.sacct"
    m=$(wc -l <"$LOGS/$1.sacct")
    [ "$n" = "$m" ] || die "Snakemake reported $n SLURM job ids, sacct knows $m: $ids"
    cut -d'|' -f3 "$LOGS/$1.sacct"
}

# dry_run_jobs LOGNAME: jobs a dry run would submit, in the same "rule_<rule>_wildcards_<values>" form
dry_run_jobs() {
    python3 - "$LOGS/$1.log" <<'EOF'
import re, sys
jobs, rule, wc = [], None, ""
def flush():
    if rule and rule != "all":
        jobs.append(f"rule_{rule}_wildcards_{wc}" if wc else f"rule_{rule}")
for line in open(sys.argv[1]):
    m = re.match(r"^(?:local)?rule (\S+):$", line.strip())
    if m:
        flush(); rule, wc = m.group(1), ""
    elif rule and line.strip().startswith("wildcards:"):
        vals = [kv.split("=", 1)[1] for kv in line.strip()[len("wildcards:"):].split(", ")]
        wc = "_".join(vals).replace("/", "_")
flush()
print("\n".join(jobs))
EOF
}

# expect_only NAME JOBS ALLOWED_REGEX: every job matches the regex (ERE, whole line)
expect_only() {
    local name=$1 jobs=$2 re=$3 bad
    bad=$(grep -Evx "$re" <<<"$jobs" || true)
    [ -z "$bad" ] || die "$name: unexpected jobs submitted:"$'\n'"$bad"$'\n'"all jobs:"$'\n'"$jobs"
}

# ---------------------------------------------------------------------------------------------
phase cluster
# One node big enough for a whole DAG level of the tiny workflow at the profile's real requests
# (10 GPU jobs x 4 CPUs / 32-64 GB); nothing is enforced, the jobs share the machine's cores.
SLURM_NODE_CPUS=${SLURM_NODE_CPUS:-64} SLURM_NODE_MEM_MB=${SLURM_NODE_MEM_MB:-1000000} \
    SLURM_FAKE_GPUS=${SLURM_FAKE_GPUS:-16} bash "$HERE/start-local-slurm.sh" start
sinfo -N -o '%N %c %m %G %T'
snakemake --version | sed 's/^/  snakemake /'
python3 -c 'import importlib.metadata as m; print("  snakemake-executor-plugin-slurm", m.version("snakemake-executor-plugin-slurm"))'

# A fresh copy of the .test scenario's inputs (tracked + untracked, not ignored outputs).
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO/.test" && git ls-files -z --cached --others --exclude-standard . \
        | xargs -0 -I{} cp --parents -a {} "$WF/")
else
    cp -a "$REPO/.test/." "$WF/"
    (cd "$WF" && rm -rf results logs benchmarks resources .snakemake report.html)
fi
grep -q '^  budgets: \[8, 16\]$' "$WF/config/config.yaml" \
    || die ".test/config/config.yaml no longer has '  budgets: [8, 16]'; update this script"
grep -q '^    meanpool: {}$' "$WF/config/config.yaml" \
    || die ".test/config/config.yaml no longer has '    meanpool: {}'; update this script"
ok "workflow copy in $WF"

# ---------------------------------------------------------------------------------------------
phase fail
# Fault injection: a `latentwire` shim ahead of the real CLI on PATH fails the one job whose
# command line contains every word of $LATENTWIRE_CI_FAIL (sbatch --export=ALL carries both into
# the job). Every other job runs the real CLI.
mkdir -p "$WORK/faultbin"
cat >"$WORK/faultbin/latentwire" <<EOF
#!/bin/sh
for w in \${LATENTWIRE_CI_FAIL:-}; do
    case " \$* " in *"\$w"*) ;; *) exec "$REAL_LATENTWIRE" "\$@" ;; esac
done
[ -z "\${LATENTWIRE_CI_FAIL:-}" ] && exec "$REAL_LATENTWIRE" "\$@"
echo "latentwire: injected CI failure (LATENTWIRE_CI_FAIL='\$LATENTWIRE_CI_FAIL') in SLURM job \${SLURM_JOB_ID:-?}" >&2
exit 3
EOF
chmod +x "$WORK/faultbin/latentwire"
rc=0
PATH="$WORK/faultbin:$PATH" LATENTWIRE_CI_FAIL="$FAIL_JOB" run_sm fail || rc=$?
grep -E 'has been submitted with SLURM jobid' "$LOGS/fail.log" | sed 's/^/  /'
[ "$rc" != 0 ] || die "snakemake exited 0 although a job was made to fail"
ok "snakemake exited $rc"
grep -q "SLURM status is: 'FAILED'" "$LOGS/fail.log" || die "no SLURM state 'FAILED' in the output"
grep -q "$FAIL_LOG" "$LOGS/fail.log" || die "the failed job's log path $FAIL_LOG is not in the output"
grep -q "slurm_logs/rule_baseline/squad_tiny-qwen2_budget-16/" "$LOGS/fail.log" \
    || die "the failed job's SLURM log path is not in the output"
grep -q "injected CI failure" "$LOGS/fail.log" || die "the failed job's log content is not shown"
echo "  --- what a user sees:"
# the error block(s) Snakemake prints for the failed job, and the shown log contents
awk '/^Error in rule/ || /^Logfile / {p=1} p && /^$/ {p=0} p && n < 30 {n++; print "  | " substr($0, 1, 200)}' \
    "$LOGS/fail.log"
ok "failure shows the rule log path, the SLURM log path and SLURM state FAILED"
jobs=$(slurm_jobs fail)
attempts=$(grep -cx "$FAIL_COMMENT" <<<"$jobs" || true)
[ "$attempts" -ge 2 ] || die "expected the failed job to be retried (retries: 1), got $attempts attempt(s)"
ok "the failed job ran $attempts times in SLURM (retries: 1): $(grep "|$FAIL_COMMENT$" "$LOGS/fail.sacct" | cut -d'|' -f1,2 | paste -sd' ' -)"
n_fail=$(submitted_ids fail | wc -l)
ok "$n_fail sbatch jobs, all in sacct: $(submitted_ids fail | paste -sd' ' -)"
notdone=$(grep -v "|$FAIL_COMMENT\$" "$LOGS/fail.sacct" | grep -v '|COMPLETED|' || true)
[ -z "$notdone" ] || die "jobs other than the failed one did not complete:"$'\n'"$notdone"
[ ! -e "$WF/results/baselines/squad/tiny-qwen2/budget-16/metrics.json" ] || die "the failed job left its output"
ok "all independent jobs finished (keep-going)"

# ---------------------------------------------------------------------------------------------
phase resume
run_sm resume || die "rerun after the fix failed (exit $?), see $LOGS/resume.log"
grep -E 'has been submitted with SLURM jobid' "$LOGS/resume.log" | sed 's/^/  /'
jobs=$(slurm_jobs resume)
expect_only resume "$jobs" "$FAIL_COMMENT|rule_[a-z_]*table[a-z_]*"
grep -qx "$FAIL_COMMENT" <<<"$jobs" || die "resume: the failed job was not resubmitted"
ok "rerun submitted only: $(paste -sd' ' - <<<"$jobs")"

# ---------------------------------------------------------------------------------------------
phase ablation
sed -i "s/^  budgets: \[8, 16\]$/  budgets: [8, $NEW_BUDGET]/" "$WF/config/config.yaml"
grep -n 'budgets:' "$WF/config/config.yaml" | sed 's/^/  config: /'
run_sm ablation-dry -n || die "dry run after the ablation change failed"
planned=$(dry_run_jobs ablation-dry | LC_ALL=C sort)
while read -r j; do echo "  planned: $j"; done <<<"$planned"
expect_only "ablation (dry run)" "$planned" "rule_baseline_wildcards_squad_[A-Za-z0-9.-]+_budget-$NEW_BUDGET|rule_[a-z_]*table[a-z_]*"
# one per receiver: the config's models and each latent.extensions newcomer (it gets the baselines too)
n_models=$(python -c "import yaml; c = yaml.safe_load(open('$WF/config/config.yaml')); print(len(c['models']) + len((c.get('latent') or {}).get('extensions') or {}))")
[ "$(grep -c "_budget-$NEW_BUDGET\$" <<<"$planned")" = "$n_models" ] || die "expected $n_models budget-$NEW_BUDGET baseline jobs (one per receiver)"
ok "the dry run plans only the budget-$NEW_BUDGET jobs and the aggregate (so the resumed run had completed the rest)"
run_sm ablation || die "run after the ablation change failed (exit $?), see $LOGS/ablation.log"
grep -E 'has been submitted with SLURM jobid' "$LOGS/ablation.log" | sed 's/^/  /'
jobs=$(slurm_jobs ablation | LC_ALL=C sort)
[ "$jobs" = "$planned" ] || die "submitted jobs differ from the dry run:"$'\n'"$jobs"
ok "only the budget-$NEW_BUDGET jobs and the aggregate were resubmitted (checked in sacct)"
grep -q "budget-$NEW_BUDGET" "$WF"/results/tables/*.csv || die "the table does not contain budget-$NEW_BUDGET"
ok "table has budget-$NEW_BUDGET"

# one latent experiment's setting: only its three stage jobs and the aggregates
sed -i 's/^    meanpool: {}$/    meanpool: {train: {lr: 0.002}}/' "$WF/config/config.yaml"
grep -n '^    meanpool:' "$WF/config/config.yaml" | sed 's/^/  config: /'
run_sm latent-dry -n || die "dry run after the latent ablation change failed"
planned=$(dry_run_jobs latent-dry | LC_ALL=C sort)
while read -r j; do echo "  planned: $j"; done <<<"$planned"
expect_only "latent ablation (dry run)" "$planned" "rule_stage_[abc]_wildcards_$MEANPOOL_JOB|rule_[a-z_]*table[a-z_]*"
[ "$(grep -c "^rule_stage_[abc]_wildcards_$MEANPOOL_JOB\$" <<<"$planned")" = 3 ] \
    || die "expected meanpool's stage_a, stage_b and stage_c jobs"
ok "the dry run plans only meanpool's stage_a, stage_b, stage_c and the aggregates"
run_sm latent || die "run after the latent ablation change failed (exit $?), see $LOGS/latent.log"
jobs=$(slurm_jobs latent | LC_ALL=C sort)
[ "$jobs" = "$planned" ] || die "submitted jobs differ from the dry run:"$'\n'"$jobs"
ok "only meanpool's stages and the aggregates were resubmitted (checked in sacct)"

# ---------------------------------------------------------------------------------------------
phase report
snakemake -s workflow/Snakefile --directory "$WF" --report "$WF/report.html" >"$LOGS/report.log" 2>&1 \
    || die "snakemake --report failed: $(tail -n 20 "$LOGS/report.log")"
[ -s "$WF/report.html" ] || die "no report.html"
ok "report: $WF/report.html ($(du -h "$WF/report.html" | cut -f1))"

phase summary
echo "all SLURM jobs of this run (sacct):"
cat "$LOGS"/{fail,resume,ablation,latent}.sacct | sed 's/^/  /'
# CPU time the SLURM jobs used (sacct TotalCPU), to tell a slow runner from a slower workflow
cpu=$(cat "$LOGS"/{fail,resume,ablation,latent}.sacct | cut -d'|' -f1 | paste -sd, - \
    | xargs -I{} sacct -n -P -j {} -S "$RUN_START" -o JobID,TotalCPU | grep -v '^[0-9]*\.' | cut -d'|' -f2 \
    | awk -F: '{sub(/^[0-9]+-/, ""); s += (NF == 3 ? $1 * 3600 + $2 * 60 + $3 : $1 * 60 + $2)} END {printf "%d", s}')
echo "CPU time of the SLURM jobs: ${cpu}s"
printf '  %s\n' "${TIMES[@]}"
total=$((SECONDS - T0))
echo "SLURM CI total: ${total}s (budget ${BUDGET_S}s)"
[ "$total" -le "$BUDGET_S" ] || echo "WARNING: the SLURM CI part took ${total}s, over its ${BUDGET_S}s budget" >&2
