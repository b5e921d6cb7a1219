"""The cluster launchers (launch/tpu_pod.sh, slurm.sh, xpk.sh, jobset.sh) in --dry-run.

A dry run prints the commands a launch would run; these tests read them back the way a shell
would (shlex, and real bash where the quoting matters) and check what reaches every host: the
command intact, the worker/task fan-out and the ORCHESTRA_* variables. No cluster tool is run:
a tripwire folder first on PATH records any call of gcloud, Slurm, xpk or kubectl.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
SCRIPTS = ("tpu_pod.sh", "slurm.sh", "xpk.sh", "jobset.sh")
CLUSTER_TOOLS = ("gcloud", "sbatch", "srun", "scontrol", "xpk", "kubectl", "docker", "crane")
# Defaults the tests must not inherit from the machine they run on.
SCRUBBED_PREFIXES = ("TPU_", "SLURM_", "SBATCH_", "GCP_", "CLOUDSDK_", "XPK_", "ORCHESTRA_")

RECIPE_COMMAND = [
    "orchestra", "train", "--config", "experiments/orchestrator_qwen3_8b.py",
    "--workdir", "gs://bucket/run",
]
# Words a careless quoting would break: spaces, parentheses, a single quote, a dollar sign.
TRICKY_COMMAND = [*RECIPE_COMMAND, "--config.mesh.shape=(1, 8, 4)", "it's $HOME"]


@pytest.fixture
def tripwire(tmp_path: Path) -> Path:
    """A PATH folder whose cluster tools record their call in `calls.log` and fail."""
    bin_dir = tmp_path / "tripwire"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in CLUSTER_TOOLS:
        exe = bin_dir / tool
        exe.write_text(f'#!/bin/sh\necho "{tool} $*" >> {shlex.quote(str(log))}\nexit 97\n')
        exe.chmod(0o755)
    return bin_dir


def launch(script: str | Path, *args: str, tripwire: Path, env: dict[str, str] | None = None,
           ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run launch/SCRIPT (or the script at a path) ARGS with a scrubbed environment; by default
    expect exit 0 and no calls."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    base["PATH"] = f"{tripwire}{os.pathsep}{base.get('PATH', '')}"
    base.update(env or {})
    proc = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                          env=base, cwd=REPO, timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr
        calls = tripwire.parent / "calls.log"
        assert not calls.exists(), f"a dry run called a cluster tool: {calls.read_text()}"
    return proc


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.strip()]


def flag_value(words: list[str], flag: str) -> str:
    """The value of `--flag VALUE` or `--flag=VALUE` among shell words."""
    for i, word in enumerate(words):
        if word == flag:
            return words[i + 1]
        if word.startswith(flag + "="):
            return word[len(flag) + 1:]
    raise AssertionError(f"{flag} not in {words}")


def argv_echo() -> list[str]:
    """A command that prints its own arguments as JSON (to see what a shell handed over)."""
    return [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


# --- every launcher ------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_launcher_is_executable_bash_that_parses(script):
    path = LAUNCH / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_the_header_with_the_flags(script, tripwire):
    out = launch(script, "--help", tripwire=tripwire).stdout
    assert "--dry-run" in out and "COMMAND" in out
    # The script's own header (from line 2), not the one of the lib it shares its helpers with.
    assert out.splitlines()[0] == (LAUNCH / script).read_text().splitlines()[1].removeprefix("# ")
    assert "lib/common.sh" not in out


def test_shared_lib_parses():
    subprocess.run(["bash", "-n", str(LAUNCH / "lib" / "common.sh")], check=True)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", [["--dry-run"], ["--dry-run", "--"]])
def test_missing_command_is_an_error_that_says_so(script, args, tripwire):
    proc = launch(script, *args, tripwire=tripwire, ok=False)
    assert proc.returncode != 0
    assert "missing COMMAND" in proc.stderr and "--" in proc.stderr
    assert not (tripwire.parent / "calls.log").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flag_is_an_error_naming_it(script, tripwire):
    proc = launch(script, "--dry-run", "--frobnicate", "3", "--", "true", tripwire=tripwire,
                  ok=False)
    assert proc.returncode != 0
    assert "unknown flag '--frobnicate'" in proc.stderr


@pytest.mark.parametrize("script,flag", [("tpu_pod.sh", "--zone"), ("slurm.sh", "--nodes"),
                                         ("xpk.sh", "--cluster"), ("jobset.sh", "--image")])
def test_flag_without_value_is_an_error_naming_it(script, flag, tripwire):
    proc = launch(script, "--dry-run", flag, "--", "true", tripwire=tripwire, ok=False)
    assert proc.returncode != 0
    assert f"flag {flag} needs a value" in proc.stderr


# --- TPU pod slice ---------------------------------------------------------------------------


def tpu_pod_plan(tripwire: Path, *args: str, env: dict[str, str] | None = None,
                 command: list[str] = RECIPE_COMMAND) -> list[str]:
    return lines(launch("tpu_pod.sh", "--dry-run", *args, "--", *command, tripwire=tripwire,
                        env=env))


def test_tpu_pod_dry_run_of_the_recipe_needs_nothing_else(tripwire):
    plan = tpu_pod_plan(tripwire)
    assert len(plan) == 5  # describe-or-create, pack, scp, install, run
    describe, create = plan[0].split(" >/dev/null 2>&1 || ")
    assert shlex.split(describe)[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe",
                                         "orchestra"]
    create_words = shlex.split(create)
    assert create_words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "orchestra"]
    assert flag_value(create_words, "--zone") == "us-east5-a"
    assert flag_value(create_words, "--accelerator-type") == "v5p-128"
    assert flag_value(create_words, "--version") == "v2-alpha-tpuv5"
    assert flag_value(shlex.split(describe), "--zone") == "us-east5-a"
    # Everything after the slice exists goes to every worker.
    remote_lines = [line for line in plan if line.startswith("gcloud compute tpus tpu-vm s")]
    assert len(remote_lines) == 3
    for line in remote_lines:
        assert "--worker=all" in shlex.split(line)
    assert "--project" not in plan[-1]  # gcloud's configured project unless one is given


def test_tpu_pod_runs_the_command_intact_on_every_worker(tripwire):
    run_words = shlex.split(tpu_pod_plan(tripwire, command=TRICKY_COMMAND)[-1])
    assert run_words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "orchestra"]
    assert "--worker=all" in run_words
    remote = shlex.split(flag_value(run_words, "--command"))
    assert remote[:3] == [".", "orchestra_venv/bin/activate", "&&"]
    assert remote[-len(TRICKY_COMMAND):] == TRICKY_COMMAND
    assert "gs://bucket/run" in remote
    assert not any(word.startswith("ORCHESTRA_") for word in remote)  # the pod's env suffices


def test_tpu_pod_remote_command_survives_a_real_shell(tripwire, tmp_path):
    """What ssh --command hands the worker's bash gives COMMAND exactly its words."""
    command = [*argv_echo(), *TRICKY_COMMAND[1:]]
    run_words = shlex.split(tpu_pod_plan(tripwire, "--env", "GREETING=a b",
                                         command=command)[-1])
    home = tmp_path / "worker_home"
    (home / "orchestra_venv" / "bin").mkdir(parents=True)
    (home / "orchestra_venv" / "bin" / "activate").write_text("export ACTIVATED=1\n")
    (home / "orchestra_jax").mkdir()
    proc = subprocess.run(["bash", "-c", flag_value(run_words, "--command")], cwd=home,
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == TRICKY_COMMAND[1:]
    env_check = subprocess.run(
        ["bash", "-c", flag_value(run_words, "--command").rsplit("&&", 1)[0]
         + ' && echo "$ACTIVATED $PWD $GREETING"'],
        cwd=home, capture_output=True, text=True, check=True)
    assert env_check.stdout.split(" ", 2) == ["1", str(home / "orchestra_jax"), "a b\n"]


def test_tpu_pod_environment_defaults_and_flag_overrides(tripwire):
    env = {"TPU_NAME": "envpod", "TPU_ZONE": "europe-west4-b", "TPU_ACCELERATOR": "v6e-64",
           "GCP_PROJECT": "env-project"}
    plan = tpu_pod_plan(tripwire, env=env)
    create = shlex.split(plan[0].split(" || ")[1])
    assert create[5] == "envpod"
    assert flag_value(create, "--zone") == "europe-west4-b"
    assert flag_value(create, "--accelerator-type") == "v6e-64"
    assert flag_value(create, "--version") == "v2-alpha-tpuv6e"
    gcloud_calls = [*plan[0].split(" >/dev/null 2>&1 || "), *plan[2:]]
    assert len(gcloud_calls) == 5
    for call in gcloud_calls:
        assert flag_value(shlex.split(call), "--project") == "env-project"

    plan = tpu_pod_plan(tripwire, "--name", "flagpod", "--zone", "us-central2-b",
                        "--accelerator", "v4-32", "--project", "flag-project",
                        "--version", "custom-runtime", env=env)
    create = shlex.split(plan[0].split(" || ")[1])
    assert create[5] == "flagpod"
    assert flag_value(create, "--zone") == "us-central2-b"
    assert flag_value(create, "--accelerator-type") == "v4-32"
    assert flag_value(create, "--version") == "custom-runtime"
    assert flag_value(create, "--project") == "flag-project"
    run_words = shlex.split(plan[-1])
    assert run_words[5] == "flagpod" and flag_value(run_words, "--zone") == "us-central2-b"


def test_tpu_pod_copies_the_checkout_or_clones_a_url(tripwire):
    plan = tpu_pod_plan(tripwire)
    assert plan[1].startswith(f"git -C {REPO} ls-files")  # git's files only: no .venv, no runs
    scp = shlex.split(plan[2])
    assert scp[4] == "scp" and scp[-1] == "--worker=all"
    assert 'pip install -q -e "./orchestra_jax[tpu]"' in flag_value(shlex.split(plan[3]),
                                                                    "--command")

    plan = tpu_pod_plan(tripwire, "--repo", "https://example.invalid/orchestra_jax.git",
                        "--ref", "v1")
    assert len(plan) == 3 and not any(" scp " in line for line in plan)
    install = flag_value(shlex.split(plan[1]), "--command")
    assert "git clone -q https://example.invalid/orchestra_jax.git orchestra_jax" in install
    assert "fetch -q origin v1" in install

    plan = tpu_pod_plan(tripwire, "--no-setup")
    assert len(plan) == 2


def test_tpu_pod_tarball_carries_the_launchers_and_their_lib(tripwire, tmp_path):
    """The pack command of the plan, run for real: the workers get launch/lib/common.sh too."""
    plan = tpu_pod_plan(tripwire, env={"TMPDIR": str(tmp_path)})
    subprocess.run(["bash", "-c", plan[1]], check=True, capture_output=True)
    listing = subprocess.run(["tar", "-tzf", str(tmp_path / "orchestra_jax-orchestra.tar.gz")],
                             check=True, capture_output=True, text=True).stdout.split()
    for path in ("launch/lib/common.sh", *(f"launch/{script}" for script in SCRIPTS)):
        assert path in listing


# --- Slurm -----------------------------------------------------------------------------------


def srun_line(plan: list[str]) -> list[str]:
    (line,) = [line for line in plan if " srun " in line and not line.startswith("#")]
    return shlex.split(line)


def test_slurm_inside_an_allocation_one_task_per_node_first_node_coordinates(tripwire):
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_JOB_NUM_NODES": "2"}
    plan = lines(launch("slurm.sh", "--dry-run", "--", *RECIPE_COMMAND, tripwire=tripwire,
                        env=env))
    assert not any(line.startswith("sbatch") for line in plan)  # already allocated
    words = srun_line(plan)
    assert words[:2] == ["ORCHESTRA_COORDINATOR=gpu07:8476", "ORCHESTRA_NUM_PROCESSES=2"]
    assert words[2] == "srun"
    assert "--ntasks-per-node=1" in words and "--nodes=2" in words and "--ntasks=2" in words
    assert words[-len(RECIPE_COMMAND):] == RECIPE_COMMAND
    tasks = [line for line in plan if line.startswith("# task")]
    assert tasks == [
        "# task 0 on gpu07: ORCHESTRA_COORDINATOR=gpu07:8476 ORCHESTRA_NUM_PROCESSES=2 "
        "ORCHESTRA_PROCESS_ID=0",
        "# task 1 on gpu08: ORCHESTRA_COORDINATOR=gpu07:8476 ORCHESTRA_NUM_PROCESSES=2 "
        "ORCHESTRA_PROCESS_ID=1",
    ]


def test_slurm_task_gets_its_process_id_from_slurm_procid(tripwire):
    """The per-task wrapper srun starts, run by real bash as task 1 would run it."""
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n1,n2,n3"}
    show_env = [sys.executable, "-c",
                "import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
                "if k.startswith('ORCHESTRA_')}))"]
    words = srun_line(lines(launch("slurm.sh", "--dry-run", "--port", "9999", "--", *show_env,
                                   tripwire=tripwire, env=env)))
    assignments = dict(word.split("=", 1) for word in words[:2])
    task = words[words.index("bash"):]
    proc = subprocess.run(task, env={**assignments, "SLURM_PROCID": "1",
                                     "PATH": os.environ["PATH"]},
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == {"ORCHESTRA_COORDINATOR": "n1:9999",
                                       "ORCHESTRA_NUM_PROCESSES": "3",
                                       "ORCHESTRA_PROCESS_ID": "1"}


def test_slurm_from_a_login_node_submits_itself(tripwire):
    plan = lines(launch("slurm.sh", "--dry-run", "--nodelist", "node[1-3]", "--partition", "gpu",
                        "--time", "1:00:00", "--gpus-per-node", "4", "--", *TRICKY_COMMAND,
                        tripwire=tripwire))
    sbatch = shlex.split(plan[0])
    assert sbatch[0] == "sbatch"
    for flag in ("--nodes=3", "--ntasks-per-node=1", "--gpus-per-node=4", "--partition=gpu",
                 "--time=1:00:00", "--nodelist=node[1-3]", "--exclusive"):
        assert flag in sbatch
    script_at = sbatch.index(str(LAUNCH / "slurm.sh"))
    assert sbatch[script_at + 1:script_at + 4] == ["--port", "8476", "--"]
    assert sbatch[script_at + 4:] == TRICKY_COMMAND
    words = srun_line(plan)
    assert words[0] == "ORCHESTRA_COORDINATOR=node1:8476"
    assert words[-len(TRICKY_COMMAND):] == TRICKY_COMMAND
    assert [line.split(":")[0] for line in plan if line.startswith("# task")] == [
        "# task 0 on node1", "# task 1 on node2", "# task 2 on node3"]


def test_slurm_expands_host_lists_in_bash(tripwire):
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "a[01-02,10]-ib,b7,c[8-9]"}
    plan = lines(launch("slurm.sh", "--dry-run", "--", "true", tripwire=tripwire, env=env))
    hosts = [line.split(" on ")[1].split(":")[0] for line in plan if line.startswith("# task")]
    assert hosts == ["a01-ib", "a02-ib", "a10-ib", "b7", "c8", "c9"]
    assert srun_line(plan)[0] == "ORCHESTRA_COORDINATOR=a01-ib:8476"


def test_slurm_without_a_node_list_prints_the_scontrol_expression(tripwire):
    plan = lines(launch("slurm.sh", "--dry-run", "--nodes", "4", "--", "true",
                        tripwire=tripwire))
    assert "--nodes=4" in shlex.split(plan[0])
    (line,) = [line for line in plan if " srun " in line]
    assert line.startswith(
        'ORCHESTRA_COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):8476"'
        " ORCHESTRA_NUM_PROCESSES=4 srun ")
    assert sum(line.startswith("# task") for line in plan) == 4


def test_slurm_job_copy_in_the_spool_folder_finds_the_lib(tripwire, tmp_path):
    """Slurm runs a copy of the batch script from its spool folder, away from launch/lib."""
    spool = tmp_path / "spool" / "job42"
    spool.mkdir(parents=True)
    copy = spool / "slurm_script"
    copy.write_text((LAUNCH / "slurm.sh").read_text())
    allocation = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "n[1-2]"}
    args = ("--dry-run", "--", *RECIPE_COMMAND)
    expected = launch("slurm.sh", *args, tripwire=tripwire, env=allocation).stdout
    # `sbatch launch/slurm.sh` by hand, from the repository root.
    by_hand = launch(copy, *args, tripwire=tripwire,
                     env={**allocation, "SLURM_SUBMIT_DIR": str(REPO)})
    assert by_hand.stdout == expected
    # Submitted by slurm.sh itself, which exports its folder, from anywhere.
    submitted = launch(copy, *args, tripwire=tripwire,
                       env={**allocation, "SLURM_SUBMIT_DIR": str(tmp_path),
                            "ORCHESTRA_LAUNCH_DIR": str(LAUNCH)})
    assert submitted.stdout == expected
    lost = launch(copy, *args, tripwire=tripwire,
                  env={**allocation, "SLURM_SUBMIT_DIR": str(tmp_path)}, ok=False)
    assert lost.returncode == 2 and "lib/common.sh not found" in lost.stderr


