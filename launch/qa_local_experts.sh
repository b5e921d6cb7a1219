#!/usr/bin/env bash
# Serve the local qa recipe's experts on 127.0.0.1 and write the experts file they are named in.
#
#   launch/qa_local_experts.sh [EXPERTS_FILE] [SPEC_FILE]
#
# EXPERTS_FILE defaults to runs/qa_local/experts.json, SPEC_FILE to
# experiments/qa_local_experts.json: two `orchestra serve` processes on SmolLM2-135M-Instruct,
# "cheap" priced like Qwen3-8B (0.2/0.2 USD per million tokens, 64 default reply tokens) and
# "expensive" priced like GPT-5 (1.25/10, 256 tokens), the paper's price table. Each server picks
# a free port; once all answer /v1/models the experts file is written (atomically) and its path
# is printed as the last line of the startup output. The script then keeps serving in the
# foreground until Ctrl-C / SIGTERM (or until one server dies), stops every server (SIGTERM,
# then SIGKILL) and removes the experts file. Server logs: EXPERTS_FILE's folder, <stem>.logs/.
#
# Typical use, from the repository root, in a second terminal or in the background:
#   launch/qa_local_experts.sh runs/qa_local/experts.json &
#   until [ -f runs/qa_local/experts.json ]; do sleep 1; done
#   orchestra eval --config experiments/qa_local.py ... --config.experts.file=runs/qa_local/experts.json
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-runs/qa_local/experts.json}"
spec="${2:-${here}/experiments/qa_local_experts.json}"
python="${PYTHON:-python}"

exec "${python}" -m orchestra_jax.serve.fleet --experts "${spec}" --out "${out}"
