"""The house rules of the package's layout (docs: DESIGN, "The rooms"), checked on the source:
small modules and functions, a short training loop, imports that point one way, no circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestra_jax"
#: The code sandbox is one process-isolation story told top to bottom; it is exempt.
EXEMPT_MODULES = {"tools/sandbox.py"}
#: Config declarations are tables, one line per field, not logic.
EXEMPT_FUNCTIONS = {"tools/sandbox.py", "train/schema.py"}
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 90
MAX_LOOP_LINES = 400
#: Rooms that must not import the rooms after them in the data flow.
UPSTREAM = ("models", "tokenization", "tools", "rewards")
DOWNSTREAM = ("rollout", "rl", "train")
#: Host-only rooms: they never import jax.
HOST_ONLY = ("tools", "envs")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(path: Path) -> set[str]:
    """Every module (of any package) `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def test_no_module_is_over_700_lines_except_the_sandbox():
    sizes = {_rel(p): len(p.read_text().splitlines()) for p in MODULES.values()}
    too_long = {k: v for k, v in sizes.items()
                if v > MAX_MODULE_LINES and k not in EXEMPT_MODULES}
    assert not too_long


def test_no_function_is_over_90_lines_outside_the_sandbox_and_config_declarations():
    too_long = []
    for path in MODULES.values():
        if _rel(path) in EXEMPT_FUNCTIONS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{_rel(path)}:{node.name} ({lines} lines)")
    assert not too_long


def test_the_training_loop_reads_in_under_400_lines():
    assert len((PACKAGE / "train" / "loop.py").read_text().splitlines()) < MAX_LOOP_LINES


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, " | ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("room", UPSTREAM)
def test_upstream_rooms_import_nothing_from_rollout_rl_or_train(room):
    bad = {name: sorted(m for m in deps if m.split(".")[1] in DOWNSTREAM)
           for name, deps in _graph().items() if name.split(".")[1:2] == [room]}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("room", HOST_ONLY)
def test_host_rooms_never_import_jax(room):
    offenders = [_rel(p) for name, p in MODULES.items() if name.split(".")[1:2] == [room]
                 and any(m == "jax" or m.startswith("jax.") for m in _imports(p))]
    assert not offenders


def test_eval_is_not_wired_back_into_train():
    """`eval` holds the runner; `train` calls it, never the other way round."""
    offenders = {name: sorted(m for m in deps if m.startswith("orchestra_jax.train"))
                 for name, deps in _graph().items() if name.startswith("orchestra_jax.eval")}
    assert not {k: v for k, v in offenders.items() if v}
