"""Load: eight pipeline runs at once against one MLflow server keep every run and every registered version.

Why: a team shares one tracking server; eight pipelines starting together
race on the experiment, the registered model, the version numbers and the
server's database (PostgreSQL where installed, else sqlite with its own file
locking). Each pipeline is the quickstart's, in the tracking tests' tiny
world, in a process and workspace of its own (``load_pipeline.py``), against
a real ``mlflow server`` on loopback. The server's errors are counted from its
uvicorn access log, which MLflow 3.17's ``mlflow server`` writes by default
(one ``"METHOD path HTTP/1.1" status`` line per request, to its stdout).

Run it (about 30 minutes on 2 busy cores)::

    .venv/bin/python -m pytest -q -s -m slow tests/faults/test_faults_load.py

``BETTERSYNTH_LOAD_BACKEND=sqlite`` tests the sqlite store where PostgreSQL is installed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from tracking_servers import mlflow_server, postgres_missing, postgres_server

from bettersynth.tracking.runs import STEP_TAG

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("load_pipeline.py")
AT_ONCE = 8
SERVER_WORKERS = 1  # what tracking_servers.mlflow_server starts: uvicorn, one process, requests on its thread pool
PIPELINE_TIMEOUT_S = 3600  # one pipeline, alone or among eight, on a loaded 2-core machine
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
# A request that died without an answer leaves no access line; its traceback is still in the log.
UNANSWERED = re.compile(r"Exception in ASGI application|Traceback \(most recent call last\)")


@contextlib.contextmanager
def backend_store(root: Path) -> Iterator[tuple[str, str]]:
    """(name, SQLAlchemy URI) of the server's store: PostgreSQL where it can start here, else sqlite."""
    wanted = os.environ.get("BETTERSYNTH_LOAD_BACKEND", "")
    if wanted != "sqlite" and postgres_missing() is None:
        with postgres_server() as uri:
            yield "postgresql", uri
    else:
        yield "sqlite", f"sqlite:///{root / 'mlflow.db'}"


def server_log(log: Path) -> dict:
    """Requests the server answered, by status class, the 5xx lines, and tracebacks of unanswered ones."""
    text = log.read_text(encoding="utf-8", errors="replace")
    statuses = Counter()
    errors = []
    for line in text.splitlines():
        found = ACCESS_LINE.search(line)
        if found:
            statuses[found["status"][0] + "xx"] += 1
            if found["status"].startswith("5"):
                errors.append(line.strip())
    return {"requests": sum(statuses.values()), "by_class": dict(sorted(statuses.items())),
            "5xx": len(errors), "5xx_lines": errors[:20], "tracebacks": len(UNANSWERED.findall(text))}


def start_pipeline(folder: Path, url: str, experiment: str, model: str) -> tuple[subprocess.Popen, float]:
    """One pipeline in its own process and workspace under ``folder``; (process, monotonic start)."""
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BETTERSYNTH_"))}
    with (folder / "stdout.log").open("w") as out, (folder / "stderr.log").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, str(RUNNER), "--workspace", str(folder / "ws"), "--tracking-uri", url,
             "--experiment", experiment, "--model", model, "--summary", str(folder / "summary.json")],
            cwd=REPO, env=env, stdout=out, stderr=err)
    return process, time.monotonic()


def finish(started: list[tuple[subprocess.Popen, float]], folders: list[Path]) -> list[dict]:
    """Wait for the pipelines: each one's summary and wall time (to its own exit), or its exit code and stderr."""
    ended: dict[int, float] = {}
    while len(ended) < len(started):
        for i, (process, begun) in enumerate(started):
            if i in ended:
                continue
            if process.poll() is None and time.monotonic() > begun + PIPELINE_TIMEOUT_S:
                process.kill()
                process.wait()
            if process.poll() is not None:
                ended[i] = time.monotonic()
        time.sleep(0.2)
    outcomes = []
    for i, ((process, begun), folder) in enumerate(zip(started, folders)):
        seconds = ended[i] - begun
        if process.returncode != 0:
            outcomes.append({"failed": process.returncode, "wall_seconds": seconds, "folder": str(folder),
                             "stderr": (folder / "stderr.log").read_text(errors="replace")[-3000:]})
        else:
            outcomes.append({**json.loads((folder / "summary.json").read_text()), "wall_seconds": seconds})
    return outcomes


