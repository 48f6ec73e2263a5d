"""The local launch path's plumbing: the step log, and what kfp.local may leave behind."""

from __future__ import annotations

import builtins
import io
import logging
from pathlib import Path

from bettersynth.platform.local_run import StepLog, kfp_local_globals_restored


def test_step_log_keeps_everything_and_shows_only_status_lines(tmp_path: Path) -> None:
    terminal = io.StringIO()
    with StepLog(tmp_path / "pipeline.log", terminal) as log:
        log.write('{"executor_input": "..."}\n')
        log.write("12:00:00 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\npart")
        log.write("ial line\n")
    assert terminal.getvalue() == "12:00:00 - INFO - Task 'train' finished with status SUCCESS\n"
    assert (tmp_path / "pipeline.log").read_text().splitlines() == [
        '{"executor_input": "..."}',
        "12:00:00 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
        "partial line"]


def test_handlers_and_print_swapped_inside_a_run_are_put_back(tmp_path: Path) -> None:
    """As kfp.local leaves them when two tasks' restores interleave: a handler on a closed log."""
    root = logging.getLogger()
    before, level, original_print = root.handlers[:], root.level, builtins.print
    with kfp_local_globals_restored(), StepLog(tmp_path / "pipeline.log", io.StringIO()) as log:
        root.handlers[:] = [logging.StreamHandler(log)]
        root.setLevel(logging.DEBUG)
        builtins.print = lambda *args, **kwargs: None
    assert root.handlers == before and root.level == level and builtins.print is original_print
    logging.getLogger("after.the.run").warning("goes to the original handlers, not to a closed file")
