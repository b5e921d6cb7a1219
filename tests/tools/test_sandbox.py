"""The code sandbox: real child processes, real limits, real attacks, real clean-up.

Each adversarial test checks two things: the outcome is contained and classified with the
right kind, and the machine is healthy afterwards (no live process of the sandbox left, the
parent can still spawn processes, memory is back).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from orchestra_jax.tools.executor import ToolExecutor
from orchestra_jax.tools.results import ToolErrorKind, ToolResult
from orchestra_jax.tools.sandbox import SANDBOX_UID_BASE, SANDBOX_UID_COUNT, run_code

ROOT = os.geteuid() == 0
LINUX = sys.platform.startswith("linux")
pytestmark = pytest.mark.skipif(not LINUX, reason="the sandbox tests inspect /proc")

ALLOWED_ENV = {
    "PATH", "LANG", "HOME", "TMPDIR", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
}  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Health checks, written independently of the module under test.


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, session id, real uid) of every live (not zombie) process."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        found.append((int(name), int(fields[3]), uid))
    return found


def _sandbox_leftovers(session: int | None = None) -> list[tuple[int, int, int]]:
    uids = range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_COUNT)
    return [
        p for p in _live_processes() if p[2] in uids or (session is not None and p[1] == session)
    ]


def _mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def assert_healthy(session: int | None = None, mem_before_mib: int | None = None) -> None:
    assert _sandbox_leftovers(session) == []
    assert subprocess.run(["true"], check=False).returncode == 0  # the parent can still spawn
    if mem_before_mib is not None:
        assert _mem_available_mib() > mem_before_mib - 1024


def _run(code: str, **kwargs):
    return asyncio.run(run_code(textwrap.dedent(code), **kwargs))


def _first_line_int(text: str) -> int:
    return int(text.splitlines()[0])


# ------------------------------------------------------------------------------------------------
# Ordinary programs.


def test_normal_code_returns_stdout_and_reports_protections():
    result = _run("print('hello', 6 * 7)")
    assert result.error_kind is None and result.ok
    assert result.stdout == "hello 42\n" and result.stderr == ""
    assert result.exit_code == 0 and not result.truncated
    assert 0 < result.wall_s < 5
    for name in ("session", "rlimit_cpu", "rlimit_as", "rlimit_fsize", "clean_env", "audit_hook"):
        assert name in result.enforced
    if ROOT:
        for name in ("unprivileged_uid", "rlimit_nproc", "network_namespace",
                     "readonly_filesystem", "workdir_tmpfs", "uid_sweep"):  # fmt: skip
            assert name in result.enforced


def test_traceback_is_nonzero_exit_with_stderr_of_the_users_code_only():
    result = _run(
        """
        def f(x):
            return 1 / x
        print("before")
        f(0)
        """
    )
    assert result.error_kind == ToolErrorKind.NONZERO_EXIT and result.exit_code == 1
    assert result.stdout == "before\n"
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert 'File "main.py", line 5' in result.stderr
    assert "<string>" not in result.stderr  # the sandbox's own frames are not shown


def test_undecodable_output_and_closed_stdin_do_not_break_the_run():
    result = _run(
        """
        import sys
        sys.stdout.buffer.write(b"\\xff\\xfe ok\\n")
        sys.stdout.flush()
        print(sys.stdin.read() == "")
        """
    )
    assert result.ok, result.stderr
    assert result.stdout == "\ufffd\ufffd ok\nTrue\n"


def test_a_timeout_shorter_than_the_start_up_is_a_wall_time_limit():
    result = _run("print('never')", timeout_s=0.001)
    assert result.error_kind == ToolErrorKind.WALL_TIME_LIMIT
    assert_healthy()


def test_sys_exit_code_is_reported():
    result = _run("import sys; print('bye'); sys.exit(3)")
    assert result.error_kind == ToolErrorKind.NONZERO_EXIT
    assert result.exit_code == 3 and result.stdout == "bye\n"


def test_workdir_is_writable_private_and_removed_afterwards():
    result = _run(
        """
        import os, tempfile
        with open("notes.txt", "w") as f:
            f.write("kept")
        print(open("notes.txt").read())
        with tempfile.NamedTemporaryFile() as tmp:
            print(os.path.dirname(tmp.name) == os.getcwd())
        print(os.getcwd())
        """
    )
    assert result.ok, result.stderr
    kept, same_dir, workdir = result.stdout.splitlines()
    assert kept == "kept" and same_dir == "True"
    assert not os.path.exists(workdir)


def test_eight_concurrent_runs_work():
    async def main():
        code = "import os, time; time.sleep(0.3); print({i}, os.getuid())"
        started = time.monotonic()
        results = await asyncio.gather(*(run_code(code.format(i=i)) for i in range(8)))
        return results, time.monotonic() - started

    results, elapsed = asyncio.run(main())
    assert all(r.ok for r in results), [r.stderr for r in results]
    assert [int(r.stdout.split()[0]) for r in results] == list(range(8))
    assert elapsed < 8 * 0.3 + 2  # they overlapped
    if ROOT:
        assert len({r.stdout.split()[1] for r in results}) == 8  # one uid per concurrent run
    assert_healthy()


# ------------------------------------------------------------------------------------------------
# The acceptance tests: each attack contained, classified, and the machine healthy.


def test_infinite_loop_is_killed_at_the_wall_clock_limit():
    mem_before = _mem_available_mib()
    result = _run(
        """
        import os
        print(os.getsid(0), flush=True)
        while True:
            pass
        """,
        timeout_s=1.0,
    )
    assert result.error_kind == ToolErrorKind.WALL_TIME_LIMIT
    assert result.exit_code == -9
    assert 1.0 <= result.wall_s < 3.0
    assert_healthy(_first_line_int(result.stdout), mem_before)


def test_cpu_time_limit_is_classified():
    result = _run("while True: pass", timeout_s=20, cpu_time_s=1)
    assert result.error_kind == ToolErrorKind.CPU_TIME_LIMIT
    assert result.wall_s < 10
    assert_healthy()


@pytest.mark.parametrize(
    "bomb",
    [
        # Dies at the first failed fork.
        "while True:\n    os.fork()",
        # Never gives up: only the wall clock ends it, while at the process cap.
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    ],
    ids=["naive", "stubborn"],
)
def test_fork_bomb_is_contained(bomb):
    mem_before = _mem_available_mib()
    code = f"import os\nprint(os.getsid(0), flush=True)\n{bomb}\n"
    result = _run(code, timeout_s=2.0, max_processes=16)
    assert result.error_kind == ToolErrorKind.PROCESS_LIMIT, result.stderr[-500:]
    assert result.wall_s < 4.0
    assert_healthy(_first_line_int(result.stdout), mem_before)


def test_ten_gigabyte_allocation_is_a_memory_limit():
    mem_before = _mem_available_mib()
    result = _run(
        """
        import os
        print(os.getsid(0), flush=True)
        block = bytearray(10 * 1024**3)
        print("allocated")
        """,
        memory_mb=256,
    )
    assert result.error_kind == ToolErrorKind.MEMORY_LIMIT
    assert "MemoryError" in result.stderr and "allocated" not in result.stdout
    assert_healthy(_first_line_int(result.stdout), mem_before)


def test_write_outside_the_working_directory_is_refused(tmp_path):
    target = Path("/tmp") / f"orchestra-sandbox-escape-{uuid.uuid4().hex}"
    owned = tmp_path / "owned-by-parent.txt"
    owned.write_text("original")
    try:
        plain = _run(f"open({str(target)!r}, 'w').write('escaped')")
        assert plain.error_kind == ToolErrorKind.NONZERO_EXIT
        assert "PermissionError" in plain.stderr and "outside the working directory" in plain.stderr

        # ctypes goes around the audit hook: the OS layer must stop it on its own.
        raw = _run(
            f"""
            import ctypes, errno, os
            libc = ctypes.CDLL(None, use_errno=True)
            for path in ({str(target)!r}, {str(owned)!r}):
                fd = libc.open(path.encode(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                print(fd, errno.errorcode.get(ctypes.get_errno()))
            """
        )
        assert raw.error_kind is None, raw.stderr
        in_tmp, in_private_dir = (line.split() for line in raw.stdout.splitlines())
        if ROOT or "readonly_filesystem" in raw.enforced:
            assert in_tmp == ["-1", "EROFS"]  # /tmp is world-writable: only the mount stops it
        assert in_private_dir[0] == "-1" and in_private_dir[1] in ("EROFS", "EACCES")
        assert not target.exists()
        assert owned.read_text() == "original"
        assert_healthy()
    finally:
        if target.exists():
            target.unlink()


def test_parent_environment_secrets_are_invisible(monkeypatch):
    secret = "sk-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    result = _run(
        """
        import json, os
        print(json.dumps(sorted(os.environ)))
        leaks, denied = [], []
        for pid in [os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            try:
                data = open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                denied.append(pid)
                continue
            if b"sk-secret-" in data:
                leaks.append(pid)
        print(json.dumps({"leaks": leaks, "parent_denied": os.getppid() in denied}))
        """
    )
    assert result.ok, result.stderr
    names_line, report_line = result.stdout.splitlines()
    assert set(json.loads(names_line)) <= ALLOWED_ENV
    report = json.loads(report_line)
    assert report["leaks"] == []
    assert report["parent_denied"] is True
    assert secret not in result.stdout + result.stderr


async def _start_counting_server():
    hits = []

    async def handle(request):
        hits.append(request.path)
        return web.Response(text="reached")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port, hits


NETWORK_PROBE = """
import ctypes, errno, socket, struct
port = {port}
try:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        print("python:", s.recv(100).split(b"\\r\\n")[0].decode())
except OSError as exc:
    print("python:", type(exc).__name__, exc)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(2, 1, 0)
address = struct.pack("=H", 2) + struct.pack("!H", port) + bytes([127, 0, 0, 1]) + bytes(8)
rc = libc.connect(fd, address, len(address))
print("raw:", rc, errno.errorcode.get(ctypes.get_errno()) if rc else "connected")
"""


def test_network_is_unreachable_without_network_and_reachable_with_it():
    async def main():
        runner, port, hits = await _start_counting_server()
        try:
            uncaught = await run_code(
                f"import socket\nsocket.create_connection(('127.0.0.1', {port}))"
            )
            blocked = await run_code(NETWORK_PROBE.format(port=port), timeout_s=5)
            hits_blocked = list(hits)
            allowed = await run_code(NETWORK_PROBE.format(port=port), timeout_s=5, network=True)
            return uncaught, blocked, hits_blocked, allowed, list(hits)
        finally:
            await runner.cleanup()

    uncaught, blocked, hits_blocked, allowed, hits = asyncio.run(main())
    assert uncaught.error_kind == ToolErrorKind.NONZERO_EXIT
    assert "network access is disabled" in uncaught.stderr
    assert blocked.ok, blocked.stderr
    python_line, raw_line = blocked.stdout.splitlines()
    assert python_line == "python: PermissionError sandbox: network access is disabled"
    if ROOT or "network_namespace" in blocked.enforced:
        assert raw_line == "raw: -1 ENETUNREACH"  # ctypes skips the hook; the namespace holds
    assert hits_blocked == []
    # network=True: both connects reach the server; only the Python one sends a request.
    assert "network_namespace" not in allowed.enforced
    python_line, raw_line = allowed.stdout.splitlines()
    assert python_line.startswith("python: HTTP/1.") and python_line.endswith("200 OK")
    assert raw_line == "raw: 0 connected"
    assert hits == ["/"]
    assert_healthy()


def test_huge_output_is_truncated_and_stopped():
    result = _run(
        """
        while True:
            print("x" * 1000)
        """,
        timeout_s=10,
        max_output_bytes=10_000,
    )
    assert result.error_kind == ToolErrorKind.OUTPUT_LIMIT
    assert result.truncated
    assert len(result.stdout.encode()) == 10_000
    assert result.wall_s < 5  # killed at the cap, not at the wall-clock limit
    assert_healthy()


def test_file_over_the_size_limit_is_an_output_limit():
    result = _run(
        "open('big.bin', 'wb').write(b'x' * 2_000_000)",
        max_file_bytes=1_000_000,
    )
    assert result.error_kind == ToolErrorKind.OUTPUT_LIMIT
    assert "File too large" in result.stderr


@pytest.mark.skipif(not ROOT, reason="only a root parent can kill processes that left the group")
def test_background_process_that_escapes_the_session_is_killed():
    result = _run(
        """
        import subprocess
        child = subprocess.Popen(["sleep", "60"], start_new_session=True)
        print(child.pid)
        """
    )
    assert result.ok, result.stderr
    escaped = _first_line_int(result.stdout)
    assert result.wall_s < 3  # the escaped process held our stdout pipe; it was killed
    assert escaped not in {pid for pid, _, _ in _live_processes()}
    assert_healthy()


def test_cancelling_the_caller_kills_the_program_and_cleans_up():
    def my_children() -> set[int]:
        me = os.getpid()
        children = set()
        for name in os.listdir("/proc"):
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == me:
                children.add(int(name))
        return children

    async def main():
        task = asyncio.create_task(run_code("while True: pass", timeout_s=30))
        await asyncio.sleep(0.5)
        sessions = my_children()
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sessions, time.monotonic() - started

    before = set(os.listdir(tempfile_dir := os.environ.get("TMPDIR", "/tmp")))
    sessions, elapsed = asyncio.run(main())
    assert sessions  # the sandbox was running
    assert elapsed < 2
    for session in sessions:
        assert_healthy(session)
    new_dirs = set(os.listdir(tempfile_dir)) - before
    assert not [d for d in new_dirs if d.startswith("orchestra-sandbox-")]


def test_executor_timeout_cancels_the_sandbox_and_leaves_nothing_behind():
    """The executor cuts a slow program by cancelling run_code: the group must die with it."""

    async def main():
        executor = ToolExecutor(timeout_s=0.5)

        async def code_tool():
            run = await run_code("import time\nwhile True: time.sleep(0.01)", timeout_s=30)
            return ToolResult(observation=run.stdout)

        started = time.monotonic()
        result = await executor.run("enhance_reasoning", code_tool)
        return result, time.monotonic() - started

    result, elapsed = asyncio.run(main())
    assert result.error_kind == ToolErrorKind.TIMEOUT
    assert elapsed < 2
    assert_healthy()


def test_bad_arguments_are_classified_not_raised():
    bad_code = asyncio.run(run_code(None))  # type: ignore[arg-type]
    assert bad_code.error_kind == ToolErrorKind.INVALID_ARGUMENTS and "code" in bad_code.stderr
    bad_timeout = asyncio.run(run_code("print(1)", timeout_s=-1))
    assert bad_timeout.error_kind == ToolErrorKind.INVALID_ARGUMENTS
    assert "timeout_s" in bad_timeout.stderr
    bad_memory = asyncio.run(run_code("print(1)", memory_mb=float("nan")))
    assert "memory_mb" in bad_memory.stderr
    surrogate = asyncio.run(run_code("print('\ud800')"))
    assert surrogate.error_kind == ToolErrorKind.INVALID_ARGUMENTS


# ------------------------------------------------------------------------------------------------
# A user's laptop: the same sandbox from an unprivileged parent.

NON_ROOT_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {repo!r})
from orchestra_jax.tools.sandbox import run_code

async def main():
    out = {{}}
    for name, code, kwargs in [
        ("hello", "import os; print(os.getuid())", {{}}),
        ("loop", "while True: pass", {{"timeout_s": 1.0}}),
        ("bomb", "import os\\nwhile True: os.fork()", {{"timeout_s": 2.0, "max_processes": 16}}),
        ("memory", "bytearray(10 * 1024**3)", {{"memory_mb": 256}}),
    ]:
        r = await run_code(code, **kwargs)
        out[name] = [r.stdout, r.error_kind, sorted(r.enforced)]
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.skipif(not ROOT, reason="needs root to start an unprivileged parent")
def test_unprivileged_parent_still_contains_and_reports_what_it_enforced():
    python = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no world-readable python3.11 to run as nobody")
    repo = str(Path(__file__).resolve().parents[2])

    def become_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    completed = subprocess.run(
        [python, "-c", NON_ROOT_SCRIPT.format(repo=repo)],
        preexec_fn=become_nobody,
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = json.loads(completed.stdout)
    assert out["hello"][0].strip() == "65534" and out["hello"][1] is None
    assert "unprivileged_uid" not in out["hello"][2]  # honest: it runs as the user
    assert "rlimit_nproc" in out["hello"][2]
    assert out["loop"][1] == "wall_time_limit"
    assert out["bomb"][1] == "process_limit"
    assert out["memory"][1] == "memory_limit"
    leftovers = [p for p in _live_processes() if p[2] == 65534]
    assert leftovers == []
    assert_healthy()
