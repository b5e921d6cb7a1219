"""Run untrusted Python (code an LLM wrote) in a contained child process.

`run_code(code)` starts a fresh interpreter in its own session with a temporary working
directory, a scrubbed environment, resource limits and, where the OS allows, namespaces and an
unprivileged user; it captures stdout and stderr (bounded), kills the whole process tree on the
wall-clock limit, and classifies the outcome as a `ToolErrorKind`. It never raises for anything
the code does: every outcome is a `SandboxResult`, and `enforced` lists the protections that were
actually active for that run, so a caller (and a metrics dashboard) can see what a laptop run
did not get.

How the child starts. The parent spawns `python -I -S -c <stage 1>` in a new session. Stage 1
is trusted code that runs briefly as the parent's user: it enters namespaces, mounts, sets
rlimits, drops privileges, then `execve`s stage 2, `python -I -B -u -c <stage 2> main.py`.
Stage 2 installs a `sys.addaudithook` guard and runs the user's `main.py` as `__main__`.
Setting things up in a separate process (instead of a `preexec_fn`) keeps the parent's threads
and locks out of the forked child.

What is enforced where ("root" = Linux with a root parent, the training hosts; "user" =
Linux with an unprivileged parent; "macOS"). The names in brackets are what `enforced` lists.

* Everywhere: own session, and the whole process group SIGKILLed at the wall-clock limit, on
  output overflow, on cancellation and after the program ends [session, wall_time]; stdout and
  stderr read incrementally and capped [output_limit]; scrubbed environment: PATH, LANG,
  HOME=TMPDIR=workdir, PYTHONNOUSERSITE/DONTWRITEBYTECODE/UNBUFFERED and one-thread settings
  for numeric libraries, nothing else of the parent's [clean_env]; a fresh temporary workdir,
  removed afterwards [temp_workdir]; rlimits on CPU seconds, file size, open files, no core
  dumps [rlimit_cpu, rlimit_fsize, rlimit_nofile, rlimit_core]; the audit hook [audit_hook].
* Address space (`memory_mb`) [rlimit_as]: root and user; macOS ignores RLIMIT_AS.
* Processes [rlimit_nproc]: root: exactly `max_processes` tasks, because each concurrent run
  gets a uid of its own (a pool from SANDBOX_UID_BASE, locked across processes). user: the
  limit counts all of the user's tasks, so it is set to their current count + `max_processes`.
  macOS: not set.
* Unprivileged uid [unprivileged_uid]: root only (the per-slot uid, no groups). It is also what
  makes the parent's `/proc/<pid>/environ` unreadable; a user's child is in a user namespace
  instead, which the kernel also denies that read across. The child still sees other
  processes' command lines (there is no PID namespace). If the interpreter sits behind a
  private directory and no mount namespace is available to uncover it, the code runs as root
  (logged once, and absent from `enforced`) rather than not at all.
* Namespaces (Linux; for the user only where unprivileged user namespaces are allowed):
  network [network_namespace] (only a loopback that is down: nothing is reachable, not even
  127.0.0.1; skipped when `network=True`), IPC [ipc_namespace], mount [mount_namespace],
  user [user_namespace] for the user. In the mount namespace: every mount is remounted
  read-only and nosuid except the workdir [readonly_filesystem], the workdir is a size-capped
  tmpfs (all files together at most 4 x `max_file_bytes`) [workdir_tmpfs], /dev/shm is a
  private small tmpfs [private_dev_shm], and for root, private directories on the
  interpreter's path (a 0700 /root holding pyenv) are covered by an empty tmpfs with only the
  interpreter bound back, which also hides the rest of them [private_dirs_masked]. Reading
  world-readable files elsewhere stays possible.
* Linux: no_new_privs (setuid binaries give nothing back) [no_new_privs]; the sandbox is
  SIGKILLed if the parent dies [parent_death_kill]; processes that left the process group are
  found by session [session_sweep] and, for root, by uid, which also catches ones that called
  setsid() [uid_sweep]. macOS relies on the process group alone.

The audit hook is a second layer only: it gives readable errors for the common cases (an
`open('/etc/x', 'w')`, a `socket.connect`) but ctypes or a child process bypass it, which is why
the OS layers above do the real work where they exist.

Outcome classification (first match wins): killed by the wall-clock limit -> `WALL_TIME_LIMIT`
(`PROCESS_LIMIT` if the sandbox was at its process cap then: a fork bomb); output over the cap ->
`OUTPUT_LIMIT` (the group is killed at once: a program printing forever stops there);
SIGXCPU, or SIGKILL after the CPU limit -> `CPU_TIME_LIMIT`; SIGXFSZ, "File too large" or a
full workdir -> `OUTPUT_LIMIT`; `MemoryError` (or an allocation failure, or the kernel's OOM
killer) -> `MEMORY_LIMIT`; "Resource temporarily unavailable" from fork or thread creation ->
`PROCESS_LIMIT`; another signal -> `KILLED`; another non-zero exit -> `NONZERO_EXIT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import inspect
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orchestra_jax.tools.results import ToolErrorKind

logger = logging.getLogger(__name__)

#: First uid of the pool of unprivileged uids a root parent runs sandboxes as (one per slot, so
#: RLIMIT_NPROC counts only that sandbox's processes). Override with ORCHESTRA_SANDBOX_UID_BASE
#: if the range collides with real users on the host.
SANDBOX_UID_BASE = int(os.environ.get("ORCHESTRA_SANDBOX_UID_BASE", "1900000000"))
#: How many uids the pool holds: the most sandboxes that can run at once on one host.
SANDBOX_UID_COUNT = 1024

_SCRIPT_NAME = "main.py"
#: Size of the tmpfs mounted as the working directory (files the code writes, all together).
_WORKDIR_BYTES_PER_FILE_LIMIT = 4
_DEV_SHM_BYTES = 64 * 1024 * 1024
#: How long to keep draining pipes after the group was killed (an escaped process may hold them).
_DRAIN_AFTER_EXIT_S = 1.0
#: How long to wait for a SIGKILLed child to be reaped before giving up on it.
_REAP_TIMEOUT_S = 10.0
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_PROCESS_MARKERS = ("Resource temporarily unavailable", "can't start new thread")


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run produced.

    `exit_code` is the exit status, `-signal` when a signal ended the program (the `subprocess`
    convention), or None when it never started. `truncated` says stdout or stderr hit
    `max_output_bytes`. `enforced` names the protections that were active (see the module
    docstring), e.g. `("session", "rlimit_as", "unprivileged_uid", "network_namespace", ...)`.
    """

    stdout: str
    stderr: str
    error_kind: ToolErrorKind | None
    exit_code: int | None
    wall_s: float
    truncated: bool
    enforced: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.error_kind is None


