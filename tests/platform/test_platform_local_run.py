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


def _kfp(task: str, status: str = "SUCCESS") -> str:
    color = "\x1b[92m" if status == "SUCCESS" else "\x1b[91m"
    return f"12:00:00.000 - INFO - Task \x1b[96m'{task}'\x1b[0m finished with status {color}{status}\x1b[0m\n"


def _outputs(task: str, *lines: str) -> str:
    """What kfp.local prints after a task's status line: one log record, its outputs below."""
    return "\n".join([f"12:00:00.001 - INFO - Task \x1b[96m'{task}'\x1b[0m outputs:", *lines]) + "\n"


def test_step_log_names_the_seed_or_soup_of_each_task(tmp_path: Path) -> None:
    """kfp.local names every task of a ParallelFor alike; the status line gains what its outputs say it was."""
    terminal = io.StringIO()
    with StepLog(tmp_path / "pipeline.log", terminal) as log:
        log.write(_kfp("train-align") + _kfp("train-align"))  # two seeds finish before either prints its outputs
        log.write(_outputs("train-align", "    aligned: Model( name='aligned',",
                           "                    metadata={'mlflow_run_id': 'r1', 'seed': 1.0, 'kind': 'align'} )"))
        log.write("    [streamed log of another task: \"seed\": 7]\n")
        log.write(_outputs("train-align", "    aligned: Model( name='aligned',",
                           "                    metadata={'seed': 0.0, 'kind': 'align'} )"))
        log.write(_kfp("evaluate-model-2") + _outputs("evaluate-model-2", "    scores: Metrics( name='scores',",
                                                       "                     metadata={'label': 'soup-greedy'} )"))
        log.write(_kfp("soup-models") + _outputs("soup-models", "    soup: Model( metadata={'method': 'uniform'} )"))
        log.write(_kfp("register-model") + _outputs("register-model", "    Output: '3'"))
        log.write(_kfp("promote-model") + _outputs("promote-model", "    Output: '2'"))
        log.write(_kfp("select-seeds") + _outputs("select-seeds", "    Output: [0, 1]"))
        log.write(_kfp("filter-dataset") + "12:00:00.002 - INFO - Task 'filter-dataset' has no outputs\n")
        log.write(_kfp("caption-dataset", "FAILURE"))
        log.write(_kfp("importer"))  # its outputs never printed: the line comes out as it was, at the end
    assert [line.split(" - INFO - ")[-1] for line in terminal.getvalue().splitlines()] == [
        "Task 'train-align' (seed 1) finished with status SUCCESS",
        "Task 'train-align' (seed 0) finished with status SUCCESS",
        "Task 'evaluate-model-2' (soup greedy) finished with status SUCCESS",
        "Task 'soup-models' (soup uniform) finished with status SUCCESS",
        "Task 'register-model' (v3) finished with status SUCCESS",
        "Task 'promote-model' (champion v2) finished with status SUCCESS",
        "Task 'select-seeds' finished with status SUCCESS",
        "Task 'filter-dataset' finished with status SUCCESS",
        "Task 'caption-dataset' finished with status FAILURE",
        "Task 'importer' finished with status SUCCESS",
    ]
