#!/usr/bin/env bash
# Render a Kubernetes JobSet that runs one command on every host of a GKE TPU slice or of a few
# GPU nodes, and `kubectl apply` it (no xpk needed; the cluster needs the JobSet controller and a
# TPU or GPU node pool, and kubectl pointed at it: gcloud container clusters get-credentials).
#
#   launch/jobset.sh [flags] -- COMMAND...
#   launch/jobset.sh --dry-run --image IMG --tpu-type v5p-128 -- orchestra train \
#       --config experiments/orchestrator_qwen3_8b.py --workdir gs://bucket/run
#
# One replicated job "workers", one pod per host (an Indexed Job: pod i has completion index i),
# each pod running `bash -c 'exec COMMAND'` in the image (which must have orchestra_jax installed;
# COMMAND runs in the image's working folder). JobSet gives pod i the DNS name
# NAME-workers-0-i.NAME (its headless service is named after the JobSet).
# TPU (--tpu-type): one slice; pods select the node pool by cloud.google.com/gke-tpu-accelerator
# and gke-tpu-topology and ask for the google.com/tpu chips of their VM; no ORCHESTRA_* variables:
# jax.distributed.initialize() reads the TPU environment GKE gives the pods. (Several slices:
# use launch/xpk.sh --num-slices.)
# GPU (--device-type): pods select cloud.google.com/gke-accelerator and ask for nvidia.com/gpu;
# ORCHESTRA_COORDINATOR=NAME-workers-0-0.NAME:PORT (pod 0 of the JobSet),
# ORCHESTRA_NUM_PROCESSES=--num-nodes, ORCHESTRA_PROCESS_ID = the pod's completion index
# (JOB_COMPLETION_INDEX, read from batch.kubernetes.io/job-completion-index).
# The workdir must be shared storage the pods can write (gs://... through Workload Identity:
# --service-account).
#
# Flags (defaults in brackets):
#   --dry-run              print `kubectl apply -f - <<'EOF'`, the manifest and EOF (pasteable);
#                          run nothing
#   --render               print only the manifest (to keep it or apply it yourself)
#   --name NAME            JobSet name [orchestra]
#   --image IMG            container image with orchestra_jax installed [$ORCHESTRA_IMAGE; required
#                          unless --dry-run/--render, which then write the placeholder IMAGE]
#   --tpu-type T           TPU slice, e.g. v5p-128, v5litepod-16, v6e-64, v4-32 [v5p-128 unless
#                          --device-type]
#   --topology X           the slice's topology when T is not in the built-in table (e.g. 4x4x4)
#   --device-type D        GPU nodes instead: h100-80gb-8, h100-mega-80gb-8, h200-141gb-8, b200-8,
#                          a100-80gb-8, a100-40gb-8, l4-N (accelerator-GPUs per node)
#   --num-nodes N          GPU nodes (one process each) [2]
#   --port PORT            GPU coordinator port [8476]
#   --service-account KSA  Kubernetes service account of the pods (Workload Identity for gs://)
#   --max-restarts N       JobSet restarts after a failure (the run resumes from its checkpoint) [0]
#   -h, --help             this text
set -euo pipefail

prog="launch/jobset.sh"

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

mode="apply"
name="orchestra"
image="${ORCHESTRA_IMAGE:-}"
tpu_type=""
topology=""
device_type=""
num_nodes=2
port=8476
service_account=""
max_restarts=0

# One flag of this launcher, for parse_flags (lib/common.sh): set its variable and `taken`, the
# words it used (0: not a flag of this launcher).
flag() {
  taken=2
  case "$1" in
    --dry-run) mode="dry-run"; taken=1 ;;
    --render) mode="render"; taken=1 ;;
    --name) need_value "$@"; name="$2" ;;
    --image) need_value "$@"; image="$2" ;;
    --tpu-type) need_value "$@"; tpu_type="$2" ;;
    --topology) need_value "$@"; topology="$2" ;;
    --device-type) need_value "$@"; device_type="$2" ;;
    --num-nodes) need_value "$@"; num_nodes="$2" ;;
    --port) need_value "$@"; port="$2" ;;
    --service-account) need_value "$@"; service_account="$2" ;;
    --max-restarts) need_value "$@"; max_restarts="$2" ;;
    *) taken=0 ;;
  esac
}
parse_flags "$@"

