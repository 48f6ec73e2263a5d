"""The production pipeline compiled per cluster profile: what each step pod will get, read from the IR.

Expected values are read from the profile YAML itself (an independent
parse), so the tests hold for any profile the project ships.
"""

from __future__ import annotations

import pytest
import yaml

from bettersynth.platform.pipeline_loader import load_pipeline_module
from bettersynth.platform.placement import PRIORITY_LABEL, ClusterProfile, load_profile

PROFILES = ("gke", "eks", "generic")
# component (IR executor prefix) -> step name in the profiles
STEPS = {
    "plan-shards": "plan-shards", "shard-dataset": "shard-dataset", "filter-dataset": "filter",
    "caption-dataset": "caption", "merge-datasets": "merge-datasets", "version-dataset": "version-dataset",
    "train-align": "train", "train-finetune": "train", "select-seeds": "select-seeds", "evaluate-model": "evaluate", "soup-models": "soup", "register-model": "register-model",
    "promote-model": "promote-model", "merge-eval": "merge-eval",
}


def _compile(tmp_path, profile: ClusterProfile, **kwargs):
    from kfp import compiler

    out = tmp_path / "production.yaml"
    compiler.Compiler().compile(load_pipeline_module("production").build_pipeline(profile, **kwargs), str(out))
    return list(yaml.safe_load_all(out.read_text()))


@pytest.fixture(scope="module", params=PROFILES)
def compiled(request, compiled_package):
    path = f"k8s/profiles/{request.param}.yaml"
    raw = yaml.safe_load(open(path))
    pipeline_spec, platform_spec = yaml.safe_load_all(compiled_package("production", path, parallelism=6).read_text())
    return raw, pipeline_spec, platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _pool(raw: dict, step: str) -> dict:
    return raw["pools"][raw["steps"].get(step, raw.get("default_pool", "cpu"))]


def _executors(pipeline_spec: dict, component: str) -> list[str]:
    names = [n for n in pipeline_spec["deploymentSpec"]["executors"] if n == f"exec-{component}" or n.startswith(f"exec-{component}-")]
    assert names, component
    return names


def _tasks(pipeline_spec: dict) -> dict[str, dict]:
    """Every task in every DAG (root and loop bodies), by task name."""
    tasks = dict(pipeline_spec["root"]["dag"]["tasks"])
    for component in pipeline_spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


