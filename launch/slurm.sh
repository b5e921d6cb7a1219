#!/usr/bin/env bash
# Run one command on several GPU nodes of a Slurm cluster: one process per node, JAX's
# multi-controller runtime wired through the ORCHESTRA_* variables.
#
#   launch/slurm.sh [flags] -- COMMAND...              from a login node: submits itself with sbatch
#   sbatch [sbatch flags] launch/slurm.sh -- COMMAND... inside an allocation (sbatch, salloc): srun
#
# Outside an allocation (no SLURM_JOB_ID) the script submits itself:
#   sbatch --nodes=N --ntasks-per-node=1 --gpus-per-node=G --exclusive --signal=TERM@300 ... \
#     launch/slurm.sh -- COMMAND
# (--signal: SIGTERM 5 minutes before the time limit; the trainer checkpoints and exits 0).
# Inside one it runs one task per node, the first node of the allocation
# (`scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1`) being the coordinator:
#   ORCHESTRA_COORDINATOR=<first node>:PORT ORCHESTRA_NUM_PROCESSES=N \
#     srun --nodes=N --ntasks=N --ntasks-per-node=1 bash -c 'ORCHESTRA_PROCESS_ID=$SLURM_PROCID ...'
# Each task sees every GPU of its node. The environment (an activated virtualenv, API keys named
# by the experts file) travels with sbatch and srun (their default --export=ALL); the job starts
# in the folder sbatch was called from, so call it from the repository root. The workdir must be
# on storage every node reaches (a shared file system or gs://).
#
# Flags (defaults in brackets):
#   --dry-run          print the sbatch command (outside an allocation), the srun command and
#                      each task's ORCHESTRA_* variables; calls nothing from Slurm. The node list
#                      comes from --nodelist or SLURM_JOB_NODELIST (forms like node[01-04],gpu7
#                      are expanded in bash); without one the coordinator is printed as the
#                      scontrol expression that computes it
#   --nodes N          nodes = processes; inside an allocation (or with --nodelist) it must equal
#                      the node count [the allocation's (the node list's) node count; else 2, the
#                      paper's 2 x 8 H100]
#   --gpus-per-node G  GPUs per node requested by sbatch; 0 requests none [8]
#   --partition P      sbatch --partition [cluster default; SBATCH_PARTITION also works]
#   --time T           sbatch --time limit, e.g. 2-00:00:00 [cluster default; SBATCH_TIMELIMIT]
#   --job-name NAME    sbatch --job-name [orchestra]
#   --nodelist LIST    sbatch --nodelist (run on these nodes); also the node list of a dry run
#   --port PORT        the coordinator's port on the first node [$ORCHESTRA_PORT or 8476]
#   -h, --help         this text
set -euo pipefail

prog="launch/slurm.sh"
script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# The shared helpers sit next to this script. Under sbatch, Slurm runs a copy of it from its
# spool folder: there the launch folder is the one the submitting run exported
# (ORCHESTRA_LAUNCH_DIR, below) or, for `sbatch launch/slurm.sh` by hand, launch/ of the folder
# sbatch was called from (the repository root).
for launch_dir in "$(dirname "${BASH_SOURCE[0]}")" "${ORCHESTRA_LAUNCH_DIR:-}" \
                  "${SLURM_SUBMIT_DIR:-.}/launch"; do
  [[ -f "${launch_dir}/lib/common.sh" ]] && break
done
[[ -f "${launch_dir}/lib/common.sh" ]] \
  || { echo "${prog}: launch/lib/common.sh not found: submit from the repository root" >&2; exit 2; }
source "${launch_dir}/lib/common.sh"

# Slurm host lists in bash: "a[01-03,7]-ib,b5" -> a01-ib a02-ib a03-ib a7-ib b5, appended to the
# array `hosts` (the first bracket is expanded, then the rest recursively; zero padding is kept).
expand_hostlist() {
  local list="$1" item="" ch depth=0 i
  for (( i = 0; i < ${#list}; i++ )); do
    ch="${list:i:1}"
    case "${ch}" in
      '[') depth=$((depth + 1)) ;;
      ']') depth=$((depth - 1)) ;;
      ',') if (( depth == 0 )); then expand_host "${item}"; item=""; continue; fi ;;
    esac
    item+="${ch}"
  done
  expand_host "${item}"
}
expand_host() {
  local item="$1" prefix rest inner suffix part lo hi n
  [[ -n "${item}" ]] || return 0
  if [[ "${item}" != *\[* ]]; then hosts+=("${item}"); return 0; fi
  prefix="${item%%\[*}"; rest="${item#*\[}"
  [[ "${rest}" == *\]* ]] || die "node list: unbalanced '[' in '${item}'"
  inner="${rest%%\]*}"; suffix="${rest#*\]}"
  local -a parts
  IFS=, read -r -a parts <<< "${inner}"
  for part in "${parts[@]}"; do
    if [[ "${part}" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      lo="${BASH_REMATCH[1]}"; hi="${BASH_REMATCH[2]}"
      for (( n = 10#${lo}; n <= 10#${hi}; n++ )); do
        expand_host "${prefix}$(printf '%0*d' "${#lo}" "${n}")${suffix}"
      done
    elif [[ "${part}" =~ ^[0-9]+$ ]]; then
      expand_host "${prefix}${part}${suffix}"
    else
      die "node list: cannot expand '[${inner}]' in '${item}'"
    fi
  done
}

dry_run=0
nodes=""
gpus_per_node=8
partition=""
time_limit=""
job_name="orchestra"
nodelist=""
port=""

# One flag of this launcher, for parse_flags (lib/common.sh): set its variable and `taken`, the
# words it used (0: not a flag of this launcher).
flag() {
  taken=2
  case "$1" in
    --dry-run) dry_run=1; taken=1 ;;
    --nodes) need_value "$@"; nodes="$2" ;;
    --gpus-per-node) need_value "$@"; gpus_per_node="$2" ;;
    --partition) need_value "$@"; partition="$2" ;;
    --time) need_value "$@"; time_limit="$2" ;;
    --job-name) need_value "$@"; job_name="$2" ;;
    --nodelist) need_value "$@"; nodelist="$2" ;;
    --port) need_value "$@"; port="$2" ;;
    *) taken=0 ;;
  esac
}
parse_flags "$@"

