"""Compare two runs' summary.json key by key, leaving out timings and paths.

    python research/compare_summaries.py runs/before/summary.json runs/after/summary.json

Prints JSON: how many keys were compared, which were left out (wall-clock times, the
workdir and the plot's path), the keys only one side has and every key whose value differs.
A refactor that changes no behaviour gives empty lists; it is how the training-loop redesign
was checked against the commit before it (docs/research/toolworld-log.md).
"""
import json
import sys

TIMING = ("time/", "wall_s", "wall_time_s", "eval_s", "train/wall_s")
PATHS = ("workdir", "pareto_png")
def flat(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out
def ignored(key):
    """Wall-clock times and paths differ between otherwise identical runs."""
    last = key.split(".")[-1]
    return key.startswith("final_metrics.time/") or last in TIMING or last in PATHS


a, b = (flat(json.load(open(p))) for p in sys.argv[1:3])
only_a = sorted(k for k in a if k not in b and not ignored(k))
only_b = sorted(k for k in b if k not in a and not ignored(k))
diff = sorted(k for k in a if k in b and not ignored(k) and a[k] != b[k])
print(json.dumps({"compared_keys": sum(1 for k in a if k in b and not ignored(k)),
                  "ignored": sorted(k for k in set(a) | set(b) if ignored(k)),
                  "only_in_first": only_a, "only_in_second": only_b,
                  "different": {k: [a[k], b[k]] for k in diff}}, indent=1))
