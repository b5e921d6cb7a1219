#!/usr/bin/env bash
# Run one command on every host of a GKE cluster's TPU slices or GPU nodes through xpk
# (github.com/AI-Hypercomputer/xpk; the cluster is made with `xpk cluster create`).
#
#   launch/xpk.sh [flags] -- COMMAND...
#   launch/xpk.sh --dry-run --tpu-type v5p-128 -- orchestra train \
#       --config experiments/orchestrator_qwen3_8b.py --workdir gs://bucket/run
#
# It runs one `xpk workload create ... --command "..."`; xpk writes the JobSet and applies it.
# The code reaches the pods in one of two ways:
#   --docker-image IMG  an image with orchestra_jax installed, COMMAND run in its working folder;
#   (default)           xpk's --script-dir: a copy of the checkout's files (git's tracked and
#                       untracked, not ignored: no .venv, no runs/) staged in $TMPDIR is layered
#                       onto --base-docker-image at /app, and the command first runs
#                       `pip install -e '.[tpu]'` (GPU: '.[cuda,gcs]') there.
# TPU: every host runs COMMAND as it is; jax.distributed.initialize() reads the slice's
# environment (and, for --num-slices > 1, the MEGASCALE_* variables xpk sets).
# GPU: xpk gives each pod JAX_COORDINATOR_ADDRESS/JAX_COORDINATOR_PORT (pod 0 of the JobSet),
# NNODES and NODE_RANK; the command maps them to ORCHESTRA_COORDINATOR, ORCHESTRA_NUM_PROCESSES
# and ORCHESTRA_PROCESS_ID. xpk puts the GPU command in a double-quoted YAML string, so there
# COMMAND may not contain the characters " or \ (the script refuses it).
# The workdir must be shared storage (gs://...) the pods can write (Workload Identity).
#
# Flags (defaults in brackets):
#   --dry-run              print the commands (staging copy, xpk), shell-quoted; run nothing
#   --cluster C            xpk cluster [$XPK_CLUSTER or orchestra]
#   --workload W           workload (JobSet) name [orchestra-<date>-<time>]
#   --tpu-type T           TPU slice type, e.g. v5p-128, v6e-256 [v5p-128 unless --device-type]
#   --device-type D        GPU machine type instead, e.g. h100-80gb-8, h100-mega-80gb-8, h200-141gb-8
#   --num-slices N         TPU slices [1]
#   --num-nodes N          GPU nodes (one process each) [2]
#   --docker-image IMG     image with the package installed [$XPK_DOCKER_IMAGE]
#   --base-docker-image B  base image under the checkout when no --docker-image [python:3.12]
#   --project P            GCP project [$GCP_PROJECT or xpk's/gcloud's default]
#   --zone Z               cluster zone [$XPK_ZONE or xpk's/gcloud's default]
#   --max-restarts N       JobSet restarts after a failure (the run resumes from its checkpoint) [0]
#   -h, --help             this text
set -euo pipefail

prog="launch/xpk.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

dry_run=0
cluster="${XPK_CLUSTER:-orchestra}"
workload=""
tpu_type=""
device_type=""
num_slices=1
num_nodes=2
docker_image="${XPK_DOCKER_IMAGE:-}"
base_image="python:3.12"
project="${GCP_PROJECT:-}"
zone="${XPK_ZONE:-}"
max_restarts=0

# One flag of this launcher, for parse_flags (lib/common.sh): set its variable and `taken`, the
# words it used (0: not a flag of this launcher).
flag() {
  taken=2
  case "$1" in
    --dry-run) dry_run=1; taken=1 ;;
    --cluster) need_value "$@"; cluster="$2" ;;
    --workload) need_value "$@"; workload="$2" ;;
    --tpu-type) need_value "$@"; tpu_type="$2" ;;
    --device-type) need_value "$@"; device_type="$2" ;;
    --num-slices) need_value "$@"; num_slices="$2" ;;
    --num-nodes) need_value "$@"; num_nodes="$2" ;;
    --docker-image) need_value "$@"; docker_image="$2" ;;
    --base-docker-image) need_value "$@"; base_image="$2" ;;
    --project) need_value "$@"; project="$2" ;;
    --zone) need_value "$@"; zone="$2" ;;
    --max-restarts) need_value "$@"; max_restarts="$2" ;;
    *) taken=0 ;;
  esac
}
parse_flags "$@"

pick_tpu_or_gpu
need_positive_int --num-slices "${num_slices}"
need_positive_int --num-nodes "${num_nodes}"
need_int --max-restarts "${max_restarts}"
workload="${workload:-orchestra-$(date +%Y%m%d-%H%M%S)}"
need_dns_name --workload "${workload}"

# The command every pod runs.
remote=""
if [[ -z "${docker_image}" ]]; then
  if [[ -n "${tpu_type}" ]]; then extra="tpu"; else extra="cuda,gcs"; fi
  remote+="pip install -q -e '.[${extra}]' && "
fi
if [[ -n "${device_type}" ]]; then
  remote+="export ORCHESTRA_COORDINATOR=\$JAX_COORDINATOR_ADDRESS:\$JAX_COORDINATOR_PORT"
  remote+=" ORCHESTRA_NUM_PROCESSES=\$NNODES ORCHESTRA_PROCESS_ID=\$NODE_RANK && "
fi
remote+="$(quote "${command_words[@]}")"
[[ "${remote}" != *$'\n'* ]] || die "COMMAND may not contain a newline (xpk puts it on one line)"
if [[ -n "${device_type}" && ( "${remote}" == *\"* || "${remote}" == *\\* ) ]]; then
  die "with --device-type, COMMAND may not contain \", \\ or ' (xpk writes it into a double-quoted YAML string)"
fi

xpk=(xpk workload create "--cluster=${cluster}" "--workload=${workload}")
if [[ -n "${tpu_type}" ]]; then
  xpk+=("--tpu-type=${tpu_type}" "--num-slices=${num_slices}")
else
  xpk+=("--device-type=${device_type}" "--num-nodes=${num_nodes}")
fi
if [[ -n "${docker_image}" ]]; then
  xpk+=("--docker-image=${docker_image}")
else
  [[ -e "${here}/.git" ]] || die "no --docker-image and ${here} is no git checkout to stage"
  stage="${TMPDIR:-/tmp}/orchestra_jax-xpk-${workload}"
  q_here="$(quote_word "${here}")"
  staging="rm -rf $(quote_word "${stage}") && mkdir -p $(quote_word "${stage}") &&"
  staging+=" git -C ${q_here} ls-files -z --cached --others --exclude-standard"
  staging+=" | tar -C ${q_here} --null --ignore-failed-read -T - -cf -"
  staging+=" | tar -C $(quote_word "${stage}") -xf -"
  xpk+=("--base-docker-image=${base_image}" "--script-dir=${stage}")
fi
[[ -n "${project}" ]] && xpk+=("--project=${project}")
[[ -n "${zone}" ]] && xpk+=("--zone=${zone}")
xpk+=("--max-restarts=${max_restarts}" --command "${remote}")

if (( dry_run )); then
  [[ -n "${docker_image}" ]] || echo "${staging}"
  quote "${xpk[@]}"; echo
  exit 0
fi
if [[ -z "${docker_image}" ]]; then
  echo "+ ${staging}" >&2
  bash -c "${staging}"
  trap 'rm -rf "${stage}"' EXIT
fi
echo "+ $(quote "${xpk[@]}")" >&2
"${xpk[@]}"