[[ -z "${nodes}" ]] || need_positive_int --nodes "${nodes}"
need_int --gpus-per-node "${gpus_per_node}"
port="${port:-${ORCHESTRA_PORT:-8476}}"
need_port --port "${port}"

in_allocation=0
[[ -n "${SLURM_JOB_ID:-}" ]] && in_allocation=1

# The allocation's hosts: needed inside it (the coordinator is the first) and for a dry run.
nodelist="${nodelist:-${SLURM_JOB_NODELIST:-}}"
hosts=()
if [[ -n "${nodelist}" ]] && (( dry_run || in_allocation )); then
  if (( ! dry_run )) && command -v scontrol >/dev/null 2>&1; then
    mapfile -t hosts < <(scontrol show hostnames "${nodelist}")
  else
    expand_hostlist "${nodelist}"
  fi
  [[ ${#hosts[@]} -gt 0 ]] || die "empty node list '${nodelist}'"
fi
# One process per node, on every node of the allocation.
allocated="${#hosts[@]}"
if (( allocated == 0 && in_allocation )); then
  allocated="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-0}}"
fi
if (( allocated > 0 )); then
  [[ -z "${nodes}" || "${nodes}" == "${allocated}" ]] \
    || die "--nodes ${nodes} but the allocation/node list has ${allocated} nodes (one process per node, all of them)"
  nodes="${allocated}"
fi
nodes="${nodes:-2}"

# From a login node: submit this script; inside the allocation it takes the branch below.
if (( ! in_allocation )); then
  # --signal: SIGTERM to every task 5 minutes before the time limit; the trainer saves a
  # checkpoint and exits 0, and the next submission resumes from it.
  sbatch=(sbatch "--job-name=${job_name}" "--nodes=${nodes}" --ntasks-per-node=1 --exclusive
          --signal=TERM@300)
  (( gpus_per_node > 0 )) && sbatch+=("--gpus-per-node=${gpus_per_node}")
  [[ -n "${partition}" ]] && sbatch+=("--partition=${partition}")
  [[ -n "${time_limit}" ]] && sbatch+=("--time=${time_limit}")
  [[ -n "${nodelist}" ]] && sbatch+=("--nodelist=${nodelist}")
  sbatch+=("${script}" --port "${port}" -- "${command_words[@]}")
  if (( ! dry_run )); then
    echo "+ $(quote "${sbatch[@]}")" >&2
    export ORCHESTRA_LAUNCH_DIR="${script%/*}"  # where the job's copy finds lib/common.sh
    exec "${sbatch[@]}"
  fi
  quote "${sbatch[@]}"; echo
  echo "# inside the allocation the script runs:"
fi

task='export ORCHESTRA_PROCESS_ID="$SLURM_PROCID"; exec "$@"'
srun=(srun "--nodes=${nodes}" "--ntasks=${nodes}" --ntasks-per-node=1 --kill-on-bad-exit=1
      bash -c "${task}" orchestra-task "${command_words[@]}")

if (( ! dry_run )); then
  [[ ${#hosts[@]} -gt 0 ]] || die "SLURM_JOB_NODELIST is empty: run inside an allocation or pass --nodelist"
  export ORCHESTRA_COORDINATOR="${hosts[0]}:${port}"
  export ORCHESTRA_NUM_PROCESSES="${nodes}"
  echo "+ ORCHESTRA_COORDINATOR=${ORCHESTRA_COORDINATOR} ORCHESTRA_NUM_PROCESSES=${nodes} $(quote "${srun[@]}")" >&2
  exec "${srun[@]}"
fi

if [[ ${#hosts[@]} -gt 0 ]]; then
  coordinator="$(quote_word "${hosts[0]}:${port}")"
else
  coordinator="\"\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n1):${port}\""
fi
echo "ORCHESTRA_COORDINATOR=${coordinator} ORCHESTRA_NUM_PROCESSES=${nodes} $(quote "${srun[@]}")"
for (( i = 0; i < nodes; i++ )); do
  if [[ ${#hosts[@]} -gt 0 ]]; then
    echo "# task ${i} on ${hosts[i]}: ORCHESTRA_COORDINATOR=${hosts[0]}:${port} ORCHESTRA_NUM_PROCESSES=${nodes} ORCHESTRA_PROCESS_ID=${i}"
  else
    echo "# task ${i} on node ${i} of the allocation: ORCHESTRA_COORDINATOR=<first node>:${port} ORCHESTRA_NUM_PROCESSES=${nodes} ORCHESTRA_PROCESS_ID=${i}"
  fi
done
