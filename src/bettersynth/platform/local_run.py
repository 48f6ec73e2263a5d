"""One pipeline run through ``kfp.local`` under an MLflow parent run: the launch path of every local run.

Why one function: the quickstart and the proxy comparison run the same
``data_centric_loop`` the cluster runs, and both need the same plumbing around
it: an MLflow parent run whose id the steps inherit (as KFP's MLflow plugin
injects it on a cluster), the score cache in the workspace, ``kfp.local``'s
per-task JSON kept in a log file with only status lines on the terminal, and
a failing step pointing at that file (or, when a service was away, that step's
``ServiceUnavailable`` raised again here, so the command says it in one line).

Example::

    run = run_locally(pipeline, arguments, workspace=ws, tracking_uri=uri, experiment_id=eid,
                      run_name="quickstart", params={"seeds": [0, 1]})
    collect_summary(run.run_id, "bettersynth-vlm", ws, run.seconds)
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import mlflow

from bettersynth.core.retry import ServiceUnavailable
from bettersynth.tracking.attempts import ATTEMPT_ENV, new_attempt, parent_run, pipeline_key
from bettersynth.tracking.runs import PARENT_RUN_ENV

log = logging.getLogger(__name__)

# kfp.local says, for every task, that cluster-only settings (GPUs, node pools,
# the project image) don't apply on one machine; that is expected here.
EXPECTED_LOCAL_WARNINGS = (".*have no effect in the current local runner.*", ".*custom or non-Python base image.*")


class StepLog:
    """A stdout stand-in: everything goes to a log file, task status lines also to the terminal.

    Why: kfp.local prints every executor's full input/output JSON; a newcomer
    needs to see steps finishing, and the details only when something fails.

    kfp.local names a task by its component, the same for every seed of a
    ``ParallelFor``; a finished task's line waits for the outputs kfp.local
    prints next and gains what they say it was:
    ``Task 'train-align' (seed 1) finished with status SUCCESS``.
    """

    STATUS = re.compile(r"(Task|Pipeline) .* finished with status")
    SUCCESS = re.compile(r"Task '(?P<task>[^']+)' finished with status SUCCESS")
    OUTPUTS = re.compile(r"Task '(?P<task>[^']+)' (?P<what>outputs:|has no outputs)")
    LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d")  # a kfp.local log record, not a line of a task's outputs
    # what an output's metadata says the task was about, most telling first
    LABELS = ((re.compile(r"'label': '(?P<v>[^']+)'"), "{}"), (re.compile(r"'method': '(?P<v>[^']+)'"), "soup {}"),
              (re.compile(r"'seed': (?P<v>\d+)"), "seed {}"))
    VERSION = re.compile(r"^\s+Output: '(?P<v>\d+)'")  # register / promote return a model version
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, path: Path, terminal) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", encoding="utf-8")
        self._terminal = terminal
        self._pending = ""
        self._finished: dict[str, list[str]] = {}  # task -> its status lines waiting for its outputs
        self._reading: str | None = None  # the task whose outputs are being printed

    def write(self, text: str) -> int:
        self._file.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(self.ANSI.sub("", line).rstrip())
        return len(text)

    def _line(self, plain: str) -> None:
        if self._reading and (self.LOG_LINE.match(plain) or not plain.strip()):
            self._release(self._reading, "")  # outputs over, nothing said what the task was
        if self._reading:
            label = self._label(self._reading, plain)
            if label:
                self._release(self._reading, label)
            return
        finished, outputs = self.SUCCESS.search(plain), self.OUTPUTS.search(plain)
        if finished:
            self._finished.setdefault(finished["task"], []).append(plain.strip())
        elif outputs and outputs["task"] in self._finished:
            if outputs["what"] == "outputs:":
                self._reading = outputs["task"]
            else:
                self._release(outputs["task"], "")
        elif self.STATUS.search(plain):
            self._show(plain.strip())

    def _label(self, task: str, line: str) -> str:
        for pattern, form in self.LABELS:
            found = pattern.search(line)
            if found:
                value = found["v"]
                return form.format(f"seed {value[4:]}" if re.fullmatch(r"seed\d+", value) else value.replace("-", " "))
        found = self.VERSION.match(line)
        if found and task.startswith(("register", "promote")):
            return f"{'champion ' if task.startswith('promote') else ''}v{found['v']}"
        return ""

    def _release(self, task: str, label: str) -> None:
        waiting = self._finished.get(task, [])
        if waiting:
            line = waiting.pop(0)
            self._show(line.replace(f"'{task}' finished", f"'{task}' ({label}) finished", 1) if label else line)
        if not waiting:
            self._finished.pop(task, None)
        self._reading = None

    def _show(self, line: str) -> None:
        self._terminal.write(line + "\n")
        self._terminal.flush()

    def flush(self) -> None:
        self._file.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        for task in list(self._finished):  # lines whose outputs never came: as kfp.local wrote them
            while task in self._finished:
                self._release(task, "")
        self._file.close()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (the steps inherit them), then restore the old ones."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def kfp_local_globals_restored() -> Iterator[None]:
    """Put the root logger's handlers and level, and ``builtins.print``, back as they were.

    Why: kfp.local swaps both per task (a handler on the current stdout, an
    indenting print) and restores them per task; with two tasks in flight the
    restores interleave and can leave them pointing at this run's ``StepLog``,
    which is closed once the run ends.
    """
    root = logging.getLogger()
    handlers, level, original_print = root.handlers[:], root.level, builtins.print
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        builtins.print = original_print


@dataclass(frozen=True)
class LocalRun:
    run_id: str  # the MLflow parent run; every step's run is nested under it
    seconds: float  # wall time from ``started`` to the pipeline's end


def run_locally(pipeline: Callable[..., Any], arguments: dict[str, Any], *, workspace: Path, tracking_uri: str,
                experiment_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None,
                step_env: dict[str, str] | None = None, guard: AbstractContextManager | None = None,
                started: float | None = None) -> LocalRun:
    """Run ``pipeline(**arguments)`` with ``kfp.local`` inside an MLflow parent run.

    The parent is new, or the one an interrupted launch with the same name and
    ``arguments`` left unfinished (``tracking.attempts``): a rerun after a
    tracking server went away then reads as one pipeline run, each step once.

    ``step_env`` adds environment variables the steps inherit; ``guard`` is
    held while the pipeline runs (the proxy seals its answer key with it);
    ``started`` (a ``time.monotonic()`` value) lets the caller count its own
    preparation into the logged ``wall_seconds``.
    """
    from kfp import local

    for message in EXPECTED_LOCAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    started = time.monotonic() if started is None else started
    workspace = Path(workspace)
    attempt = new_attempt()
    with parent_run(experiment_id, run_name, pipeline_key(run_name, experiment_id, arguments)) as parent:
        mlflow.log_params(params)
        if tags:
            mlflow.set_tags(tags)
        os.environ.setdefault("BETTERSYNTH_CACHE_DIR", str(workspace / ".cache" / "scores"))
        log_path = workspace / "local_outputs" / f"pipeline-{parent.info.run_id}.log"
        if log_path.exists():  # a resumed parent: the earlier attempt's log stays
            log_path = log_path.with_name(f"pipeline-{parent.info.run_id}-{attempt[:8]}.log")
        log.info("running the pipeline through kfp.local; full step logs: %s", log_path)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workspace / "local_outputs"))
        inherited = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_ID": experiment_id,
                     PARENT_RUN_ENV: parent.info.run_id, ATTEMPT_ENV: attempt, **(step_env or {})}
        with environment(inherited), guard or contextlib.nullcontext(), kfp_local_globals_restored(), \
                StepLog(log_path, sys.stdout) as stream, contextlib.redirect_stdout(stream):
            try:
                pipeline(**arguments)
            except RuntimeError as exc:
                failure = RuntimeError(f"{exc}\nThe failing step's traceback is in {log_path}")
                stream.flush()
                unavailable = ServiceUnavailable.parse(log_path.read_text(encoding="utf-8", errors="replace"))
                if unavailable is not None:
                    raise unavailable from failure
                raise failure from None
        elapsed = time.monotonic() - started
        mlflow.log_metric("wall_seconds", elapsed)
    return LocalRun(parent.info.run_id, elapsed)
