"""The compiled pipeline: GPU steps request and tolerate GPUs, pools come from the profile."""

from __future__ import annotations

import pytest
import yaml

from bettersynth.platform.pipeline_loader import load_pipeline_module
from bettersynth.platform.placement import ClusterProfile, load_profile

GPU_STEPS = ("filter", "caption", "train", "evaluate", "soup")


def _compile(tmp_path, profile: ClusterProfile):
    from kfp import compiler

    pipeline = load_pipeline_module().build_pipeline(profile)
    out = tmp_path / "loop.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    pipeline_spec, platform_spec = yaml.safe_load_all(out.read_text())
    return pipeline_spec, platform_spec


def _executors(pipeline_spec):
    return pipeline_spec["deploymentSpec"]["executors"]


def _task_executor(pipeline_spec, component_prefix: str) -> list[str]:
    return [name for name in _executors(pipeline_spec) if name.startswith(f"exec-{component_prefix}")]


@pytest.fixture(scope="module")
def compiled(compiled_package):
    path = "k8s/profiles/generic.yaml"
    return load_profile(path), *yaml.safe_load_all(compiled_package("data_centric_loop", path).read_text())


@pytest.mark.parametrize("component", ["filter-dataset", "caption-dataset", "train-align", "train-finetune", "evaluate-model", "soup-models"])
def test_gpu_steps_request_gpus_and_tolerate_the_taint(compiled, component):
    profile, pipeline_spec, platform_spec = compiled
    executors = _task_executor(pipeline_spec, component)
    assert executors, component
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in executors:
        resources = _executors(pipeline_spec)[name]["container"]["resources"]
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[name]["tolerations"]
        assert k8s[name]["nodeSelector"]["labels"] == profile.pools["gpu"].node_selector


@pytest.mark.parametrize("component", ["version-dataset", "register-model", "promote-model"])
def test_cpu_steps_stay_off_gpu_nodes(compiled, component):
    _, pipeline_spec, platform_spec = compiled
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in _task_executor(pipeline_spec, component):
        assert "accelerator" not in _executors(pipeline_spec)[name]["container"].get("resources", {})
        assert "tolerations" not in k8s.get(name, {})


def test_node_selector_comes_from_the_profile(tmp_path):
    profile = load_profile("k8s/profiles/generic.yaml")
    profile.pools["gpu"].node_selector = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    _, platform_spec = _compile(tmp_path, profile)
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = next(v for k, v in k8s.items() if k.startswith("exec-train-finetune"))
    assert train["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}


def test_components_never_install_packages(compiled):
    _, pipeline_spec, _ = compiled
    for name, executor in _executors(pipeline_spec).items():
        if "container" not in executor:
            continue
        command = " ".join(executor["container"].get("command", []) + executor["container"].get("args", []))
        assert "pip install" not in command, name
        assert executor["container"]["image"].startswith("bettersynth"), name


def test_profile_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npools: {gpu: {accelerator_count: many}}\nsteps: {}\n")
    with pytest.raises(ValueError, match="accelerator_count"):
        load_profile(bad)