async def run_code(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 512,
    *,
    cpu_time_s: float | None = None,
    max_output_bytes: int = 64_000,
    max_file_bytes: int = 16_000_000,
    max_processes: int = 64,
    network: bool = False,
) -> SandboxResult:
    """Run `code` as a Python program in the sandbox and report what happened.

    `timeout_s` is the wall-clock limit of the whole run; `cpu_time_s` the CPU-seconds limit
    of each process (default: a backstop just above `timeout_s`, so a busy loop is reported
    as a wall-clock kill); `memory_mb` the address-space limit per process; `max_file_bytes`
    the largest file the code may write; `max_processes` how many processes and threads it may
    have at once; `network=True` keeps the host network reachable.
    """
    problem = _check_arguments(
        code, timeout_s, memory_mb, cpu_time_s, max_output_bytes, max_file_bytes, max_processes
    )
    if problem is not None:
        return SandboxResult("", problem, ToolErrorKind.INVALID_ARGUMENTS, None, 0.0, False, ())
    run = _Run(
        code=code,
        timeout_s=float(timeout_s),
        memory_mb=int(memory_mb),
        cpu_time_s=None if cpu_time_s is None else float(cpu_time_s),
        max_output_bytes=int(max_output_bytes),
        max_file_bytes=int(max_file_bytes),
        max_processes=int(max_processes),
        network=bool(network),
    )
    try:
        return await run.execute()
    except Exception as exc:
        # The host failed us (no temp space, no fds): still a result, never a dead training run.
        logger.exception("code sandbox failed")
        return SandboxResult(
            "", f"sandbox failed: {type(exc).__name__}: {exc}", ToolErrorKind.TOOL_EXCEPTION,
            None, 0.0, False, (),
        )  # fmt: skip
    finally:
        run.cleanup()


def _check_arguments(
    code: object,
    timeout_s: object,
    memory_mb: object,
    cpu_time_s: object,
    max_output_bytes: object,
    max_file_bytes: object,
    max_processes: object,
) -> str | None:
    """Say what is wrong with the arguments, in words naming the argument, or None."""
    if not isinstance(code, str):
        return f"run_code: `code` must be a str, got {type(code).__name__}"
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"run_code: `code` is not encodable as UTF-8 ({exc.reason} at {exc.start})"
    numbers = {
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
        "max_output_bytes": max_output_bytes,
        "max_file_bytes": max_file_bytes,
        "max_processes": max_processes,
    }
    if cpu_time_s is not None:
        numbers["cpu_time_s"] = cpu_time_s
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"run_code: `{name}` must be a number, got {type(value).__name__}"
        if not (math.isfinite(value) and value > 0):
            return f"run_code: `{name}` must be a finite number > 0, got {value!r}"
    return None


# ------------------------------------------------------------------------------------------------
# The parent side.


