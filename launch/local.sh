#!/usr/bin/env bash
# Run N copies of a command on this host as one multi-process JAX job (testing multi-host on
# one machine).
#
#   launch/local.sh --processes N [--devices-per-process M] [--port P] [--dry-run] -- COMMAND…
#
# Every copy gets ORCHESTRA_COORDINATOR=127.0.0.1:P, ORCHESTRA_NUM_PROCESSES=N and its own
# ORCHESTRA_PROCESS_ID (0..N-1), which `orchestra train` reads to join the run (process 0
# hosts the coordinator). --devices-per-process M gives each copy M fake CPU devices
# (JAX_PLATFORMS=cpu, XLA_FLAGS=--xla_force_host_platform_device_count=M), so that
#   launch/local.sh --processes 2 --devices-per-process 4 -- orchestra train --config
#       experiments/toy_target_call.py --config.mesh.shape='(1,-1,1)' --workdir /tmp/run
# trains on 8 devices in 2 processes. Without it the copies see the host's devices as they are.
# --port defaults to a free port; --dry-run prints each copy's command line and starts nothing.
#
# The script waits for all copies. When one exits with a non-zero status (or dies by a
# signal) the others are stopped (SIGTERM, then SIGKILL after 10 s) and the script exits with
# that status, naming the copy: a multi-process job never hangs on a dead peer. Ctrl-C stops
# every copy.
set -euo pipefail

usage() {
  echo "usage: launch/local.sh --processes N [--devices-per-process M] [--port P] [--dry-run] -- COMMAND..." >&2
  exit 2
}

processes=""
devices=""
port=""
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --processes) processes="${2:-}"; shift 2 || usage ;;
    --processes=*) processes="${1#*=}"; shift ;;
    --devices-per-process) devices="${2:-}"; shift 2 || usage ;;
    --devices-per-process=*) devices="${1#*=}"; shift ;;
    --port) port="${2:-}"; shift 2 || usage ;;
    --port=*) port="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "launch/local.sh: unknown flag $1 (the command goes after --)" >&2; usage ;;
  esac
done
[[ $# -gt 0 ]] || { echo "launch/local.sh: no COMMAND after --" >&2; usage; }
[[ "${processes}" =~ ^[1-9][0-9]*$ ]] || {
  echo "launch/local.sh: --processes must be a positive integer, got '${processes}'" >&2; exit 2; }
[[ -z "${devices}" || "${devices}" =~ ^[1-9][0-9]*$ ]] || {
  echo "launch/local.sh: --devices-per-process must be a positive integer, got '${devices}'" >&2
  exit 2; }
if [[ -z "${port}" ]]; then
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
[[ "${port}" =~ ^[0-9]+$ ]] || { echo "launch/local.sh: --port must be a number, got '${port}'" >&2; exit 2; }

copy_env=(ORCHESTRA_COORDINATOR="127.0.0.1:${port}" ORCHESTRA_NUM_PROCESSES="${processes}")
if [[ -n "${devices}" ]]; then
  # Any device count already in XLA_FLAGS gives way to this one.
  other_flags="$(sed -E 's/--xla_force_host_platform_device_count=[^ ]*//g; s/^ +| +$//g' <<< "${XLA_FLAGS:-}")"
  copy_env+=(JAX_PLATFORMS=cpu
             XLA_FLAGS="${other_flags:+${other_flags} }--xla_force_host_platform_device_count=${devices}")
fi

if [[ "${dry_run}" -eq 1 ]]; then
  for ((i = 0; i < processes; i++)); do
    printf '%q ' env "${copy_env[@]}" ORCHESTRA_PROCESS_ID="${i}" "$@"
    printf '\n'
  done
  exit 0
fi

declare -A copy_of=()
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "${pid}" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "${pid}" 2>/dev/null && alive=1; done
    [[ "${alive}" -eq 0 ]] && return
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "${pid}" 2>/dev/null || true; done
}
trap 'echo "launch/local.sh: interrupted; stopping every copy" >&2; stop_all; exit 130' INT TERM

for ((i = 0; i < processes; i++)); do
  env "${copy_env[@]}" ORCHESTRA_PROCESS_ID="${i}" "$@" &
  pids+=("$!")
  copy_of[$!]="${i}"
done

remaining="${processes}"
while [[ "${remaining}" -gt 0 ]]; do
  set +e
  wait -n -p finished "${pids[@]}"
  status=$?
  set -e
  remaining=$((remaining - 1))
  pids=("${pids[@]/${finished}}")  # reaped: no longer waited for or signalled
  pids=(${pids[@]})
  if [[ "${status}" -ne 0 ]]; then
    echo "launch/local.sh: process ${copy_of[${finished}]} of ${processes} exited with status ${status}; stopping the others" >&2
    stop_all
    wait 2>/dev/null || true
    exit "${status}"
  fi
done
