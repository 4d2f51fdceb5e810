"""The CLI's progress lines: shown for steps that run over a second, every few seconds in a log, never with --quiet."""

from __future__ import annotations

import io
import time

from birder_index.cli.progress import Reporter


class Log(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_a_long_step_says_what_it_does_and_how_far_it_is() -> None:
    log = Log()
    with Reporter(stream=log, delay=0.05, interval=0.1) as progress:
        progress("embedding", 0, 10)
        time.sleep(0.3)
        progress("embedding", 4, 10)
        time.sleep(0.3)
        progress("embedding", 10, 10)
    lines = log.getvalue().splitlines()
    assert lines[0] == "embedding..."
    assert any(line.startswith("embedding: 4/10 (40%) after ") for line in lines)
    assert lines[-1].startswith("embedding: 10/10 (100%) after ")


def test_short_steps_and_quiet_runs_show_nothing() -> None:
    log = Log()
    with Reporter(stream=log, delay=0.5) as progress:
        progress("grouping", 0, None)
        progress("grouping", 3, 3)
    with Reporter(stream=log, quiet=True, delay=0.0, interval=0.0) as quiet:
        quiet("embedding", 0, 10)
        time.sleep(0.2)
        quiet.note("a note")
    assert log.getvalue() == ""


def test_a_step_without_a_total_still_says_it_is_working() -> None:
    log = Log()
    with Reporter(stream=log, delay=0.05, interval=0.1) as progress:
        progress("finding near pairs", 0, None)
        time.sleep(0.35)
    lines = log.getvalue().splitlines()
    assert lines[0] == "finding near pairs..." and lines[1].startswith("finding near pairs: working after ")
