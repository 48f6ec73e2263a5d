"""``bettersynth submit``: argument handling, and that the compiled package is what reaches the KFP API.

The endpoint is a tiny HTTP stub of the KFP v2beta1 REST API (healthz,
experiments, runs) on localhost; ``kfp.Client`` talks to it for real.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from bettersynth.cli.main import main
from bettersynth.platform.submit import SubmitSettings, check_arguments, parse_arguments, submit

REQUIRED = {
    "workspace": "/mnt/data/workspace", "seed_dataset": "/mnt/data/seed", "filter_recipe": "/mnt/data/recipes/f.yaml",
    "caption_recipe": "/mnt/data/recipes/c.yaml", "model_root": "/mnt/models", "base_model": "/mnt/models/llava-base",
    "instruct_data": "/mnt/data/instruct/llava.json", "train_config": "/mnt/data/configs/train.yaml",
    "textvqa_dir": "/mnt/data/textvqa", "mmbench_tsv": "/mnt/data/mmbench/dev.tsv",
    "heldout_textvqa_dir": "/mnt/data/heldout/textvqa", "heldout_mmbench_tsv": "/mnt/data/heldout/mmbench.tsv",
}


class KfpStub(BaseHTTPRequestHandler):
    """Answers the calls kfp.Client makes to create an experiment and a run, and records them."""

    calls: list = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.calls.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({})  # no experiment of that name yet
        elif self.path.startswith("/apis/v2beta1/runs/run-1"):
            self._reply({"run_id": "run-1", "state": "SUCCEEDED"})
        else:
            self.send_error(404)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path == "/apis/v2beta1/runs":
            self._reply({"run_id": "run-1", "experiment_id": body["experiment_id"], "display_name": body["display_name"]})
        else:
            self.send_error(404)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def kfp_endpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json from the machine
    KfpStub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", KfpStub.calls
    server.shutdown()


@pytest.fixture(scope="module")
def package(compiled_package):
    return compiled_package("production", "k8s/profiles/eks.yaml")


def test_arguments_from_files_then_pairs(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("num_shards: 4\nvariant: a\nseeds: [0, 1]\n")
    second.write_text("variant: b\n")
    arguments = parse_arguments([first, second], ["seeds=[3, 4, 5]", "caption_fraction=0.5", "note=", "path=/a=b"])
    assert arguments == {"num_shards": 4, "variant": "b", "seeds": [3, 4, 5], "caption_fraction": 0.5, "note": "", "path": "/a=b"}


@pytest.mark.parametrize("pair", ["no-equals-sign", "=value", "seeds=[1,"])
def test_bad_pairs_name_themselves(pair):
    with pytest.raises(ValueError, match="--param"):
        parse_arguments(pairs=[pair])


def test_bad_parameter_file_names_the_file(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="run.yaml"):
        parse_arguments([bad])


def test_unknown_and_missing_parameters_are_named(package):
    check_arguments(package, dict(REQUIRED))
    with pytest.raises(ValueError, match=r"unknown parameters \['num_shard'\]"):
        check_arguments(package, REQUIRED | {"num_shard": 3})
    with pytest.raises(ValueError, match=r"missing required parameters \['model_root'\]"):
        check_arguments(package, {k: v for k, v in REQUIRED.items() if k != "model_root"})


def test_the_compiled_package_is_what_gets_submitted(package, kfp_endpoint):
    host, calls = kfp_endpoint
    settings = SubmitSettings(host=host, experiment="recap-sweep", run_name="sweep-1", service_account="bettersynth-pipeline-runner")
    result = submit(package, REQUIRED | {"num_shards": 16}, settings, wait_timeout=30)
    assert result.run_id == "run-1"
    assert result.url == f"{host}/#/runs/details/run-1"
    assert result.state == "SUCCEEDED"
    experiment = next(body for method, path, body in calls if method == "POST" and path.endswith("/experiments"))
    assert experiment["display_name"] == "recap-sweep"
    run = next(body for method, path, body in calls if method == "POST" and path.endswith("/runs"))
    pipeline_spec, platform_spec = yaml.safe_load_all(Path(package).read_text())
    assert run["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    assert run["experiment_id"] == "exp-1" and run["display_name"] == "sweep-1"
    assert run["service_account"] == "bettersynth-pipeline-runner"
    assert run["runtime_config"]["parameters"]["num_shards"] == 16
    assert run["runtime_config"]["parameters"]["model_root"] == "/mnt/models"


def test_nothing_is_sent_when_arguments_are_wrong(package, kfp_endpoint):
    host, calls = kfp_endpoint
    with pytest.raises(ValueError, match="missing required"):
        submit(package, {"num_shards": 2}, SubmitSettings(host=host, experiment="x"))
    assert calls == []


def test_cli_compiles_submits_and_prints_the_url(kfp_endpoint, tmp_path, capsys):
    host, calls = kfp_endpoint
    params = tmp_path / "run.yaml"
    params.write_text(yaml.safe_dump(REQUIRED))
    kept = tmp_path / "kept.yaml"
    code = main(["submit", "--host", host, "--experiment", "cli", "--profile", "k8s/profiles/gke.yaml",
                 "--params", str(params), "--param", "num_shards=2", "--output", str(kept), "--wait", "--timeout", "30"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"run run-1: {host}/#/runs/details/run-1" in out and "finished: SUCCEEDED" in out
    run = next(body for method, path, body in calls if method == "POST" and path.endswith("/runs"))
    assert run["pipeline_spec"]["pipeline_spec"] == next(yaml.safe_load_all(kept.read_text()))
    assert "gke-spot" in json.dumps(run["pipeline_spec"]["platform_spec"])


def test_imported_inputs_must_be_object_store_uris(compiled_package, kfp_endpoint):
    """The backend imports artifacts from object stores only: a PVC path fed to an importer is refused before submit."""
    from bettersynth.platform.submit import check_importer_uris, imported_parameters

    host, calls = kfp_endpoint
    loop = compiled_package("data_centric_loop", "k8s/profiles/gke.yaml")
    evaluation = compiled_package("sharded_eval", "k8s/profiles/gke.yaml")
    assert imported_parameters(loop) == ["seed_dataset"] and imported_parameters(evaluation) == ["model_dir"]
    with pytest.raises(ValueError, match=r"parameter 'seed_dataset' is imported as an artifact.*got '/mnt/data/seed'"):
        submit(loop, dict(REQUIRED), SubmitSettings(host=host, experiment="x"))
    assert calls == []  # nothing reached the cluster
    check_importer_uris(loop, REQUIRED | {"seed_dataset": "s3://team-data/seed/v3"})
    with pytest.raises(ValueError, match="'model_dir'"):
        check_importer_uris(evaluation, {"model_dir": "/mnt/models/soup"})
    check_importer_uris(evaluation, {"model_dir": "gs://team-models/soup"})
    assert imported_parameters(compiled_package("production", "k8s/profiles/gke.yaml")) == []
