"""The progress line: redrawn in place on a TTY, periodic plain lines elsewhere."""

from __future__ import annotations

import io
import math

from orchestra_jax.train.progress import ProgressLine, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(65.4) == "1:05"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(math.nan) == "?" and format_duration(math.inf) == "?"


def test_render_shows_step_elapsed_eta_and_key_numbers():
    clock = FakeClock()
    bar = ProgressLine(100, stream=io.StringIO(), is_tty=False, clock=clock)
    clock.now += 50.0
    line = bar.render(25, {"train/reward": 0.51234, "train/accuracy": 0.75,
                           "train/cost_usd": 0.0123, "train/kl": 9.0})
    assert line == ("step  25/100  25% | elapsed 0:50 | eta 2:30 | reward 0.512 | acc 0.750 "
                    "| cost $0.0123")
    # missing numbers are left out; a NaN shows as nan rather than breaking the line
    assert bar.render(25, {"train/reward": math.nan}).endswith("| reward nan")
    assert bar.render(0).endswith("eta ?")


def test_tty_redraws_in_place_and_ends_with_a_newline_on_close():
    clock = FakeClock()
    stream = TtyStream()
    bar = ProgressLine(10, stream=stream, clock=clock)  # is_tty asked of the stream
    assert bar.is_tty
    assert bar.update(1, {"train/reward": 12345.0})
    clock.now += 0.01
    assert not bar.update(2)  # within min_redraw_s: no redraw
    clock.now += 1.0
    assert bar.update(3)
    out = stream.getvalue()
    assert "\n" not in out and out.count("\r") == 2
    first, second = out.split("\r")[1:]
    assert len(second) == len(first)  # the shorter line is padded over the longer one
    assert second.rstrip().startswith("step  3/10")
    bar.write("checkpoint saved")
    assert stream.getvalue().endswith("checkpoint saved\n" + second.rstrip())
    bar.close()
    assert stream.getvalue().endswith("\n")
    assert not bar.update(4)


def test_non_tty_prints_plain_lines_at_most_every_interval_and_the_last_step():
    clock = FakeClock()
    stream = io.StringIO()
    bar = ProgressLine(5, stream=stream, log_every_s=10.0, clock=clock)
    assert not bar.is_tty  # StringIO is not a terminal
    printed = []
    for step in range(1, 6):
        clock.now += 4.0
        printed.append(bar.update(step, {"train/accuracy": step / 10}))
    # first update, then 12 s later (step 4), then the final step regardless of the interval
    assert printed == [True, False, False, True, True]
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(" |")[0] for line in lines] == [
        "step 1/5  20%", "step 4/5  80%", "step 5/5 100%"]
    assert lines[-1].endswith("eta 0:00 | acc 0.500")
    bar.close()
    assert stream.getvalue().splitlines() == lines  # no stray output on close


def test_eta_counts_from_the_resumed_step():
    clock = FakeClock()
    bar = ProgressLine(1000, stream=io.StringIO(), is_tty=False, clock=clock, start_step=900)
    clock.now += 10.0
    assert "eta 0:40" in bar.render(920)