@pytest.mark.parametrize("component", sorted(STEPS))
def test_each_step_gets_its_pool(compiled, component):
    raw, pipeline_spec, k8s = compiled
    pool = _pool(raw, STEPS[component])
    for name in _executors(pipeline_spec, component):
        container = pipeline_spec["deploymentSpec"]["executors"][name]["container"]
        resources = container.get("resources", {})
        if pool.get("accelerator_count"):
            assert resources["accelerator"]["resourceType"] == pool["accelerator_type"]
            assert resources["accelerator"]["resourceCount"] == str(pool["accelerator_count"])
        else:
            assert "accelerator" not in resources
        assert resources["resourceCpuLimit"] == pool["cpu_limit"]
        assert resources["resourceMemoryLimit"] == pool["memory_limit"]
        assert container["image"] == raw["images"][pool["image"]]
        config = k8s[name]
        assert config.get("nodeSelector", {}).get("labels", {}) == pool["node_selector"]
        expected_tolerations = [{k: v for k, v in t.items()} for t in pool.get("tolerations", [])]
        assert config.get("tolerations", []) == expected_tolerations
        shm = [m for m in config.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        if pool.get("shm_size"):
            assert shm == [{"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": pool["shm_size"]}]
        else:
            assert shm == []
        assert config["securityContext"]["runAsNonRoot"] is True
        labels = config.get("podMetadata", {}).get("labels", {})
        assert labels.get(PRIORITY_LABEL) == pool.get("priority_class")


@pytest.mark.parametrize("component", sorted(STEPS))
def test_volumes_and_secrets_reach_every_step_as_references(compiled, component):
    raw, pipeline_spec, k8s = compiled
    for name in _executors(pipeline_spec, component):
        config = k8s[name]
        mounts = {(m["constant"], m["mountPath"]) for m in config["pvcMount"]}
        step = STEPS[component]
        assert mounts == {(v["claim"], v["mount_path"]) for v in raw["volumes"] if step in v.get("steps", [step])}
        got = {s["secretName"]: {e["secretKey"]: e["envVar"] for e in s["keyToEnv"]} for s in config["secretAsEnv"]}
        assert got == {s["secret"]: s["env"] for s in raw["secrets"]}


def test_secret_values_never_appear_in_the_spec(compiled):
    raw, pipeline_spec, k8s = compiled
    text = yaml.safe_dump([pipeline_spec, k8s])
    for secret in raw["secrets"]:
        for env in secret["env"].values():
            assert f"{env}=" not in text  # only names of Secrets and keys, never an inline env value


def test_retries_only_on_preemptible_pools(compiled):
    raw, pipeline_spec, _ = compiled
    retry = raw.get("retry", {"num_retries": 3})
    for task_name, task in _tasks(pipeline_spec).items():
        component = task["componentRef"]["name"].removeprefix("comp-")
        base = next((c for c in STEPS if component == c or component.startswith(c + "-")), None)
        if base is None:
            continue  # loop DAGs
        if _pool(raw, STEPS[base]).get("preemptible"):
            assert task["retryPolicy"]["maxRetryCount"] == retry["num_retries"], task_name
            assert task["retryPolicy"]["backoffDuration"] == retry.get("backoff_duration", "60s")
        else:
            assert "retryPolicy" not in task, task_name


def test_caching_is_off_exactly_for_side_effect_steps(compiled):
    raw, pipeline_spec, _ = compiled
    uncached = set(raw["caching"]["uncached_steps"])
    for task_name, task in _tasks(pipeline_spec).items():
        component = task["componentRef"]["name"].removeprefix("comp-")
        base = next((c for c in STEPS if component == c or component.startswith(c + "-")), None)
        if base is None:
            continue
        enabled = task.get("cachingOptions", {}).get("enableCache", False)
        assert enabled == (STEPS[base] not in uncached), task_name


def test_shards_fan_out_with_the_asked_parallelism_over_the_plan(compiled):
    _, pipeline_spec, _ = compiled
    loops = {name: task for name, task in pipeline_spec["root"]["dag"]["tasks"].items() if "parameterIterator" in task}
    shard_loop = next(t for t in loops.values() if "plan-shards" in t["parameterIterator"]["items"]["inputParameter"])
    assert shard_loop["iteratorPolicy"]["parallelismLimit"] == 6
    body = pipeline_spec["components"][shard_loop["componentRef"]["name"]]["dag"]["tasks"]
    assert {t["componentRef"]["name"].removeprefix("comp-") for t in body.values()} == {"shard-dataset", "filter-dataset", "caption-dataset"}
    merge = pipeline_spec["root"]["dag"]["tasks"]["merge-datasets"]
    assert merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == next(
        n for n, t in loops.items() if t is shard_loop
    )


def test_every_evaluation_fans_out_over_eval_shards_and_merges(tmp_path):
    pipeline_spec, _ = _compile(tmp_path, load_profile("k8s/profiles/generic.yaml"), eval_shards=3,
                                soup_methods=("uniform", "greedy"))
    components = pipeline_spec["components"]
    shard_loops = []
    for owner in [pipeline_spec["root"], *components.values()]:
        for task in owner.get("dag", {}).get("tasks", {}).values():
            body = components.get(task["componentRef"]["name"], {}).get("dag", {}).get("tasks", {})
            if "parameterIterator" in task and any(t["componentRef"]["name"].startswith("comp-evaluate-model") for t in body.values()):
                shard_loops.append((owner, task, body))
    assert len(shard_loops) == 3  # the survivors' loop and one per soup
    for owner, loop, body in shard_loops:
        assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"
        assert loop["iteratorPolicy"]["parallelismLimit"] == 3
        (evaluate,) = body.values()
        assert evaluate["inputs"]["parameters"]["num_shards"]["runtimeValue"]["constant"] == 3
        merges = [t for t in owner["dag"]["tasks"].values() if t["componentRef"]["name"].startswith("comp-merge-eval")]
        (merge,) = [m for m in merges if m["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"]
                    == next(n for n, t in owner["dag"]["tasks"].items() if t is loop)]
        registers = [t for t in owner["dag"]["tasks"].values() if t["componentRef"]["name"].startswith("comp-register-model")]
        merge_name = next(n for n, t in owner["dag"]["tasks"].items() if t is merge)
        assert any(r["inputs"]["artifacts"]["scores"]["taskOutputArtifact"]["producerTask"] == merge_name for r in registers)


def test_build_options_reach_the_pipeline_and_unknown_ones_are_refused(tmp_path):
    from bettersynth.platform.submit import compile_package, parse_build_options

    options = parse_build_options(["eval_shards=2", "parallelism=3"])
    assert options == {"eval_shards": 2, "parallelism": 3}
    out = compile_package("production", "k8s/profiles/generic.yaml", tmp_path / "p.yaml", options=options)
    assert '"raw": "[0, 1]"' in out.read_text() or "raw: '[0, 1]'" in out.read_text()
    with pytest.raises(ValueError, match="unknown build options \\['shards'\\]"):
        compile_package("production", "k8s/profiles/generic.yaml", tmp_path / "q.yaml", options={"shards": 2})
    compile_package("sharded_eval", "k8s/profiles/generic.yaml", tmp_path / "e.yaml", options={"num_shards": 2})


def test_data_centric_loop_compiles_for_every_profile(compiled_package):
    for name in PROFILES:
        assert "nvidia.com/gpu" in compiled_package("data_centric_loop", f"k8s/profiles/{name}.yaml").read_text()


@pytest.mark.parametrize("edit, field", [
    ({"steps": {"train": "tpu"}}, "steps.train"),
    ({"default_pool": "nowhere"}, "default_pool"),
    ({"pools": {"cpu": {"image": "arm"}}}, "pools.cpu.image"),
    ({"pools": {"cpu": {"accelerator_count": 2}}}, "pools.cpu"),
    ({"secrets": [{"secret": "s3", "env": {"key": "NOT-AN-ENV"}}]}, "secret 's3'"),
    ({"retry": {"num_retries": -1}}, "num_retries"),
])
def test_profile_errors_name_the_field(tmp_path, edit, field):
    raw = yaml.safe_load(open("k8s/profiles/generic.yaml"))
    for key, value in edit.items():
        if key == "pools":
            raw["pools"]["cpu"].update(value["cpu"])
        else:
            raw[key] = value if key != "steps" else {**raw["steps"], **value}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_profile(bad)


@pytest.mark.parametrize("pipeline", ["production", "data_centric_loop", "sharded_eval"])
@pytest.mark.parametrize("profile", PROFILES)
def test_every_step_knows_where_mlflow_is_and_which_kfp_run_it_belongs_to(compiled_package, pipeline, profile):
    """Without KFP's MLflow plugin a step has only the profile's env: the tracking URI and its KFP run id."""
    from bettersynth.tracking.runs import KFP_RUN_ENV

    raw = yaml.safe_load(open(f"k8s/profiles/{profile}.yaml"))
    assert raw["env"]["MLFLOW_TRACKING_URI"].startswith("http://bettersynth-mlflow.")
    pipeline_spec, platform_spec = yaml.safe_load_all(
        compiled_package(pipeline, f"k8s/profiles/{profile}.yaml").read_text())
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    containers = {n: e["container"] for n, e in pipeline_spec["deploymentSpec"]["executors"].items() if "container" in e}
    assert len(containers) >= 2  # importers run no container of ours
    for name, container in containers.items():
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert {k: env.get(k) for k in raw["env"]} == raw["env"], name
        assert {"name": KFP_RUN_ENV, "fieldPath": "metadata.labels['pipeline/runid']"} in k8s[name]["fieldPathAsEnv"]