class _Run:
    """One sandboxed execution: spawn, supervise, classify, clean up."""

    def __init__(
        self,
        *,
        code: str,
        timeout_s: float,
        memory_mb: int,
        cpu_time_s: float | None,
        max_output_bytes: int,
        max_file_bytes: int,
        max_processes: int,
        network: bool,
    ):
        self.code = code
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.cpu_time_s = cpu_time_s
        self.max_output_bytes = max_output_bytes
        self.max_file_bytes = max_file_bytes
        self.max_processes = max_processes
        self.network = network
        self.linux = sys.platform.startswith("linux")
        self.privileged = os.geteuid() == 0
        self.workdir: str | None = None
        self.uid_slot: _UidSlot | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.readers: list[_PipeReader] = []
        self.reaped = False
        self.killed_for: str | None = None  # "wall" or "output"
        self.process_cap_hit = False

    # -- the run --------------------------------------------------------------------------------
    async def execute(self) -> SandboxResult:
        loop = asyncio.get_running_loop()
        self.workdir = tempfile.mkdtemp(prefix="orchestra-sandbox-")
        with open(os.path.join(self.workdir, _SCRIPT_NAME), "w", encoding="utf-8") as script:
            script.write(self.code)
        uid = gid = None
        if self.privileged:
            self.uid_slot = _UidSlot.acquire()
            if self.uid_slot is not None:
                uid = gid = self.uid_slot.uid
                os.chown(self.workdir, uid, gid)
                os.chown(os.path.join(self.workdir, _SCRIPT_NAME), uid, gid)
        spec = self._launch_spec(uid, gid)
        status_r, status_w = os.pipe()
        spec["status_fd"] = status_w
        oom_before = _oom_kills()
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _stage1_source(), json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=spec["env"],
                start_new_session=True,
                pass_fds=(status_w,),
                cwd="/",
            )
        except OSError as exc:
            os.close(status_r)
            return SandboxResult(
                "", f"sandbox could not start: {exc}", ToolErrorKind.TOOL_EXCEPTION, None,
                0.0, False, (),
            )  # fmt: skip
        finally:
            os.close(status_w)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        overflow = asyncio.Event()
        stdout = _PipeReader(loop, self.proc.stdout.fileno(), self.max_output_bytes, overflow.set)
        stderr = _PipeReader(loop, self.proc.stderr.fileno(), self.max_output_bytes, overflow.set)
        status = _PipeReader(loop, status_r, 1 << 16, lambda: None, owns_fd=True)
        self.readers = [stdout, stderr, status]

        exit_task = asyncio.ensure_future(_wait_for_exit(self.proc.pid, self._kill_everything))
        overflow_task = asyncio.ensure_future(overflow.wait())
        try:
            done, _ = await asyncio.wait(
                {exit_task, overflow_task},
                timeout=self.timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if exit_task not in done:
                self.killed_for = "output" if overflow_task in done else "wall"
                self.process_cap_hit = self._count_processes() >= self.max_processes
                self._kill_everything()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exit_task), _REAP_TIMEOUT_S)
            wall_s = time.monotonic() - started
            if not exit_task.done():
                logger.error("sandbox process %d survived SIGKILL; abandoning it", self.proc.pid)
                self.reaped = True  # abandoned: cleanup must not block waiting for it again
                truncated = stdout.overflowed or stderr.overflowed
                return SandboxResult(
                    stdout.text(), stderr.text(), ToolErrorKind.KILLED, None, wall_s, truncated,
                    self._enforced(status.json_lines()),
                )  # fmt: skip
            wait_status, cpu_s = exit_task.result()
        finally:
            overflow_task.cancel()
            if not exit_task.done():
                exit_task.cancel()
        self.reaped = True
        exit_code = None if wait_status is None else _exit_code(wait_status)
        self.proc.returncode = -1 if exit_code is None else exit_code  # we reaped it; tell Popen
        if self.killed_for is None and (stdout.overflowed or stderr.overflowed):
            self.killed_for = "output"
        # Background processes were killed just before the reap (they may hold our pipes);
        # what they wrote before that is still in the pipes.
        await _drain(self.readers, _DRAIN_AFTER_EXIT_S)

        report = status.json_lines()
        enforced = self._enforced(report)
        err_text = stderr.text()
        setup_error = next((r["error"] for r in report if "error" in r), None)
        started_code = any("enforced" in r for r in report)
        if setup_error is not None or (not started_code and self.killed_for is None):
            detail = setup_error or "the sandbox launcher exited before running the code"
            return SandboxResult(
                stdout.text(), f"sandbox could not start: {detail}\n{err_text}".rstrip(),
                ToolErrorKind.TOOL_EXCEPTION, exit_code, wall_s, False, enforced,
            )  # fmt: skip
        kind = _classify(
            killed_for=self.killed_for,
            process_cap_hit=self.process_cap_hit,
            exit_code=exit_code,
            stderr=err_text,
            cpu_s=cpu_s,
            cpu_limit_s=self._cpu_limit_s()[0],
            oom_killed=_oom_kills() > oom_before,
        )
        return SandboxResult(
            stdout=stdout.text(),
            stderr=err_text,
            error_kind=kind,
            exit_code=exit_code,
            wall_s=wall_s,
            truncated=stdout.overflowed or stderr.overflowed,
            enforced=enforced,
        )

    def cleanup(self) -> None:
        """Kill and reap whatever is left, close pipes, remove the workdir, free the uid.

        Runs on every exit path, cancellation included, and never awaits: a cancelled caller
        must not leave a running process behind.
        """
        if self.proc is not None and not self.reaped:
            self._kill_everything()
            _reap_blocking(self.proc)
            self.reaped = True
        for reader in self.readers:
            reader.close()
        if self.proc is not None:
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self.workdir is not None:
            _remove_tree(self.workdir)
            self.workdir = None
        if self.uid_slot is not None:
            self.uid_slot.release()
            self.uid_slot = None

    # -- helpers --------------------------------------------------------------------------------
    def _cpu_limit_s(self) -> tuple[int, int]:
        if self.cpu_time_s is not None:
            soft = max(1, math.ceil(self.cpu_time_s))
        else:
            soft = math.ceil(self.timeout_s) + 1  # a backstop; the wall clock fires first
        return soft, soft + 1

    def _launch_spec(self, uid: int | None, gid: int | None) -> dict:
        assert self.workdir is not None
        mib = 1024 * 1024
        rlimits: dict[str, tuple[int, int]] = {
            "CPU": self._cpu_limit_s(),
            "AS": (self.memory_mb * mib, self.memory_mb * mib),
            "FSIZE": (self.max_file_bytes, self.max_file_bytes),
            "CORE": (0, 0),
            "NOFILE": (1024, 1024),
        }
        nproc = self._nproc_limit(uid)
        if nproc is not None:
            rlimits["NPROC"] = (nproc, nproc)
        env = {
            "PATH": _SAFE_PATH,
            "LANG": "C.UTF-8",
            "HOME": self.workdir,
            "TMPDIR": self.workdir,
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            # Numeric libraries start a thread per core; threads count against max_processes.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        stage2 = [
            sys.executable, "-I", "-B", "-u", "-X", "utf8", "-c", _stage2_source(),
            _SCRIPT_NAME, "1" if self.network else "0",
        ]  # fmt: skip
        expose = sorted(
            {
                os.path.realpath(p)
                for p in (sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix)
            }
        )
        return {
            "workdir": self.workdir,
            "script": _SCRIPT_NAME,
            "uid": uid,
            "gid": gid,
            "network": self.network,
            "rlimits": rlimits,
            "expose": expose,
            "workdir_bytes": len(self.code.encode())
            + max(self.max_file_bytes * _WORKDIR_BYTES_PER_FILE_LIMIT, 1 << 20),
            "shm_bytes": _DEV_SHM_BYTES,
            "parent_pid": os.getpid(),
            "argv": stage2,
            "env": env,
        }

    def _nproc_limit(self, uid: int | None) -> int | None:
        if uid is not None:
            return self.max_processes  # the slot's uid runs nothing else
        if not self.linux:
            return None  # cannot count the user's processes cheaply; not enforced
        # Without a uid of its own the limit counts every task of this user: allow the ones
        # that exist now plus the sandbox's share.
        mine = os.getuid()
        tasks = sum(p.threads for p in _processes() if p.uid == mine)
        return tasks + self.max_processes

    def _matches(self, proc: _ProcInfo) -> bool:
        assert self.proc is not None
        if proc.sid == self.proc.pid or proc.pgid == self.proc.pid:
            return True
        return self.uid_slot is not None and proc.uid == self.uid_slot.uid

    def _count_processes(self) -> int:
        if not self.linux:
            return 0
        return sum(p.threads for p in _processes() if self._matches(p))

    def _kill_everything(self) -> None:
        """SIGKILL the process group, then anything else of this sandbox that is still alive."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.linux:
            _kill_matching(self._matches)

    def _enforced(self, report: list[dict]) -> tuple[str, ...]:
        enforced = ["session", "wall_time", "output_limit", "clean_env", "temp_workdir"]
        for entry in report:
            enforced.extend(entry.get("enforced", ()))
        if self.linux:
            enforced.append("session_sweep")
            if self.uid_slot is not None and "unprivileged_uid" in enforced:
                enforced.append("uid_sweep")
        enforced.append("audit_hook")
        result = tuple(dict.fromkeys(enforced))
        wanted = ["unprivileged_uid", "readonly_filesystem"]
        if not self.network:
            wanted.append("network_namespace")
        _warn_once_if_weak(result, wanted, [n for e in report for n in e.get("notes", ())])
        return result


_warned: set[tuple[str, ...]] = set()


def _warn_once_if_weak(enforced: tuple[str, ...], wanted: list[str], notes: list[str]) -> None:
    """Log once per combination which important protections this host could not give."""
    missing = tuple(name for name in wanted if name not in enforced)
    if missing and missing not in _warned:
        _warned.add(missing)
        logger.warning(
            "code sandbox runs without %s on this host%s",
            ", ".join(missing),
            f" ({'; '.join(notes)})" if notes else "",
        )


def _classify(
    *,
    killed_for: str | None,
    process_cap_hit: bool,
    exit_code: int | None,
    stderr: str,
    cpu_s: float,
    cpu_limit_s: int,
    oom_killed: bool,
) -> ToolErrorKind | None:
    """Map how the program ended to a kind (see the module docstring for the order)."""
    if killed_for == "wall":
        return ToolErrorKind.PROCESS_LIMIT if process_cap_hit else ToolErrorKind.WALL_TIME_LIMIT
    if killed_for == "output":
        return ToolErrorKind.OUTPUT_LIMIT
    # Only the end of stderr says why the program died; earlier lines are its own output.
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    if exit_code is None:
        return ToolErrorKind.KILLED  # the status was lost; do not claim success
    if exit_code < 0:
        sig = -exit_code
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= cpu_limit_s - 0.1):
            return ToolErrorKind.CPU_TIME_LIMIT
        if sig == signal.SIGXFSZ:
            return ToolErrorKind.OUTPUT_LIMIT
        if (sig == signal.SIGKILL and oom_killed) or any(m in tail for m in _MEMORY_MARKERS):
            return ToolErrorKind.MEMORY_LIMIT
        return ToolErrorKind.KILLED
    if exit_code == 0:
        return None
    if any(m in tail for m in _MEMORY_MARKERS):
        return ToolErrorKind.MEMORY_LIMIT
    if "File too large" in tail or "No space left on device" in tail:
        return ToolErrorKind.OUTPUT_LIMIT
    if any(m in tail for m in _PROCESS_MARKERS) or process_cap_hit:
        return ToolErrorKind.PROCESS_LIMIT
    return ToolErrorKind.NONZERO_EXIT


def _exit_code(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


async def _wait_for_exit(pid: int, before_reap: Callable[[], None]) -> tuple[int | None, float]:
    """Wait for `pid` to end without blocking the loop; reap it; return (status, CPU seconds).

    We reap the child ourselves with `wait4` (rather than through asyncio's child watcher) to
    get its CPU time, which tells a CPU-limit kill from other SIGKILLs. `before_reap` runs while
    the ended child is still a zombie: its pid, which is also the sandbox's process-group and
    session id, cannot be reused by an unrelated process until the reap, so killing by group
    is safe then.
    """
    loop = asyncio.get_running_loop()
    pidfd = None
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
    if pidfd is not None:
        ready = loop.create_future()
        loop.add_reader(pidfd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    elif hasattr(os, "waitid"):  # no pidfd (macOS): poll, without reaping
        while True:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None and info.si_pid == pid:
                break
            await asyncio.sleep(0.01)
    else:  # neither: poll by reaping; the group is then killed just after instead of before
        while True:
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            if waited == pid:
                before_reap()
                return status, usage.ru_utime + usage.ru_stime
            await asyncio.sleep(0.01)
    before_reap()
    try:
        _, status, usage = os.wait4(pid, 0)
    except ChildProcessError:
        # Someone else's SIGCHLD handler reaped it first: the status is lost.
        logger.warning("sandbox process %d was reaped by another handler", pid)
        return None, 0.0
    return status, usage.ru_utime + usage.ru_stime


def _reap_blocking(proc: subprocess.Popen[bytes]) -> None:
    """Reap a child that was just SIGKILLed, from synchronous cleanup (bounded)."""
    end = time.monotonic() + _REAP_TIMEOUT_S
    while True:
        try:
            waited, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if waited == proc.pid:
            proc.returncode = _exit_code(status)
            return
        if time.monotonic() > end:
            logger.error("sandbox process %d survived SIGKILL; abandoning it", proc.pid)
            return
        time.sleep(0.005)


class _PipeReader:
    """Reads a pipe as data arrives, keeping at most `limit` bytes (the rest is counted only)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        limit: int,
        on_overflow: Callable[[], None],
        *,
        owns_fd: bool = False,
    ):
        self.loop = loop
        self.fd = fd
        self.limit = limit
        self.on_overflow = on_overflow
        self.owns_fd = owns_fd
        self.chunks: list[bytes] = []
        self.kept = 0
        self.overflowed = False
        self.eof = loop.create_future()
        self.watching = True
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._stop_watching()
            if not self.eof.done():
                self.eof.set_result(None)
            return
        room = self.limit - self.kept
        if room > 0:
            self.chunks.append(data[:room])
            self.kept += min(room, len(data))
        if len(data) > room and not self.overflowed:
            self.overflowed = True
            self.on_overflow()

    def _stop_watching(self) -> None:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.fd)

    def close(self) -> None:
        self._stop_watching()
        if self.owns_fd and self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def text(self) -> str:
        return self.data().decode("utf-8", errors="replace")

    def json_lines(self) -> list[dict]:
        lines = []
        for line in self.data().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    lines.append(value)
        return lines


