"""A one-line progress display for long training runs, using only the standard library.

On a terminal the line is redrawn in place (carriage return), so a run of thousands of steps
shows one current line: step/total, elapsed, ETA and the few numbers a person watches (reward,
accuracy, cost). Where the stream is not a terminal -- CI logs, `nohup`, a notebook's captured
output -- carriage returns would pile up into one unreadable line, so plain lines are printed
instead, at most one per `log_every_s` (plus the first and the last step). tqdm would do this
too but is not a dependency, and this is all we need of it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

#: (label, metric tag, format) of the numbers shown by default.
DEFAULT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("reward", "train/reward", "{:.3f}"),
    ("acc", "train/accuracy", "{:.3f}"),
    ("cost", "train/cost_usd", "${:.4f}"),
)


def format_duration(seconds: float) -> str:
    """`h:mm:ss` (or `m:ss` under an hour); `?` for an unknown or infinite duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """Shows training progress on `stream`: in place on a TTY, periodic lines otherwise.

    `update(step, metrics)` takes the same tag -> number mapping the metrics writer gets;
    fields missing from it are left out of the line. `is_tty` defaults to asking the stream;
    `clock` is injectable so the timing logic can be tested without sleeping. `step` counts
    finished steps: the ETA is (elapsed / steps done since the first update) x steps left.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        is_tty: bool | None = None,
        fields: Sequence[tuple[str, str, str]] = DEFAULT_FIELDS,
        log_every_s: float = 30.0,
        min_redraw_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        start_step: int = 0,
    ):
        self.total = max(0, int(total))
        self.stream = stream if stream is not None else sys.stderr
        if is_tty is None:
            isatty = getattr(self.stream, "isatty", None)
            is_tty = bool(isatty()) if callable(isatty) else False
        self.is_tty = is_tty
        self.fields = tuple(fields)
        self.log_every_s = log_every_s
        self.min_redraw_s = min_redraw_s
        self._clock = clock
        self._start = clock()
        self._start_step = int(start_step)
        self._last_emit: float | None = None
        self._width = 0  # length of the last line drawn on a TTY (to blank its leftovers)
        self._last_line = ""
        self._closed = False

    def render(self, step: int, metrics: Mapping[str, Any] | None = None) -> str:
        """The text of the line for `step` (no carriage return or newline)."""
        elapsed = self._clock() - self._start
        done = step - self._start_step
        left = self.total - step
        eta = elapsed / done * left if done > 0 and left >= 0 else math.nan
        width = len(str(self.total)) if self.total else 1
        parts = [f"step {step:>{width}}/{self.total}"]
        if self.total:
            parts[0] += f" {100.0 * min(step, self.total) / self.total:3.0f}%"
        parts.append(f"elapsed {format_duration(elapsed)}")
        parts.append(f"eta {format_duration(eta)}")
        for label, tag, fmt in self.fields:
            if metrics is None or tag not in metrics:
                continue
            parts.append(f"{label} {_format_number(metrics[tag], fmt)}")
        return " | ".join(parts)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> bool:
        """Show progress at `step`; returns whether anything was written.

        On a TTY a redraw happens at most every `min_redraw_s`; off a TTY a line is printed on
        the first update, at most every `log_every_s` after, and always at the last step.
        """
        if self._closed:
            return False
        now = self._clock()
        final = self.total > 0 and step >= self.total
        interval = self.min_redraw_s if self.is_tty else self.log_every_s
        if not final and self._last_emit is not None and now - self._last_emit < interval:
            return False
        line = self.render(step, metrics)
        self._last_emit = now
        self._last_line = line
        if self.is_tty:
            padding = " " * max(0, self._width - len(line))
            self.stream.write("\r" + line + padding)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        return True

    def write(self, message: str) -> None:
        """Print a message above the progress line without garbling it."""
        if self.is_tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.write(message + "\n")
            self.stream.write(self._last_line)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the line on a TTY (so the shell prompt starts on a fresh line)."""
        if not self._closed and self.is_tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _format_number(value: Any, fmt: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return str(number)
    try:
        return fmt.format(number)
    except (ValueError, IndexError, KeyError):
        return f"{number:g}"
