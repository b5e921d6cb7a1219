#!/usr/bin/env bash
# Run one command on every worker of a Cloud TPU VM slice (a TPU pod), e.g. the 8B recipe:
#
#   launch/tpu_pod.sh [flags] -- COMMAND...
#   launch/tpu_pod.sh --dry-run -- orchestra train --config experiments/orchestrator_qwen3_8b.py \
#       --workdir gs://bucket/run
#
# Three steps, each one gcloud command (printed before it runs):
#   1. describe the slice; create it when the describe fails
#      (gcloud compute tpus tpu-vm create --accelerator-type --version);
#   2. put the code on every worker: a tarball of the checkout (git's tracked and untracked,
#      not ignored, files) copied with `tpu-vm scp --worker=all`, or a `git clone` of --repo URL,
#      then `pip install -e` of it with its [tpu] extra (jax[tpu], gcsfs for gs:// workdirs)
#      into a virtualenv on every worker (the TPU runtime images ship Python 3.10; the package
#      needs >= 3.11, installed with apt if missing);
#   3. `tpu-vm ssh --worker=all --command '...'`: on every worker, activate the virtualenv, enter
#      the code folder and run COMMAND. Every host runs the same program; no ORCHESTRA_* variables
#      are set: jax.distributed.initialize() reads the pod's own environment.
# The workdir must be shared storage every worker reaches (gs://...), and the ssh session must
# stay up for the run (start it from a machine that stays on, or inside tmux/screen).
#
# Flags (defaults in brackets; environment variables override the built-in defaults):
#   --dry-run            print the commands, one per line, shell-quoted so each can be pasted;
#                        calls nothing (not even gcloud describe)
#   --name NAME          TPU VM name [$TPU_NAME or orchestra]
#   --zone ZONE          zone [$TPU_ZONE or us-east5-a]
#   --accelerator TYPE   accelerator type used when creating the slice [$TPU_ACCELERATOR or v5p-128]
#   --project P          GCP project [$GCP_PROJECT, $CLOUDSDK_CORE_PROJECT, or gcloud's configured one]
#   --version RUNTIME    TPU software version for create [$TPU_RUNTIME_VERSION, or by accelerator:
#                        v5p: v2-alpha-tpuv5, v5litepod: v2-alpha-tpuv5-lite, v6e: v2-alpha-tpuv6e,
#                        else tpu-ubuntu2204-base]
#   --repo URL_OR_DIR    code to install: a local checkout (tarball + scp) or a git URL (clone)
#                        [$ORCHESTRA_REPO or the checkout this script is in]
#   --ref REF            with a git URL: the branch, tag or commit to check out [HEAD]
#   --python PY          Python on the workers [$TPU_PYTHON or python3.11]
#   --env NAME=VALUE     export NAME=VALUE before COMMAND on every worker (repeatable), e.g. the
#                        api_key_env variables of the experts file
#   --no-setup           skip step 2 (the code and virtualenv are already on the workers)
#   -h, --help           this text
#
# Remote layout (relative to each worker's home): orchestra_jax/ (the code), orchestra_venv/.
set -euo pipefail

prog="launch/tpu_pod.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

dry_run=0
name="${TPU_NAME:-orchestra}"
zone="${TPU_ZONE:-us-east5-a}"
accelerator="${TPU_ACCELERATOR:-v5p-128}"
project="${GCP_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}"
version="${TPU_RUNTIME_VERSION:-}"
repo="${ORCHESTRA_REPO:-${here}}"
ref="HEAD"
python="${TPU_PYTHON:-python3.11}"
setup=1
envs=()

# One flag of this launcher, for parse_flags (lib/common.sh): set its variable and `taken`, the
# words it used (0: not a flag of this launcher).
flag() {
  taken=2
  case "$1" in
    --dry-run) dry_run=1; taken=1 ;;
    --no-setup) setup=0; taken=1 ;;
    --name) need_value "$@"; name="$2" ;;
    --zone) need_value "$@"; zone="$2" ;;
    --accelerator) need_value "$@"; accelerator="$2" ;;
    --project) need_value "$@"; project="$2" ;;
    --version) need_value "$@"; version="$2" ;;
    --repo) need_value "$@"; repo="$2" ;;
    --ref) need_value "$@"; ref="$2" ;;
    --python) need_value "$@"; python="$2" ;;
    --env)
      need_value "$@"
      [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got '$2'"
      envs+=("$2") ;;
    *) taken=0 ;;
  esac
}
parse_flags "$@"