async def _drain(readers: list[_PipeReader], timeout_s: float) -> None:
    pending = [r.eof for r in readers if not r.eof.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    state: str
    pgid: int
    sid: int
    uid: int
    threads: int


def _processes() -> Iterator[_ProcInfo]:
    """Every other process on the host, from /proc (Linux only); vanished ones are skipped.

    One file per process (`status` carries state, uid, thread count, group and session since
    Linux 4.1), because the sandbox scans /proc a few times per run.
    """
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = {}
        for line in status.split(b"\n"):
            key, _, value = line.partition(b":")
            if key in (b"State", b"Uid", b"Threads", b"NSpgid", b"NSsid"):
                fields[key] = value.split()
        try:
            if b"NSsid" not in fields:  # before Linux 4.1: group and session from `stat`
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                # The command name may hold spaces and parentheses: fields follow the last ')'.
                after = stat[stat.rfind(b")") + 2 :].split()
                fields[b"NSpgid"], fields[b"NSsid"] = [after[2]], [after[3]]
            yield _ProcInfo(
                pid=int(name),
                state=fields[b"State"][0].decode(),
                pgid=int(fields[b"NSpgid"][0]),
                sid=int(fields[b"NSsid"][0]),
                uid=int(fields[b"Uid"][0]),
                threads=int(fields[b"Threads"][0]) if b"Threads" in fields else 1,
            )
        except (OSError, KeyError, IndexError, ValueError):
            continue


def _kill_matching(matches: Callable[[_ProcInfo], bool], rounds: int = 200) -> None:
    """SIGKILL every live process that `matches`, again and again until none is left.

    Repeated because a process may fork between one scan and the next; a bounded number of
    rounds because a zombie (already dead, waiting to be reaped) is not worth waiting for.
    """
    for _ in range(rounds):
        targets = [p for p in _processes() if p.state not in ("Z", "X") and matches(p)]
        if not targets:
            return
        for target in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target.pid, signal.SIGKILL)
        time.sleep(0.001)
    logger.error("sandbox processes still alive after %d kill rounds", rounds)