def test_slurm_submission_tells_the_job_where_the_lib_is(tmp_path):
    """Without --dry-run, sbatch (here a stand-in that records its environment) gets the
    launch folder in ORCHESTRA_LAUNCH_DIR, which the job's spool copy sources the lib from."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text('#!/bin/sh\necho "$ORCHESTRA_LAUNCH_DIR"\n')
    sbatch.chmod(0o755)
    proc = launch("slurm.sh", "--", "true", tripwire=bin_dir)
    assert proc.stdout == f"{LAUNCH}\n"
    assert proc.stderr.startswith("+ sbatch ")


def test_slurm_node_count_must_match_the_allocation(tripwire):
    proc = launch("slurm.sh", "--dry-run", "--nodes", "3", "--nodelist", "n[1-2]", "--", "true",
                  tripwire=tripwire, ok=False)
    assert proc.returncode != 0 and "--nodes 3" in proc.stderr and "2 nodes" in proc.stderr


# --- xpk -------------------------------------------------------------------------------------


def test_xpk_tpu_workload_carries_the_command_and_the_slice(tripwire):
    plan = lines(launch("xpk.sh", "--dry-run", "--cluster", "c1", "--workload", "w1", "--",
                        *TRICKY_COMMAND, tripwire=tripwire))
    staging, create = plan
    assert "ls-files" in staging and "orchestra_jax-xpk-w1" in staging  # git's files, staged
    words = shlex.split(create)
    assert words[:3] == ["xpk", "workload", "create"]
    assert flag_value(words, "--cluster") == "c1" and flag_value(words, "--workload") == "w1"
    assert flag_value(words, "--tpu-type") == "v5p-128"
    assert flag_value(words, "--num-slices") == "1"
    assert flag_value(words, "--script-dir").endswith("orchestra_jax-xpk-w1")
    remote = shlex.split(flag_value(words, "--command"))
    assert remote[-len(TRICKY_COMMAND):] == TRICKY_COMMAND
    assert remote[:5] == ["pip", "install", "-q", "-e", ".[tpu]"]  # the package's TPU extra
    assert not any(word.startswith("ORCHESTRA_") for word in remote)


def test_xpk_gpu_workload_maps_xpk_variables_to_orchestra_ones(tripwire):
    command = [*RECIPE_COMMAND, "--config.mesh.shape=(1, 4, 4)"]
    plan = lines(launch("xpk.sh", "--dry-run", "--workload", "w2", "--device-type",
                        "h100-80gb-8", "--num-nodes", "2", "--docker-image", "gcr.io/p/img:1",
                        "--", *command, tripwire=tripwire))
    assert len(plan) == 1  # a ready image: nothing to stage
    words = shlex.split(plan[0])
    assert flag_value(words, "--device-type") == "h100-80gb-8"
    assert flag_value(words, "--num-nodes") == "2"
    assert flag_value(words, "--docker-image") == "gcr.io/p/img:1"
    remote = flag_value(words, "--command")
    assert ("export ORCHESTRA_COORDINATOR=$JAX_COORDINATOR_ADDRESS:$JAX_COORDINATOR_PORT "
            "ORCHESTRA_NUM_PROCESSES=$NNODES ORCHESTRA_PROCESS_ID=$NODE_RANK && ") in remote
    assert shlex.split(remote)[-len(command):] == command
    assert '"' not in remote and "\\" not in remote  # xpk writes it into a "..." YAML string


def test_xpk_staged_copy_carries_the_lib_and_its_launchers_run(tripwire, tmp_path):
    """The staging command of the plan, run for real: the copy xpk layers onto the image holds
    launch/lib/common.sh, and a launcher runs from it."""
    (staging, _) = lines(launch("xpk.sh", "--dry-run", "--workload", "w1", "--", "true",
                                tripwire=tripwire, env={"TMPDIR": str(tmp_path)}))
    subprocess.run(["bash", "-c", staging], check=True, capture_output=True)
    stage = tmp_path / "orchestra_jax-xpk-w1"
    assert (stage / "launch" / "lib" / "common.sh").is_file()
    staged = launch(stage / "launch" / "jobset.sh", "--render", "--image", "i", "--", "true",
                    tripwire=tripwire)
    assert staged.stdout == launch("jobset.sh", "--render", "--image", "i", "--", "true",
                                   tripwire=tripwire).stdout


def test_xpk_gpu_refuses_characters_xpk_cannot_carry(tripwire):
    proc = launch("xpk.sh", "--dry-run", "--device-type", "h100-80gb-8", "--", "echo", 'a"b',
                  tripwire=tripwire, ok=False)
    assert proc.returncode != 0 and "--device-type" in proc.stderr


# --- JobSet ----------------------------------------------------------------------------------

def parse_yaml(text: str) -> dict:
    return pytest.importorskip("yaml").safe_load(text)


def jobset(tripwire: Path, *args: str, command: list[str] = RECIPE_COMMAND) -> dict:
    proc = launch("jobset.sh", "--render", "--image", "img:1", *args, "--", *command,
                  tripwire=tripwire)
    return parse_yaml(proc.stdout)


def pod_spec(manifest: dict) -> dict:
    (job,) = manifest["spec"]["replicatedJobs"]
    return job["template"]["spec"]["template"]["spec"]


def test_jobset_tpu_slice_one_pod_per_vm_no_orchestra_variables(tripwire):
    manifest = jobset(tripwire, "--tpu-type", "v5p-128")
    assert manifest["kind"] == "JobSet" and manifest["metadata"]["name"] == "orchestra"
    job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 16  # 64 chips, 4 per VM
    assert job["completionMode"] == "Indexed"
    spec = pod_spec(manifest)
    assert spec["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                    "cloud.google.com/gke-tpu-topology": "4x4x4"}
    (container,) = spec["containers"]
    assert container["image"] == "img:1"
    assert container["resources"]["limits"] == {"google.com/tpu": 4}
    assert "env" not in container


def test_jobset_gpu_pods_get_coordinator_count_and_completion_index(tripwire):
    manifest = jobset(tripwire, "--name", "orch8b", "--device-type", "h100-80gb-8",
                      "--num-nodes", "2")
    job = manifest["spec"]["replicatedJobs"][0]
    assert job["name"] == "workers" and job["template"]["spec"]["parallelism"] == 2
    spec = pod_spec(manifest)
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    (container,) = spec["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
    env = {item["name"]: item for item in container["env"]}
    # Pod 0 of the JobSet, through the headless service named after it.
    assert env["ORCHESTRA_COORDINATOR"]["value"] == "orch8b-workers-0-0.orch8b:8476"
    assert env["ORCHESTRA_NUM_PROCESSES"]["value"] == "2"
    assert env["ORCHESTRA_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")


def test_jobset_container_script_runs_the_command_intact(tripwire):
    command = [*argv_echo(), *TRICKY_COMMAND[1:]]
    (container,) = pod_spec(jobset(tripwire, "--device-type", "h100-80gb-8",
                                   command=command))["containers"]
    assert container["command"][:2] == ["bash", "-c"]
    proc = subprocess.run(container["command"], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == TRICKY_COMMAND[1:]


def test_jobset_dry_run_is_a_pasteable_kubectl_apply(tripwire):
    args = ("--image", "img:1", "--tpu-type", "v6e-16", "--", *RECIPE_COMMAND)
    plan = launch("jobset.sh", "--dry-run", *args, tripwire=tripwire).stdout.splitlines()
    assert plan[0] == "kubectl apply -f - <<'ORCHESTRA_JOBSET'"
    assert plan[-1] == "ORCHESTRA_JOBSET"
    rendered = launch("jobset.sh", "--render", *args, tripwire=tripwire).stdout
    assert "\n".join(plan[1:-1]) + "\n" == rendered
    spec = pod_spec(parse_yaml(rendered))
    assert spec["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "4x4"


def test_jobset_apply_needs_an_image_and_unknown_slices_need_a_topology(tripwire):
    proc = launch("jobset.sh", "--", "true", tripwire=tripwire, ok=False)
    assert proc.returncode != 0 and "--image is required" in proc.stderr
    assert not (tripwire.parent / "calls.log").exists()
    proc = launch("jobset.sh", "--render", "--image", "i", "--tpu-type", "v5p-96", "--", "true",
                  tripwire=tripwire, ok=False)
    assert proc.returncode != 0 and "--topology" in proc.stderr
    manifest = jobset(tripwire, "--tpu-type", "v5p-96", "--topology", "4x4x3")
    assert manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] == 12
