"""The qa recipe's trained policy under prices and experts it never saw (the paper's Tables
2 and 4), as `orchestra eval` config overrides.

    python research/qa_generalisation.py --run runs/qa_local_train \
        --experts runs/qa_local/experts.json --out runs/qa_generalisation

Needs the experts of `launch/qa_local_experts.sh` running. Writes, beside three `orchestra
eval` outputs (seen, unseen_prices, unseen_experts: each DIR/summary.json and
DIR/trajectories.jsonl), a table `table.json` of accuracy and cost per policy:

* seen: the experts file as trained;
* unseen_prices: `--config.experts.prices_file` with the two experts' prices swapped and
  scaled (the cheap one now dear, the dear one cheap);
* unseen_experts: `--config.experts.file` naming the same endpoints under new names with new
  prices (`alpha`, `beta`): the held-out tasks then show the policy aliases it never saw.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

UNSEEN_PRICES = {"cheap": {"input_usd_per_mtok": 2.5, "output_usd_per_mtok": 15.0},
                 "expensive": {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.4}}
RENAMED = {"cheap": ("alpha", {"input_usd_per_mtok": 0.9, "output_usd_per_mtok": 0.9}),
           "expensive": ("beta", {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6})}


def evaluate(run: Path, out: Path, *overrides: str, max_tasks: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["orchestra", "eval", "--config", "experiments/qa_local.py", "--checkpoint",
           str(run), "--out", str(out / "summary.json"), f"--config.eval.max_tasks={max_tasks}",
           "--config.qa.basic_tools=False", *overrides]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    summary = json.loads((out / "summary.json").read_text())
    return {name: {"accuracy": p["accuracy"], "cost_usd": p["cost_usd"], "calls": p["calls"]}
            for name, p in summary["policies"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--experts", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-tasks", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    prices = args.out / "unseen_prices.json"
    prices.write_text(json.dumps(UNSEEN_PRICES, indent=2))
    experts = json.loads(args.experts.read_text())
    renamed = {RENAMED[name][0]: {**spec, "price": RENAMED[name][1]}
               for name, spec in experts.items()}
    renamed_file = args.out / "unseen_experts.json"
    renamed_file.write_text(json.dumps(renamed, indent=2))
    base = [f"--config.experts.file={args.experts}"]
    table = {
        "seen": evaluate(args.run, args.out / "seen", *base, max_tasks=args.max_tasks),
        "unseen_prices": evaluate(args.run, args.out / "unseen_prices", *base,
                                  f"--config.experts.prices_file={prices}",
                                  max_tasks=args.max_tasks),
        "unseen_experts": evaluate(args.run, args.out / "unseen_experts",
                                   f"--config.experts.file={renamed_file}",
                                   max_tasks=args.max_tasks),
    }
    (args.out / "table.json").write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