def _oom_kills() -> int:
    try:
        with open("/proc/vmstat", "rb") as f:
            found = re.search(rb"^oom_kill (\d+)", f.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def _remove_tree(path: str) -> None:
    """Remove the workdir even if the code made parts of it unreadable (non-root runs)."""

    def make_writable_and_retry(func: Callable, failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            func(failed)

    shutil.rmtree(path, onerror=make_writable_and_retry)
    if os.path.exists(path):
        logger.warning("could not remove sandbox directory %s", path)


class _UidSlot:
    """An unprivileged uid reserved for one sandbox run, across processes on this host.

    A lock file per uid (flock, released by the kernel if this process dies) keeps two runs,
    even from different trainer processes, off the same uid; a uid that still has processes
    (zombies waiting for init to reap them count against RLIMIT_NPROC) is skipped.
    """

    _next = 0

    def __init__(self, uid: int, lock_fd: int):
        self.uid = uid
        self.lock_fd = lock_fd

    @classmethod
    def acquire(cls) -> _UidSlot | None:
        lock_dir = _lock_dir()
        if lock_dir is None:
            return None
        busy = {p.uid for p in _processes()} if os.path.isdir("/proc") else set()
        for i in range(SANDBOX_UID_COUNT):
            uid = SANDBOX_UID_BASE + (cls._next + i) % SANDBOX_UID_COUNT
            if uid in busy:
                continue
            fd = os.open(os.path.join(lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            cls._next = (cls._next + i + 1) % SANDBOX_UID_COUNT
            return cls(uid, fd)
        logger.error("all %d sandbox uids are busy; running unprivileged-less", SANDBOX_UID_COUNT)
        return None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)  # closing drops the flock


def _lock_dir() -> str | None:
    for base in ("/run", tempfile.gettempdir()):
        path = os.path.join(base, "orchestra-sandbox-uids")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            info = os.lstat(path)
        except OSError:
            continue
        # Someone else's directory (or a symlink planted there) must not decide our locking.
        if info.st_uid == os.geteuid() and not os.path.islink(path):
            return path
    return None


# ------------------------------------------------------------------------------------------------
# The child side. These functions are sent as source text to fresh interpreters, so each is
# self-contained: standard library only, imported inside, no module globals.


def _stage1_main() -> None:
    """Isolate, limit and de-privilege this process, then exec stage 2 (see module docstring)."""
    import json
    import os
    import sys

    spec = json.loads(sys.argv[1])
    status_fd = spec["status_fd"]
    enforced: list = []
    notes: list = []
    try:
        if sys.platform.startswith("linux"):
            _stage1_isolate(spec, enforced, notes)
        _stage1_rlimits(spec, enforced, notes)
        if spec["uid"] is not None:
            if spec.get("exposure_failed"):
                notes.append("the interpreter is not reachable by an unprivileged uid here")
            else:
                os.setgroups([])
                if hasattr(os, "setresgid"):
                    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
                    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
                else:
                    os.setgid(spec["gid"])
                    os.setuid(spec["uid"])
                enforced.append("unprivileged_uid")
        if sys.platform.startswith("linux"):
            _stage1_prctl(spec, enforced, notes)
        os.chdir(spec["workdir"])
    except Exception as exc:
        os.write(status_fd, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
        os._exit(126)
    os.write(status_fd, json.dumps({"enforced": enforced, "notes": notes}).encode() + b"\n")
    os.set_inheritable(status_fd, False)  # closed by a successful exec: EOF for the parent
    argv = spec["argv"]
    try:
        os.execve(argv[0], argv, spec["env"])
    except OSError as exc:
        os.write(status_fd, json.dumps({"error": f"exec {argv[0]}: {exc}"}).encode() + b"\n")
        os._exit(127)


def _stage1_libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
    ]  # fmt: skip
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    return libc


def _stage1_mount(libc, source, target, fstype, flags, data) -> None:
    import ctypes
    import os

    def encode(text):
        return None if text is None else os.fsencode(text)

    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _stage1_isolate(spec: dict, enforced: list, notes: list) -> None:
    """Namespaces (net, ipc, mount; user when not root) and the mount layout."""
    import ctypes
    import os
    import re

    clone_newns, clone_newipc, clone_newnet, clone_newuser = (
        0x00020000, 0x08000000, 0x40000000, 0x10000000,
    )  # fmt: skip
    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec = 1, 2, 4, 8
    ms_remount, ms_bind, ms_rec, ms_private = 32, 4096, 16384, 1 << 18
    ms_noatime, ms_nodiratime, ms_relatime, ms_strictatime = 1024, 2048, 1 << 21, 1 << 24
    libc = _stage1_libc()
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    flags = clone_newns | clone_newipc | (0 if spec["network"] else clone_newnet)
    if not root:
        flags |= clone_newuser
    if libc.unshare(flags) != 0:
        notes.append(f"namespaces unavailable: {os.strerror(ctypes.get_errno())}")
        spec["exposure_failed"] = bool(_stage1_needs_exposure(spec))
        return
    if not root:
        try:  # keep our own ids inside (unmapped ids would show as nobody)
            for path, text in (
                ("/proc/self/setgroups", "deny"),
                ("/proc/self/uid_map", f"{uid} {uid} 1"),
                ("/proc/self/gid_map", f"{gid} {gid} 1"),
            ):
                with open(path, "w") as f:
                    f.write(text)
        except OSError as exc:
            notes.append(f"user namespace id maps: {exc}")
        enforced.append("user_namespace")
    enforced.append("ipc_namespace")
    if not spec["network"]:
        enforced.append("network_namespace")
    try:
        _stage1_mount(libc, None, "/", None, ms_rec | ms_private, None)
    except OSError as exc:
        notes.append(f"mount namespace unusable: {exc}")
        spec["exposure_failed"] = bool(_stage1_needs_exposure(spec))
        return
    enforced.append("mount_namespace")

    # Root: dirs like /root (0700) on the way to the interpreter would stop the unprivileged
    # uid. Cover each with an empty tmpfs and bind back only what the interpreter needs, which
    # also hides everything else in them.
    if root and spec["uid"] is not None:
        blocked = _stage1_needs_exposure(spec)
        for top, paths in sorted(blocked.items()):
            try:
                fds = {p: os.open(p, os.O_PATH) for p in paths}
                _stage1_mount(libc, "tmpfs", top, "tmpfs", ms_nosuid | ms_nodev, "mode=0755")
                for path, fd in fds.items():
                    os.makedirs(path, exist_ok=True)
                    _stage1_mount(libc, f"/proc/self/fd/{fd}", path, None, ms_bind | ms_rec, None)
                    os.close(fd)
            except OSError as exc:
                notes.append(f"could not expose {top}: {exc}")
                spec["exposure_failed"] = True
        if blocked and not spec.get("exposure_failed"):
            enforced.append("private_dirs_masked")

    # The workdir becomes a size-capped tmpfs (total bytes written), holding only the script.
    workdir = spec["workdir"]
    with open(os.path.join(workdir, spec["script"]), "rb") as f:
        script = f.read()
    options = f"size={spec['workdir_bytes']},nr_inodes=16384,mode=0700"
    if root and spec["uid"] is not None:
        options += f",uid={spec['uid']},gid={spec['gid']}"
    try:
        _stage1_mount(libc, "tmpfs", workdir, "tmpfs", ms_nosuid | ms_nodev, options)
        script_path = os.path.join(workdir, spec["script"])
        with open(script_path, "wb") as f:
            f.write(script)
        if root and spec["uid"] is not None:
            os.chown(script_path, spec["uid"], spec["gid"])
        enforced.append("workdir_tmpfs")
    except OSError as exc:
        notes.append(f"workdir tmpfs: {exc}")
        try:  # at least a mount of its own, so that it stays writable below
            _stage1_mount(libc, workdir, workdir, None, ms_bind, None)
        except OSError as bind_exc:
            notes.append(f"workdir bind mount: {bind_exc}; filesystem left writable")
            return
    writable = {workdir}
    if os.path.isdir("/dev/shm"):
        try:
            _stage1_mount(
                libc, "tmpfs", "/dev/shm", "tmpfs", ms_nosuid | ms_nodev | ms_noexec,
                f"size={spec['shm_bytes']},mode=1777",
            )  # fmt: skip
            writable.add("/dev/shm")
            enforced.append("private_dev_shm")
        except OSError as exc:
            notes.append(f"/dev/shm: {exc}")

    # Everything else read-only: then no file outside the workdir can be written, whatever the
    # permissions (world-writable /tmp included).
    option_flags = {
        "nosuid": ms_nosuid, "nodev": ms_nodev, "noexec": ms_noexec, "noatime": ms_noatime,
        "nodiratime": ms_nodiratime, "relatime": ms_relatime, "strictatime": ms_strictatime,
    }  # fmt: skip
    failures = []
    with open("/proc/self/mountinfo") as f:
        mounts = f.read().splitlines()
    for line in mounts:
        parts = line.split(" ")
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        if target in writable:
            continue
        remount = ms_remount | ms_bind | ms_rdonly | ms_nosuid
        for option in parts[5].split(","):
            remount |= option_flags.get(option, 0)
        try:
            _stage1_mount(libc, None, target, None, remount, None)
        except OSError as exc:
            if exc.errno != 2:  # a mount hidden under another one has no path to remount
                failures.append(f"{target}: {exc.strerror}")
    if failures:
        notes.append("could not make read-only: " + ", ".join(failures[:5]))
    else:
        enforced.append("readonly_filesystem")


def _stage1_needs_exposure(spec: dict) -> dict:
    """Topmost dirs the unprivileged uid cannot enter, mapped to the paths needed under them."""
    import os

    blocked: dict = {}
    if spec["uid"] is None or os.geteuid() != 0:
        return blocked
    for path in spec["expose"]:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            try:
                info = os.stat(ancestor)
            except OSError:
                break
            if info.st_uid != spec["uid"] and not info.st_mode & 0o001:
                blocked.setdefault(ancestor, set()).add(path)
                break
    # Keep only the outermost needed paths under each blocked dir.
    result = {}
    for top, paths in blocked.items():
        ordered = sorted(paths)
        keep = [p for p in ordered if not any(p.startswith(q + "/") for q in ordered if q != p)]
        result[top] = [p for p in keep if os.path.isdir(p)] or keep
    return result


def _stage1_rlimits(spec: dict, enforced: list, notes: list) -> None:
    import resource
    import sys

    for name, (soft, hard) in spec["rlimits"].items():
        which = getattr(resource, f"RLIMIT_{name}", None)
        if which is None:
            notes.append(f"RLIMIT_{name} does not exist here")
            continue
        try:
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as exc:
            notes.append(f"RLIMIT_{name}: {exc}")
            continue
        if name == "AS" and sys.platform == "darwin":
            notes.append("macOS does not enforce RLIMIT_AS")
            continue
        enforced.append(f"rlimit_{name.lower()}")


def _stage1_prctl(spec: dict, enforced: list, notes: list) -> None:
    import os
    import signal

    libc = _stage1_libc()
    pr_set_pdeathsig, pr_set_no_new_privs = 1, 38
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) == 0:
        enforced.append("no_new_privs")  # setuid binaries cannot give privileges back
    else:
        notes.append("no_new_privs unavailable")
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
        enforced.append("parent_death_kill")
        if os.getppid() != spec["parent_pid"]:
            os._exit(125)  # the parent died before the signal was armed


def _stage2_main() -> None:
    """Guard with an audit hook, then run the user's script as `__main__`."""
    import os
    import sys

    script = sys.argv[1]
    allow_network = sys.argv[2] == "1"
    workdir = os.path.realpath(os.getcwd())
    devices = frozenset(
        ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/stdout",
         "/dev/stderr", "/dev/tty")
    )  # fmt: skip
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    af_unix = 1
    # event -> (index of a path argument, index of its dir_fd argument or None)
    path_events = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
        "os.rename": ((0, 2), (1, 3)), "os.link": ((1, 3),), "os.symlink": ((1, 2),),
        "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.truncate": ((0, None),),
        "os.utime": ((0, 3),), "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    }  # fmt: skip
    realpath, fsdecode, fspath, join, isabs = (
        os.path.realpath, os.fsdecode, os.fspath, os.path.join, os.path.isabs,
    )  # fmt: skip

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: the OS layer already decided
        try:
            path = fsdecode(fspath(path))
        except TypeError:
            return False
        if path in devices:
            return True
        if dir_fd is not None and not isabs(path):
            try:
                path = join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            except OSError:
                return True  # cannot tell; the OS layer decides
        resolved = realpath(path)
        return resolved == workdir or resolved.startswith(workdir + os.sep)

    def refuse(what, path):
        raise PermissionError(
            f"sandbox: {what} outside the working directory is not allowed: {path!r}"
        )

    def hook(event, args) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags
            )
            if writing and path is not None and not inside(path):
                refuse("writing", path)
        elif event in path_events:
            for index, fd_index in path_events[event]:
                dir_fd = args[fd_index] if fd_index is not None else None
                if not inside(args[index], dir_fd):
                    refuse(f"{event.split('.')[1]}()", args[index])
        elif event == "socket.__new__" and not allow_network and args[1] != af_unix:
            raise PermissionError("sandbox: network access is disabled")

    import builtins

    import __main__

    with open(script, "rb") as f:
        source = f.read()
    sys.addaudithook(hook)
    sys.argv = [script]
    # The script runs in the real __main__ (so pickling its classes works), emptied of ours.
    namespace = __main__.__dict__
    namespace.clear()
    namespace.update(__name__="__main__", __file__=script, __builtins__=builtins)
    try:
        code = compile(source, script, "exec")
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback

        # Drop this launcher's frames (the hook's included): the policy reads only its code.
        report = traceback.TracebackException(type(exc), exc, exc.__traceback__)
        seen = set()
        pending = [report]
        while pending:
            entry = pending.pop()
            if entry is None or id(entry) in seen:
                continue
            seen.add(id(entry))
            entry.stack = traceback.StackSummary.from_list(
                [frame for frame in entry.stack if frame.filename != "<string>"]
            )
            pending += [entry.__cause__, entry.__context__]
        sys.stderr.write("".join(report.format()))
        sys.stderr.flush()
        raise SystemExit(1) from None


_sources: dict[str, str] = {}


def _stage1_source() -> str:
    if "stage1" not in _sources:
        functions = (
            _stage1_main, _stage1_libc, _stage1_mount, _stage1_isolate, _stage1_needs_exposure,
            _stage1_rlimits, _stage1_prctl,
        )  # fmt: skip
        body = "\n\n".join(inspect.getsource(f) for f in functions)
        _sources["stage1"] = f"{body}\n\n_stage1_main()\n"
    return _sources["stage1"]


def _stage2_source() -> str:
    if "stage2" not in _sources:
        _sources["stage2"] = f"{inspect.getsource(_stage2_main)}\n\n_stage2_main()\n"
    return _sources["stage2"]