def failures(runs: list[dict]) -> str:
    return "\n".join(f"pipeline in {r['folder']} ended with {r['failed']} after {r['wall_seconds']:.0f}s:\n{r['stderr']}"
                     for r in runs if "failed" in r)


def step_counts(client: mlflow.MlflowClient, experiment_id: str, parent: str) -> Counter:
    """How often each step logged a finished run under ``parent``."""
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return Counter(run.data.tags.get(STEP_TAG, "?") + ("" if run.info.status == "FINISHED" else f" ({run.info.status})")
                   for run in children)


def versions_of(client: mlflow.MlflowClient, model: str) -> list:
    return sorted(client.search_model_versions(f"name='{model}'", max_results=1000), key=lambda v: int(v.version))


def check_pipelines(client: mlflow.MlflowClient, runs: list[dict], expected_steps: Counter, kinds: Counter,
                    model: str) -> list[str]:
    """Where the pipelines' runs and versions differ from what one pipeline alone leaves; empty when intact."""
    problems = []
    parents = {run["parent_run_id"] for run in runs}
    experiments = {run["experiment_id"] for run in runs}
    if len(parents) != len(runs):
        problems.append("two pipelines share a parent run")
    if len(experiments) != 1:
        problems.append(f"the pipelines logged into {len(experiments)} experiments")
    experiment_id = runs[0]["experiment_id"]
    children = {}
    for run in runs:
        parent = run["parent_run_id"]
        if client.get_run(parent).info.status != "FINISHED":
            problems.append(f"parent run {parent} is {client.get_run(parent).info.status}")
        steps = step_counts(client, experiment_id, parent)
        if steps != expected_steps:
            problems.append(f"parent run {parent}: steps {dict(steps - expected_steps)} extra, "
                            f"{dict(expected_steps - steps)} missing")
        children[parent] = {r.info.run_id for r in client.search_runs(
            [experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)}
    total_runs = len(client.search_runs([experiment_id], max_results=1000))
    if total_runs != len(runs) * (1 + sum(expected_steps.values())):
        problems.append(f"{total_runs} runs in the experiment, not {len(runs)} parents and their steps")
    versions = versions_of(client, model)
    numbers = [int(v.version) for v in versions]
    if numbers != list(range(1, len(runs) * sum(kinds.values()) + 1)):
        problems.append(f"versions {numbers}: one lost, duplicated or skipped")
    for run in runs:
        mine = [v for v in versions if v.tags.get("pipeline.run") == run["parent_run_id"]]
        if Counter(v.tags.get("kind") for v in mine) != kinds:
            problems.append(f"pipeline {run['parent_run_id']} registered {[(v.version, v.tags.get('kind')) for v in mine]}")
        if sorted(run["versions"], key=int) != [v.version for v in mine]:
            problems.append(f"pipeline {run['parent_run_id']}: summary says {run['versions']}, the registry "
                            f"{[v.version for v in mine]}")
        if not {v.run_id for v in mine} <= children[run["parent_run_id"]]:
            problems.append(f"pipeline {run['parent_run_id']}: a version's source run is not its own step's")
    strays = [v.version for v in versions if v.tags.get("pipeline.run") not in parents]
    if strays:
        problems.append(f"versions {strays} belong to no pipeline")
    return problems


def champion_of(client: mlflow.MlflowClient, model: str, versions: list) -> dict | None:
    """Which version holds ``champion`` and the best score of all (reported: eight promotions race on the alias)."""
    try:
        holder = client.get_model_version_by_alias(model, "champion")
    except MlflowException:
        return None
    scores = [float(v.tags["score"]) for v in versions if "score" in v.tags]
    return {"version": holder.version, "score": float(holder.tags.get("score", "nan")),
            "best_score": max(scores, default=None)}


@pytest.mark.slow  # one pipeline alone, then eight at once: about 30 minutes on 2 busy cores
def test_faults_eight_pipelines_at_once_against_one_server(tmp_path, capsys):
    root = tmp_path / "server"
    root.mkdir()
    load_before = os.getloadavg()
    with backend_store(root) as (backend, uri), mlflow_server(uri, root) as url:
        client = mlflow.MlflowClient(tracking_uri=url)

        # Alone: the baseline time, and what one pipeline leaves in MLflow.
        [alone] = finish([start_pipeline(tmp_path / "alone", url, "load-alone", "load-alone-vlm")], [tmp_path / "alone"])
        assert "failed" not in alone, failures([alone])
        expected_steps = step_counts(client, alone["experiment_id"], alone["parent_run_id"])
        alone_versions = versions_of(client, "load-alone-vlm")
        assert expected_steps and set(expected_steps.values()) == {1}, expected_steps
        assert len(alone_versions) == len(alone["versions"]) > 0
        kinds = Counter(v.tags.get("kind") for v in alone_versions)

        # Eight at once, into a new experiment and a new registered model: their creation races too.
        batch_start = time.monotonic()
        folders = [tmp_path / f"run{i}" for i in range(AT_ONCE)]
        started = [start_pipeline(folder, url, "load-at-once", "load-at-once-vlm") for folder in folders]
        runs = finish(started, folders)
        batch_seconds = time.monotonic() - batch_start
        done = [run for run in runs if "failed" not in run]
        problems = check_pipelines(client, done, expected_steps, kinds, "load-at-once-vlm") if done else []
        versions = versions_of(client, "load-at-once-vlm")
        champion = champion_of(client, "load-at-once-vlm", versions)

    errors = server_log(root / "mlflow-server.log")
    walls = [run["wall_seconds"] for run in runs]
    report = {
        "backend": backend, "server_workers": SERVER_WORKERS, "pipelines_at_once": AT_ONCE, "completed": len(done),
        "server": errors, "problems": problems, "alone_seconds": round(alone["wall_seconds"], 1),
        "at_once_seconds": {"median": round(statistics.median(walls), 1), "max": round(max(walls), 1),
                            "each": [round(w, 1) for w in walls], "batch": round(batch_seconds, 1),
                            "inside_pipeline": [round(r["pipeline_seconds"], 1) for r in done]},
        "batch_over_8x_alone": round(batch_seconds / (AT_ONCE * alone["wall_seconds"]), 3),
        "versions": len(versions), "champion": champion,
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
    }
    path = tmp_path / "load_report.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    with capsys.disabled():
        print(f"\nload ({backend}, {AT_ONCE} pipelines at once, {SERVER_WORKERS} server worker): "
              f"{len(done)} of {AT_ONCE} completed; "
              f"server 5xx {errors['5xx']} of {errors['requests']} requests ({errors['by_class']}), "
              f"unanswered tracebacks {errors['tracebacks']}; alone {alone['wall_seconds']:.0f}s; "
              f"at once median {statistics.median(walls):.0f}s, max {max(walls):.0f}s; batch {batch_seconds:.0f}s = "
              f"{report['batch_over_8x_alone']:.2f} x (8 x alone); load average "
              f"{report['load_average']['before'][0]:.1f} -> {report['load_average']['after'][0]:.1f}")
        print(f"load report: {path}")
    assert len(done) == AT_ONCE, failures(runs)
    assert not problems, "\n".join(problems)
    assert errors["5xx"] == 0 and errors["tracebacks"] == 0, errors
