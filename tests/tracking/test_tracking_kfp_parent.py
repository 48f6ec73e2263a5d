"""Steps on a cluster without KFP's MLflow plugin share one parent run per KFP run, even when they start at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from mlflow import MlflowClient

from bettersynth.tracking import runs
from bettersynth.tracking.runs import KFP_RUN_ENV, KFP_RUN_TAG, kfp_parent_run

STEP = """
import sys
from bettersynth.tracking.runs import step_run
with step_run(sys.argv[1]) as run:
    print("RUN", run.info.run_id)
"""


def _steps_at_once(url: str, kfp_run: str, names: list[str]) -> list[str]:
    """Start one process per step, all at once, with the env a step pod gets from the cluster profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BETTERSYNTH_"))}
    env |= {"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "cluster-rehearsal", KFP_RUN_ENV: kfp_run}
    processes = [subprocess.Popen([sys.executable, "-c", STEP, name], env=env, stdout=subprocess.PIPE, text=True)
                 for name in names]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes)
    return [line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("RUN ")]


def test_parallel_steps_of_one_kfp_run_nest_under_one_parent(sqlite_server):
    steps = _steps_at_once(sqlite_server, "3f9c1a2b-run-a", [f"filter-shard{i}" for i in range(4)])
    other = _steps_at_once(sqlite_server, "77aa01cd-run-b", ["filter-shard0"])
    client = MlflowClient(sqlite_server)
    experiment = client.get_experiment_by_name("cluster-rehearsal")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    [parent] = client.search_runs([experiment.experiment_id], f"tags.`{KFP_RUN_TAG}` = '3f9c1a2b-run-a'")
    assert parent.info.run_name == "kfp run 3f9c1a2b"
    assert {client.get_run(r).data.tags["mlflow.parentRunId"] for r in steps} == {parent.info.run_id}
    [other_parent] = client.search_runs([experiment.experiment_id], f"tags.`{KFP_RUN_TAG}` = '77aa01cd-run-b'")
    assert client.get_run(other[0]).data.tags["mlflow.parentRunId"] == other_parent.info.run_id != parent.info.run_id


def test_with_kfps_mlflow_plugin_steps_log_into_the_injected_run(sqlite_server):
    """The plugin opens the parent and a nested run per task and injects its id; the profile's env is there too."""
    client = MlflowClient(sqlite_server)
    experiment_id = client.create_experiment("plugin-made")
    parent = client.create_run(experiment_id, run_name="kfp pipeline run")
    task = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BETTERSYNTH_"))}
    env |= {"MLFLOW_TRACKING_URI": sqlite_server, "MLFLOW_EXPERIMENT_NAME": "cluster-rehearsal",
            KFP_RUN_ENV: "91ee00aa-with-plugin", "MLFLOW_EXPERIMENT_ID": experiment_id, "MLFLOW_RUN_ID": task.info.run_id}
    script = STEP + "from bettersynth.tracking.runs import pipeline_run_id\nprint('PARENT', pipeline_run_id())\n"
    out = subprocess.run([sys.executable, "-c", script, "filter"], env=env, capture_output=True, text=True, check=True).stdout
    said = dict(line.split() for line in out.splitlines() if line.startswith(("RUN ", "PARENT ")))
    assert said == {"RUN": task.info.run_id, "PARENT": parent.info.run_id}
    assert client.get_run(task.info.run_id).data.tags["bettersynth.step"] == "filter"
    everywhere = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                    f"tags.`{KFP_RUN_TAG}` = '91ee00aa-with-plugin'")
    assert everywhere == []  # the plugin's parent is used; none of our own is opened


def test_an_older_parent_that_lands_late_wins_and_the_newer_one_is_deleted(sqlite_server, tracking_to, monkeypatch):
    """The race CI once lost: a step creates a parent and sees only its own while another's older create is
    in flight. Here that create lands, deterministically, while the step waits out the settle time."""
    tracking_to(sqlite_server)  # in this process too: an earlier test's set_tracking_uri outranks the environment
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cluster-rehearsal")
    monkeypatch.setattr(runs, "_KFP_PARENTS", {})
    client = MlflowClient(sqlite_server)
    experiment_id = runs.ensure_experiment("cluster-rehearsal")
    asked_at_ms = int(time.time() * 1000)
    landed = []
    real_sleep = time.sleep

    def settle_while_an_older_create_lands(seconds: float) -> None:
        landed.append(client.create_run(experiment_id, start_time=asked_at_ms - 50, tags={KFP_RUN_TAG: "c0ffee00-late"}))
        real_sleep(seconds)

    monkeypatch.setattr(runs.time, "sleep", settle_while_an_older_create_lands)
    chosen = kfp_parent_run("c0ffee00-late", settle_s=2.0)
    monkeypatch.setattr(runs.time, "sleep", real_sleep)
    [late] = landed  # the step did wait: it had created a parent of its own
    assert chosen == late.info.run_id
    [active] = client.search_runs([experiment_id], f"tags.`{KFP_RUN_TAG}` = 'c0ffee00-late'")
    assert active.info.run_id == late.info.run_id
