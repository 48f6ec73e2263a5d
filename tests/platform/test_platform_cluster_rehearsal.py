"""A cluster rehearsal: the production pipeline under kfp.local, wired the way a cluster wires it.

What differs from the quickstart, and is what a first cluster run exercises:
- MLflow is a real ``mlflow server`` started with the GKE overlay's own
  Deployment arguments and environment (only the store swapped for PostgreSQL,
  or sqlite where PostgreSQL is not installed, and the address for loopback),
  its artifacts proxied to an S3 endpoint (moto);
- every step gets exactly the environment ``k8s/profiles/gke.yaml`` gives a
  step pod: its ``env``, its Secrets as variables, and its KFP run id (the
  downward API's ``pipeline/runid``); no parent run id is handed down, so the
  steps must find their parent as they do on a cluster without KFP's MLflow plugin;
- DVC pushes to an S3 remote, and a fresh project that knows only that remote
  restores a model's training data from its MLflow run id.

The DNS name in the profile's MLFLOW_TRACKING_URI is the one thing rewritten (to the loopback port).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from bettersynth.cli.main import main
from bettersynth.platform.local_run import environment, kfp_local_globals_restored
from bettersynth.platform.pipeline_loader import load_pipeline_module
from bettersynth.platform.placement import load_profile
from bettersynth.tracking.runs import KFP_RUN_ENV, KFP_RUN_TAG, STEP_TAG
from bettersynth.versioning.dvc import ENDPOINT_ENV, REMOTE_ENV, directory_hash, ensure_dvc_project
from bettersynth_demo.quickstart import prepare_inputs
from bettersynth_demo.world import WorldConfig
from tests.tracking.tracking_servers import BIN, _process, free_port, postgres_missing, postgres_server, s3_server

ROOT = Path(__file__).parents[2]
PROFILE = ROOT / "k8s" / "profiles" / "gke.yaml"
OVERLAY = ROOT / "k8s" / "overlays" / "gke"
WORLD = WorldConfig(n_seed_samples=40, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3)
MODEL = "rehearsal-vlm"
# What the operator puts in the cluster's Secrets (k8s/base/secrets.example.yaml), here for moto.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal-secret"}

# In `make test`: the production pipeline wired as on GKE, about 100 s on 2 cores.
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not on PATH")


def _mlflow_deployment() -> dict:
    rendered = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True).stdout
    [deployment] = [d for d in yaml.safe_load_all(rendered) if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == "bettersynth-mlflow"]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _server_command(container: dict, port: int, backend: str, artifacts: str) -> list[str]:
    """The Deployment's args with the store, the artifact bucket and the address swapped for this machine's
    (and one worker: the Deployment sizes its workers to its CPU limit, this machine has two shared cores)."""
    swapped = {"--host": "127.0.0.1", "--port": str(port), "--backend-store-uri": backend,
               "--artifacts-destination": artifacts, "--workers": "1"}
    args = []
    for arg in container["args"][2:]:  # after `mlflow server`
        flag, _, value = arg.partition("=")
        args.append(f"{flag}={swapped[flag]}" if flag in swapped else arg)
    assert "--serve-artifacts" in args  # the pods never see the bucket's keys
    return [str(BIN / "mlflow"), "server", *args]


def _step_environment(tracking_url: str, s3_endpoint: str, kfp_run: str) -> dict[str, str]:
    """What a step pod of the GKE profile has: the profile's env, its Secrets' keys, the downward API's run id."""
    profile = load_profile(PROFILE)
    secret_values = CREDENTIALS | {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    env = dict(profile.env)
    cluster_url = urlsplit(env["MLFLOW_TRACKING_URI"])
    assert cluster_url.hostname.endswith(".svc.cluster.local")
    env["MLFLOW_TRACKING_URI"] = tracking_url  # the one rewrite: cluster DNS -> loopback
    for secret in profile.secrets:
        for key, name in secret.env.items():
            if key in secret_values:
                env[name] = secret_values[key]
            else:
                assert secret.optional, f"secret {secret.secret} key {key} has no value in this rehearsal"
    return env | {KFP_RUN_ENV: kfp_run, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    import boto3
    from kfp import local

    root = tmp_path_factory.mktemp("cluster")
    workspace = root / "workspace"
    world, models = prepare_inputs(workspace, WORLD)
    reason = postgres_missing()
    sqlite = contextlib.nullcontext(f"sqlite:///{root / 'mlflow.db'}")
    with s3_server(root) as s3, (postgres_server() if reason is None else sqlite) as backend:
        bucket = boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="rehearsal",
                              aws_secret_access_key="rehearsal-secret")
        for name in ("mlflow", "variants"):
            bucket.create_bucket(Bucket=name)
        container = _mlflow_deployment()
        port = free_port()
        server_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | CREDENTIALS | {
            "MLFLOW_S3_ENDPOINT_URL": s3, "AWS_DEFAULT_REGION": "us-east-1"}
        server_env |= {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] != "HOME"}
        command = _server_command(container, port, backend, "s3://mlflow/artifacts")
        with _process(command, root / "mlflow.log", f"http://127.0.0.1:{port}/health", env=server_env):
            url = f"http://127.0.0.1:{port}"
            kfp_run = str(uuid.uuid4())
            step_env = _step_environment(url, s3, kfp_run)
            with environment(step_env | {ENDPOINT_ENV: s3}):
                ensure_dvc_project(workspace, remote_url="s3://variants/dvc", endpoint_url=s3)
            previous_uri = mlflow.get_tracking_uri()
            # the profile as compiled for the cluster, its env exactly what the steps get (the URI's DNS rewritten)
            profile = load_profile(PROFILE)
            profile = profile.model_copy(update={"env": {k: step_env[k] for k in profile.env}})
            pipeline = load_pipeline_module("production").build_pipeline(
                profile, soup_methods=("uniform",), parallelism=2, train_parallelism=1, eval_shards=1)
            arguments = dict(
                workspace=str(workspace), seed_dataset=str(world.seed_jsonl.parent),
                filter_recipe=str(ROOT / "recipes/quickstart_filter.yaml"),
                caption_recipe=str(ROOT / "recipes/quickstart_caption.yaml"), model_root=str(models),
                base_model=str(models / "llava-base"), instruct_data=str(world.instruct_json),
                train_config=str(ROOT / "configs/train/quickstart.yaml"), textvqa_dir=str(world.textvqa.folder),
                mmbench_tsv=str(world.mmbench_tsv), heldout_textvqa_dir=str(world.heldout_textvqa.folder),
                heldout_mmbench_tsv=str(world.heldout_mmbench_tsv), num_shards=2, seeds=[0],
                registered_model=MODEL, variant="rehearsal",
            )
            with environment(step_env | {"BETTERSYNTH_CACHE_DIR": str(root / "scores")}), kfp_local_globals_restored():
                local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workspace / "outputs"))
                pipeline(**arguments)
            mlflow.set_tracking_uri(previous_uri)
            yield {"url": url, "s3": s3, "bucket": bucket, "kfp_run": kfp_run, "root": root,
                   "backend": "postgresql" if reason is None else f"sqlite ({reason})"}