pick_tpu_or_gpu
need_dns_name --name "${name}"
# Pod host names NAME-workers-0-I must stay within DNS's 63 characters.
(( ${#name} <= 40 )) || die "--name '${name}' is longer than 40 characters"
need_positive_int --num-nodes "${num_nodes}"
need_port --port "${port}"
need_int --max-restarts "${max_restarts}"
if [[ -z "${image}" ]]; then
  [[ "${mode}" != "apply" ]] || die "--image is required (or ORCHESTRA_IMAGE): an image with orchestra_jax installed"
  echo "${prog}: no --image: the manifest names the placeholder IMAGE" >&2
  image="IMAGE"
fi

# TPU slice -> GKE labels, VMs per slice and chips per VM (4 per VM, 1 for a one-chip slice).
if [[ -n "${tpu_type}" ]]; then
  [[ "${tpu_type}" =~ ^(v4|v5p|v5litepod|v6e)-([0-9]+)$ ]] \
    || die "--tpu-type '${tpu_type}': expected v4-N, v5p-N, v5litepod-N or v6e-N"
  family="${BASH_REMATCH[1]}"; size="${BASH_REMATCH[2]}"
  case "${family}" in
    v4) accelerator_label="tpu-v4-podslice"; chips=$((size / 2)) ;;
    v5p) accelerator_label="tpu-v5p-slice"; chips=$((size / 2)) ;;
    v5litepod) accelerator_label="tpu-v5-lite-podslice"; chips="${size}" ;;
    v6e) accelerator_label="tpu-v6e-slice"; chips="${size}" ;;
  esac
  if [[ -z "${topology}" ]]; then
    case "${family}:${chips}" in
      v4:4|v5p:4) topology="2x2x1" ;;
      v4:8|v5p:8) topology="2x2x2" ;;
      v4:16|v5p:16) topology="2x2x4" ;;
      v4:32|v5p:32) topology="2x4x4" ;;
      v4:64|v5p:64) topology="4x4x4" ;;
      v4:128|v5p:128) topology="4x4x8" ;;
      v4:256|v5p:256) topology="4x8x8" ;;
      v4:512|v5p:512) topology="8x8x8" ;;
      v5litepod:1|v6e:1) topology="1x1" ;;
      v5litepod:4|v6e:4) topology="2x2" ;;
      v5litepod:8|v6e:8) topology="2x4" ;;
      v5litepod:16|v6e:16) topology="4x4" ;;
      v5litepod:32|v6e:32) topology="4x8" ;;
      v5litepod:64|v6e:64) topology="8x8" ;;
      v5litepod:128|v6e:128) topology="8x16" ;;
      v5litepod:256|v6e:256) topology="16x16" ;;
      *) die "--tpu-type '${tpu_type}': topology unknown here, pass --topology (e.g. 4x4x4)" ;;
    esac
  fi
  [[ "${topology}" =~ ^[0-9]+(x[0-9]+)+$ ]] || die "--topology '${topology}': expected e.g. 4x4x4"
  topo_chips=1
  IFS=x read -r -a dims <<< "${topology}"
  for d in "${dims[@]}"; do topo_chips=$((topo_chips * d)); done
  (( topo_chips == chips )) || die "--topology ${topology} has ${topo_chips} chips, ${tpu_type} has ${chips}"
  if (( chips == 1 )); then chips_per_vm=1; else chips_per_vm=4; fi
  pods=$((chips / chips_per_vm))
else
  [[ "${device_type}" =~ ^(.+)-([0-9]+)$ ]] \
    || die "--device-type '${device_type}': expected e.g. h100-80gb-8"
  gpu="${BASH_REMATCH[1]}"; gpus_per_node="${BASH_REMATCH[2]}"
  case "${gpu}" in
    h100-80gb) accelerator_label="nvidia-h100-80gb" ;;
    h100-mega-80gb) accelerator_label="nvidia-h100-mega-80gb" ;;
    h200-141gb) accelerator_label="nvidia-h200-141gb" ;;
    b200) accelerator_label="nvidia-b200" ;;
    a100-80gb) accelerator_label="nvidia-a100-80gb" ;;
    a100-40gb) accelerator_label="nvidia-tesla-a100" ;;
    l4) accelerator_label="nvidia-l4" ;;
    *) die "--device-type '${device_type}': unknown GPU '${gpu}' (see --help)" ;;
  esac
  pods="${num_nodes}"
fi

# The container's script: exec, so the pod's SIGTERM reaches the trainer (it checkpoints).
script="exec $(quote "${command_words[@]}")"
[[ "${script}" != *$'\n'* ]] || die "COMMAND may not contain a newline"

render() {
  cat <<EOF
apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: ${name}
EOF
  if [[ -n "${tpu_type}" ]]; then
    cat <<EOF
  annotations:
    alpha.jobset.sigs.k8s.io/exclusive-topology: cloud.google.com/gke-nodepool
EOF
  fi
  cat <<EOF
spec:
  failurePolicy:
    maxRestarts: ${max_restarts}
  network:
    enableDNSHostnames: true
  replicatedJobs:
  - name: workers
    replicas: 1
    template:
      spec:
        parallelism: ${pods}
        completions: ${pods}
        completionMode: Indexed
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
EOF
  [[ -z "${service_account}" ]] || echo "            serviceAccountName: ${service_account}"
  # The pods' node pool, and what each asks for: TPU chips of its VM or the node's GPUs.
  local limit
  if [[ -n "${tpu_type}" ]]; then
    cat <<EOF
            hostNetwork: true
            dnsPolicy: ClusterFirstWithHostNet
            nodeSelector:
              cloud.google.com/gke-tpu-accelerator: ${accelerator_label}
              cloud.google.com/gke-tpu-topology: ${topology}
EOF
    limit="google.com/tpu: ${chips_per_vm}"
  else
    cat <<EOF
            nodeSelector:
              cloud.google.com/gke-accelerator: ${accelerator_label}
            tolerations:
            - key: nvidia.com/gpu
              operator: Exists
              effect: NoSchedule
EOF
    limit="nvidia.com/gpu: ${gpus_per_node}"
  fi
  cat <<EOF
            containers:
            - name: orchestra
              image: ${image}
              command:
              - bash
              - -c
              - |
                ${script}
EOF
  if [[ -z "${tpu_type}" ]]; then
    cat <<EOF
              env:
              - name: ORCHESTRA_COORDINATOR
                value: "${name}-workers-0-0.${name}:${port}"
              - name: ORCHESTRA_NUM_PROCESSES
                value: "${pods}"
              - name: ORCHESTRA_PROCESS_ID
                valueFrom:
                  fieldRef:
                    fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
              ports:
              - containerPort: ${port}
EOF
  fi
  cat <<EOF
              resources:
                limits:
                  ${limit}
EOF
}

case "${mode}" in
  render) render ;;
  dry-run)
    echo "kubectl apply -f - <<'ORCHESTRA_JOBSET'"
    render
    echo "ORCHESTRA_JOBSET" ;;
  apply)
    echo "+ kubectl apply -f - (JobSet ${name}, ${pods} pods)" >&2
    render | kubectl apply -f - ;;
esac
