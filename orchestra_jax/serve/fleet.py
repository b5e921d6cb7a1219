"""A fleet of local experts: one `orchestra serve` process per expert, and the experts file.

Why: the qa setting's experts are endpoints named in a JSON experts file. On a machine without
hosted models the recipe serves them itself, one OpenAI-compatible server per expert on
127.0.0.1, and something has to start them, wait until they answer, tell the trainer where they
are, and make sure none outlives the run. This module is that something; it knows nothing of
the training loop and the loop nothing of it: the contract between them is the experts file.

A spec file maps an expert's name to how to serve it and what it costs:

    {"cheap":  {"model": "smollm2-135m-instruct",
                "price": {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.2},
                "serve_args": ["--default-max-tokens", "64"]},
     "strong": {"model": "smollm2-135m-instruct",
                "price": {"input_usd_per_mtok": 1.25, "output_usd_per_mtok": 10.0}}}

Keys: `model` (what `orchestra serve --model` loads; default `smollm2-135m-instruct`), `price`
(USD per million tokens; omitted: the pricing catalog prices the served name), `serve_args`
(more `orchestra serve` flags; the fleet owns `--model`, `--host`, `--port` and
`--served-model-name`), `served_model_name` (the model id clients send; default the expert's
name, so two experts on the same weights stay two models in per-model accounting),
`timeout_s` (the client's request timeout written to the experts file; default 300: a CPU
decodes slowly), `api_key_env` (passed to `--api-key-env` and written to the experts file; the
key itself is read from the environment, never written), `env` (extra environment variables).

The experts file written (what `ExpertPool.from_config` reads) maps each name to
`{"model", "endpoint": "http://127.0.0.1:PORT/v1", "timeout_s", "price"[, "api_key_env"]}`.

    python -m orchestra_jax.serve.fleet --experts SPEC.json --out EXPERTS.json [--log-dir DIR]

starts every server (ports chosen by the servers: `--port 0`), waits until each answers
`/v1/models` with its name, writes EXPERTS.json (atomically, only when all are up, so a script
may wait for the file), prints its path, and serves until SIGINT/SIGTERM or until one server
dies; then it stops them all (SIGTERM, then SIGKILL after a grace period) and removes the file,
whose ports would be stale. In Python: `with start_fleet(specs) as fleet: fleet.write(path)`.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ExpertServer",
    "ExpertSpec",
    "Fleet",
    "FleetError",
    "load_specs",
    "parse_specs",
    "start_fleet",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
#: Flags the fleet sets itself; a spec's `serve_args` may not repeat them.
_OWNED_FLAGS = ("--model", "--host", "--port", "--served-model-name", "--api-key-env")
_SPEC_KEYS = frozenset(
    {"model", "price", "serve_args", "served_model_name", "timeout_s", "api_key_env", "env"}
)
_URL_LINE = re.compile(r" on (https?://\S+/v1)\b")
_TAIL_LINES = 60


class FleetError(RuntimeError):
    """A fleet could not start or lost a server; names the expert and shows its output's tail.

    `pids` maps each expert whose process `start_fleet` had started (and stopped again) to its
    process id, so a caller can check that nothing was left behind."""

    def __init__(self, message: str, pids: Mapping[str, int] | None = None) -> None:
        super().__init__(message)
        self.pids: dict[str, int] = dict(pids or {})


@dataclass(frozen=True)
class ExpertSpec:
    """How to serve one expert and what it costs."""

    name: str
    model: str = DEFAULT_MODEL
    price: Mapping[str, float] | None = None
    serve_args: tuple[str, ...] = ()
    served_model_name: str | None = None
    timeout_s: float = 300.0
    api_key_env: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name


def _check_price(where: str, price: Any) -> dict[str, float]:
    if not isinstance(price, Mapping):
        raise ValueError(f"{where}: 'price' must be a mapping, got {price!r}")
    try:
        out = {key: float(price[key]) for key in ("input_usd_per_mtok", "output_usd_per_mtok")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: 'price' needs numeric input_usd_per_mtok and "
                         f"output_usd_per_mtok, got {dict(price)!r} ({exc})") from None
    if any(v < 0 for v in out.values()):
        raise ValueError(f"{where}: prices must be >= 0, got {out}")
    return out


def parse_specs(mapping: Mapping[str, Mapping[str, Any]]) -> list[ExpertSpec]:
    """Check a spec mapping (`name -> spec`) and return its experts; errors name the expert."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError("an expert spec must be a non-empty JSON object of name -> spec")
    specs, served = [], {}
    for name, spec in mapping.items():
        where = f"expert {name!r}"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(spec).__name__}")
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
        serve_args = spec.get("serve_args", [])
        if not isinstance(serve_args, list | tuple) or not all(
                isinstance(a, str) for a in serve_args):
            raise ValueError(f"{where}: 'serve_args' must be a list of strings")
        owned = [a for a in serve_args if a.split("=", 1)[0] in _OWNED_FLAGS]
        if owned:
            raise ValueError(f"{where}: serve_args may not set {owned}; the fleet sets "
                             f"{', '.join(_OWNED_FLAGS)} (use the spec keys instead)")
        env = spec.get("env", {})
        if not isinstance(env, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError(f"{where}: 'env' must map variable names to strings")
        item = ExpertSpec(
            name=str(name),
            model=str(spec.get("model", DEFAULT_MODEL)),
            price=None if spec.get("price") is None else _check_price(where, spec["price"]),
            serve_args=tuple(serve_args),
            served_model_name=spec.get("served_model_name"),
            timeout_s=float(spec.get("timeout_s", 300.0)),
            api_key_env=spec.get("api_key_env"),
            env=dict(env),
        )
        if item.served_name in served:
            raise ValueError(f"{where}: served model name {item.served_name!r} is also "
                             f"expert {served[item.served_name]!r}'s")
        served[item.served_name] = item.name
        specs.append(item)
    return specs


def load_specs(path: str | Path) -> list[ExpertSpec]:
    """Read a spec file (JSON); errors name the file."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"expert spec file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise FleetError(f"{path}: not valid JSON ({err})") from None
    try:
        return parse_specs(mapping)
    except ValueError as err:
        raise FleetError(f"{path}: {err}") from None


def _serve_command() -> list[str]:
    script = Path(sys.executable).with_name("orchestra")
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestra_jax.cli"]


def _direct_opener() -> urllib.request.OpenerDirector:
    """An opener that never goes through a proxy: the servers are on this machine."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ExpertServer:
    """One running `orchestra serve` process; its output is drained into a tail (and a log)."""

    def __init__(self, spec: ExpertSpec, *, host: str = "127.0.0.1",
                 log_path: Path | None = None) -> None:
        self.spec = spec
        self.host = host
        self.url: str | None = None
        self.log_path = log_path
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._log: IO[str] | None = None
        cmd = [*_serve_command(), "serve", "--model", spec.model, "--host", host, "--port", "0",
               "--served-model-name", spec.served_name]
        if spec.api_key_env:
            cmd += ["--api-key-env", spec.api_key_env]
        cmd += list(spec.serve_args)
        self.command = cmd
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("w", encoding="utf-8")
        env = dict(os.environ, **spec.env)
        env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY"), host]))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                     errors="replace", env=env)
        self._reader = threading.Thread(target=self._drain, name=f"fleet-{spec.name}",
                                        daemon=True)
        self._reader.start()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._tail.append(line.rstrip("\n"))
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            if self.url is None:
                match = _URL_LINE.search(line)
                if match:
                    self.url = match.group(1)

    def tail(self) -> str:
        """The last lines the server printed (stdout and stderr together)."""
        return "\n".join(self._tail)

    def _failure(self, what: str) -> FleetError:
        where = f" (full log: {self.log_path})" if self.log_path else ""
        return FleetError(f"expert {self.name!r}: {what}{where}\ncommand: "
                          f"{' '.join(self.command)}\n--- last output ---\n{self.tail()}")

    def _exited(self) -> FleetError | None:
        code = self.proc.poll()
        if code is None:
            return None
        self._reader.join(timeout=2)  # collect the last lines
        return self._failure(f"orchestra serve exited with code {code}")

    def check_ready(self, deadline: float) -> bool:
        """One non-blocking look: True once the server answers `/v1/models` with its name.

        Raises `FleetError` when the process has exited or `deadline` (monotonic) has passed.
        """
        if (err := self._exited()) is not None:
            raise err
        if self.url is None:
            last = "it has not printed its URL yet"
        else:
            request = urllib.request.Request(f"{self.url}/models")
            if self.spec.api_key_env:
                key = os.environ.get(self.spec.api_key_env, "")
                request.add_header("Authorization", f"Bearer {key}")
            try:
                with _direct_opener().open(request, timeout=5) as response:
                    ids = [m.get("id") for m in json.load(response).get("data", [])]
                if self.spec.served_name in ids:
                    return True
                last = f"/v1/models lists {ids}, not {self.spec.served_name!r}"
            except (OSError, ValueError) as exc:  # URLError is an OSError
                last = f"/v1/models: {exc}"
        if time.monotonic() > deadline:
            raise self._failure(f"not ready before the start timeout ({last})")
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def close_log(self) -> None:
        self._reader.join(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def experts_entry(self) -> dict[str, Any]:
        """This expert's spec in the experts file that `ExpertPool.from_config` reads."""
        if self.url is None:
            raise FleetError(f"expert {self.name!r} has no URL yet (not started)")
        entry: dict[str, Any] = {"model": self.spec.served_name, "endpoint": self.url,
                                 "timeout_s": self.spec.timeout_s}
        if self.spec.price is not None:
            entry["price"] = dict(self.spec.price)
        if self.spec.api_key_env:
            entry["api_key_env"] = self.spec.api_key_env
        return entry


_LIVE_FLEETS: weakref.WeakSet[Fleet] = weakref.WeakSet()


@atexit.register
def _stop_live_fleets() -> None:
    """A script that never closed its fleet still leaves no server behind."""
    for fleet in list(_LIVE_FLEETS):
        fleet.stop()


class Fleet:
    """Running expert servers by name; a context manager that stops them all on exit."""

    def __init__(self, servers: Sequence[ExpertServer], *, grace_s: float = 20.0) -> None:
        self.servers: dict[str, ExpertServer] = {s.name: s for s in servers}
        self.grace_s = grace_s
        self.experts_file: Path | None = None
        self._stopped = False
        _LIVE_FLEETS.add(self)

    def __getitem__(self, name: str) -> ExpertServer:
        return self.servers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def experts_config(self) -> dict[str, dict[str, Any]]:
        """`name -> spec` for `ExpertPool.from_config` (the experts file's content)."""
        return {name: server.experts_entry() for name, server in self.servers.items()}

    def write(self, path: str | Path) -> Path:
        """Write the experts file atomically (a reader never sees half a file); returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.experts_config(), indent=2) + "\n", encoding="utf-8")
        partial.replace(path)
        self.experts_file = path
        return path

    def dead(self) -> list[str]:
        """Names of the servers whose process has exited."""
        return [name for name, s in self.servers.items() if s.proc.poll() is not None]

    def stop(self) -> dict[str, int]:
        """SIGTERM every server, SIGKILL those still alive after `grace_s`; remove the experts
        file this fleet wrote (its ports are stale once the servers are gone). Returns each
        server's exit code; safe to call twice."""
        if not self._stopped:
            self._stopped = True
            for server in self.servers.values():
                server.signal(signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s
            for server in self.servers.values():
                try:
                    server.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    server.signal(signal.SIGKILL)
                    server.proc.wait()
                server.close_log()
            if self.experts_file is not None:
                self.experts_file.unlink(missing_ok=True)
            _LIVE_FLEETS.discard(self)
        return {name: s.proc.returncode for name, s in self.servers.items()}


def start_fleet(
    specs: Mapping[str, Mapping[str, Any]] | Sequence[ExpertSpec] | str | Path,
    *,
    host: str = "127.0.0.1",
    start_timeout_s: float = 300.0,
    log_dir: str | Path | None = None,
    grace_s: float = 20.0,
) -> Fleet:
    """Start one `orchestra serve` per expert (all at once) and wait until every one answers.

    `specs` is a spec mapping, parsed `ExpertSpec`s or a spec file's path. On any failure the
    servers already started are stopped and `FleetError` names the expert, its exit code or
    what it was waiting for, and the tail of its output.
    """
    if isinstance(specs, str | Path):
        parsed = load_specs(specs)
    elif isinstance(specs, Mapping):
        parsed = parse_specs(specs)
    else:
        parsed = list(specs)
    logs = Path(log_dir) if log_dir is not None else None
    servers: list[ExpertServer] = []
    fleet: Fleet | None = None
    try:
        for spec in parsed:
            log_path = logs / f"{spec.name}.log" if logs is not None else None
            servers.append(ExpertServer(spec, host=host, log_path=log_path))
        fleet = Fleet(servers, grace_s=grace_s)
        deadline = time.monotonic() + start_timeout_s
        waiting = list(servers)
        while waiting:  # look at all of them each round: a death anywhere is seen at once
            waiting = [server for server in waiting if not server.check_ready(deadline)]
            if waiting:
                time.sleep(0.25)
        return fleet
    except BaseException as exc:
        (fleet or Fleet(servers, grace_s=grace_s)).stop()
        if isinstance(exc, FleetError):
            exc.pids = {server.name: server.pid for server in servers}
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fleet, write the experts file, serve until a signal or a server's death."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestra_jax.serve.fleet",
        description="Serve local experts with `orchestra serve` and write the experts file.")
    parser.add_argument("--experts", required=True, type=Path, help="expert spec JSON file")
    parser.add_argument("--out", required=True, type=Path, help="experts file to write")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--start-timeout-s", type=float, default=300.0)
    parser.add_argument("--log-dir", type=Path,
                        help="one NAME.log per server (default: OUT's folder/OUT-stem.logs)")
    args = parser.parse_args(argv)
    log_dir = args.log_dir or args.out.with_name(f"{args.out.stem}.logs")

    stop, started = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not started.is_set():  # still starting: unwind start_fleet, which stops the servers
            raise KeyboardInterrupt(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        fleet = start_fleet(args.experts, host=args.host, start_timeout_s=args.start_timeout_s,
                            log_dir=log_dir)
    except (FleetError, ValueError) as err:
        print(f"fleet: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as interrupt:
        print(f"fleet: interrupted while starting ({interrupt}); servers stopped",
              file=sys.stderr, flush=True)
        return 130
    started.set()
    with fleet:
        path = fleet.write(args.out)
        for name, server in fleet.servers.items():
            print(f"fleet: {name} ({server.spec.served_name}, pid {server.pid}) on {server.url}",
                  flush=True)
        print(f"fleet: {len(fleet)} experts up; logs in {log_dir}; experts file:", flush=True)
        print(path.resolve(), flush=True)
        code = 0
        while not stop.wait(timeout=1.0):
            if dead := fleet.dead():
                server = fleet[dead[0]]
                print(f"fleet: expert {dead[0]!r} died (exit code {server.proc.returncode}); "
                      f"stopping the others\n{server.tail()}", file=sys.stderr, flush=True)
                code = 1
                break
        print("fleet: stopping", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