@pytest.fixture(scope="module")
def client(rehearsal) -> MlflowClient:
    return MlflowClient(rehearsal["url"])


def test_every_step_nests_under_one_parent_run_per_kfp_run(rehearsal, client):
    experiment = client.get_experiment_by_name(load_profile(PROFILE).env["MLFLOW_EXPERIMENT_NAME"])
    [parent] = client.search_runs([experiment.experiment_id], f"tags.`{KFP_RUN_TAG}` = '{rehearsal['kfp_run']}'")
    assert parent.info.status == "FINISHED"  # closed by the last step (promote)
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    steps = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert steps and all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in steps)
    names = {r.data.tags.get(STEP_TAG) for r in steps}
    assert {"filter", "caption", "version-dataset", "train-seed0", "evaluate-seed0"} <= names, names
    assert sum(r.data.tags.get(STEP_TAG) == "filter" for r in steps) == 2  # one per shard, both under the parent


def test_versions_and_aliases_are_registered_for_the_run(rehearsal, client):
    experiment = client.get_experiment_by_name("bettersynth")
    [parent] = client.search_runs([experiment.experiment_id], f"tags.`{KFP_RUN_TAG}` = '{rehearsal['kfp_run']}'")
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 2  # seed 0 and its uniform soup
    assert {v.tags["pipeline.run"] for v in versions} == {parent.info.run_id}
    assert {"candidate", "champion"} <= set(client.get_registered_model(MODEL).aliases)


def test_artifacts_went_through_the_server_to_the_bucket(rehearsal):
    keys = [o["Key"] for o in rehearsal["bucket"].list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(key.endswith("MLmodel") or "/artifacts/" in key for key in keys), keys[:10]
    assert rehearsal["bucket"].list_objects_v2(Bucket="variants")["KeyCount"] > 0  # DVC pushed the variant


def test_a_fresh_project_that_knows_only_the_s3_remote_restores_a_models_data(rehearsal, client, tmp_path, capsys):
    [version] = [v for v in client.search_model_versions(f"name='{MODEL}'") if "soup" not in (v.tags.get("kind") or "")][:1]
    clone = tmp_path / "fresh-clone"
    clone.mkdir()
    with environment(CREDENTIALS | {"AWS_DEFAULT_REGION": "us-east-1", REMOTE_ENV: "s3://variants/dvc",
                                    ENDPOINT_ENV: rehearsal["s3"]}):
        code = main(["data", "checkout", version.run_id, "--workspace", str(clone), "--tracking-uri", rehearsal["url"]])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    dataset_hash, restored = line.split()[1], Path(line.split(" into ")[-1])
    assert directory_hash(clone, restored) == dataset_hash
    assert (restored / "samples.jsonl").is_file()