if [[ -z "${version}" ]]; then
  case "${accelerator}" in
    v5p-*) version="v2-alpha-tpuv5" ;;
    v5litepod-*|v5e-*) version="v2-alpha-tpuv5-lite" ;;
    v6e-*) version="v2-alpha-tpuv6e" ;;
    *) version="tpu-ubuntu2204-base" ;;
  esac
fi

# Flags shared by every gcloud tpu-vm call.
where=(--zone "${zone}")
[[ -n "${project}" ]] && where+=(--project "${project}")
tpu=(gcloud compute tpus tpu-vm)

remote_code="orchestra_jax"
remote_venv="orchestra_venv"

# run WORDS...: print the command (dry run) or print it to stderr and run it.
run() {
  if (( dry_run )); then
    quote "$@"; echo
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# Step 1: describe, or create when the describe fails.
describe=("${tpu[@]}" describe "${name}" "${where[@]}" '--format=value(state)')
create=("${tpu[@]}" create "${name}" "${where[@]}" --accelerator-type "${accelerator}"
        --version "${version}")
if (( dry_run )); then
  echo "$(quote "${describe[@]}") >/dev/null 2>&1 || $(quote "${create[@]}")"
else
  echo "+ $(quote "${describe[@]}") >/dev/null 2>&1 || $(quote "${create[@]}")" >&2
  "${describe[@]}" >/dev/null 2>&1 || "${create[@]}"
fi

# Step 2: the code and its virtualenv on every worker.
if (( setup )); then
  q_py="$(quote_word "${python}")"
  q_code="$(quote_word "${remote_code}")"
  q_venv="$(quote_word "${remote_venv}")"
  install="set -e; command -v ${q_py} >/dev/null 2>&1 || { sudo apt-get update -qq &&"
  install+=" sudo apt-get install -y -qq ${q_py} ${q_py}-venv; };"
  if [[ -d "${repo}" ]]; then
    tarball="${TMPDIR:-/tmp}/orchestra_jax-${name}.tar.gz"
    if [[ -e "${repo}/.git" ]]; then
      pack="git -C $(quote_word "${repo}") ls-files -z --cached --others --exclude-standard"
      pack+=" | tar -C $(quote_word "${repo}") --null --ignore-failed-read -T - -czf"
      pack+=" $(quote_word "${tarball}")"
    else
      pack="tar -C $(quote_word "${repo}") --exclude-vcs --exclude=.venv --exclude=runs"
      pack+=" --exclude=__pycache__ -czf $(quote_word "${tarball}") ."
    fi
    if (( dry_run )); then echo "${pack}"; else echo "+ ${pack}" >&2; bash -c "${pack}"; fi
    run "${tpu[@]}" scp "${tarball}" "${name}:orchestra_jax.tar.gz" "${where[@]}" --worker=all
    install+=" mkdir -p ${q_code}; tar -xzf orchestra_jax.tar.gz -C ${q_code};"
  elif [[ "${repo}" == *://* || "${repo}" == git@* ]]; then
    q_repo="$(quote_word "${repo}")"
    q_ref="$(quote_word "${ref}")"
    install+=" if [ -d ${q_code}/.git ]; then git -C ${q_code} fetch -q ${q_repo} ${q_ref};"
    install+=" else git clone -q ${q_repo} ${q_code}; git -C ${q_code} fetch -q origin ${q_ref}; fi;"
    install+=" git -C ${q_code} checkout -q FETCH_HEAD;"
  else
    die "--repo '${repo}' is neither a directory nor a git URL"
  fi
  install+=" [ -x ${q_venv}/bin/python ] || ${q_py} -m venv ${q_venv};"
  install+=" ${q_venv}/bin/pip install -q -U pip;"
  install+=" ${q_venv}/bin/pip install -q -e \"./${q_code}[tpu]\""
  run "${tpu[@]}" ssh "${name}" "${where[@]}" --worker=all --command "${install}"
  if (( ! dry_run )) && [[ -d "${repo}" ]]; then rm -f "${tarball}"; fi
fi

# Step 3: COMMAND on every worker.
remote=". $(quote_word "${remote_venv}")/bin/activate && cd $(quote_word "${remote_code}") &&"
if [[ ${#envs[@]} -gt 0 ]]; then remote+=" export $(quote "${envs[@]}") &&"; fi
remote+=" $(quote "${command_words[@]}")"
run "${tpu[@]}" ssh "${name}" "${where[@]}" --worker=all --command "${remote}"
