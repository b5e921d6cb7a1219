"""One process with 8 devices against N processes sharing them, on the toy recipe: the largest
per-step difference of every logged number, and the wall time of each layout.

    python research/multihost_equivalence.py [--steps 3] [--layouts 1x8,2x4,4x2] [--out FILE]

Each layout is a real `orchestra train` (several processes through `launch/local.sh`, meeting
at a coordinator on 127.0.0.1 and reducing through gloo) of `experiments/toy_target_call.py`
cut to 4 x 4 episodes a step, with an entropy bonus so that every update moves the parameters.
Prints JSON: per layout the wall time, the number of event files, and the largest absolute
difference from the first layout over all non-timing scalars (and the tag where it occurs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from forward import cpu_model  # noqa: E402 - the benchmarks' reading of /proc/cpuinfo

SMALL = ["--config.mesh.shape=(1,-1,1)", "--config.rollout.prompts_per_step=4",
         "--config.rollout.group_size=4", "--config.rollout.max_batch_size=16",
         "--config.train.mini_batch_size=16", "--config.loss.entropy_coef=0.01",
         "--config.eval.final=False"]


def _scalars(workdir: Path) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {t: {e.step: e.value for e in events.Scalars(t)} for t in events.Tags()["scalars"]
            if not t.startswith("time/") and t != "train/wall_s"}


def run_layout(processes: int, devices: int, steps: int, workdir: Path) -> float:
    command = [sys.executable, "-m", "orchestra_jax.cli", "train", "--config",
               str(ROOT / "experiments" / "toy_target_call.py"), "--workdir", str(workdir),
               f"--config.train.steps={steps}", *SMALL]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env["JAX_PLATFORMS"] = "cpu"
    if processes > 1:
        command = ["bash", str(ROOT / "launch" / "local.sh"), "--processes", str(processes),
                   "--devices-per-process", str(devices), "--", *command]
    else:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layouts", default="1x8,2x4,4x2", help="PROCESSESxDEVICES, ...")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    layouts = [tuple(int(n) for n in item.split("x")) for item in args.layouts.split(",")]
    results, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for processes, devices in layouts:
            workdir = Path(tmp) / f"{processes}x{devices}"
            wall = run_layout(processes, devices, args.steps, workdir)
            scalars = _scalars(workdir)
            entry = {"layout": f"{processes}x{devices}", "wall_s": round(wall, 1),
                     "event_files": len(list((workdir / "tensorboard").glob("*tfevents*"))),
                     "tags": len(scalars)}
            if reference is None:
                reference = scalars
            else:
                worst = max(((abs(v - scalars[t][s]), t) for t in reference
                             for s, v in reference[t].items()), default=(0.0, None))
                entry.update(max_abs_diff=worst[0], at_tag=worst[1],
                             same_tags=set(scalars) == set(reference))
            results.append(entry)
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "steps": args.steps,
           "layouts": results}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
