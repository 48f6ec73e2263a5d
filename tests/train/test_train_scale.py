"""Scaling settings as data: the DeepSpeed ZeRO-2 JSON and multi-node job manifests agree with the batch arithmetic."""

import sys

import pytest
import yaml

from bettersynth.platform.trainjob import MultiNodeJob, pytorchjob_manifest, trainjob_manifest
from bettersynth.train import defaults_for
from bettersynth.train.deepspeed import DeepSpeedSettings, deepspeed_config, require_deepspeed, use_deepspeed


@pytest.mark.parametrize("world_size, per_device, accumulation", [(1, 32, 8), (8, 32, 1), (4, 16, 4)])
def test_deepspeed_batch_arithmetic(world_size, per_device, accumulation):
    stage = defaults_for("align", world_size=world_size, per_device_batch_size=per_device)
    config = deepspeed_config(stage, DeepSpeedSettings())
    assert config["train_batch_size"] == 256
    assert config["train_micro_batch_size_per_gpu"] == per_device
    assert config["gradient_accumulation_steps"] == accumulation
    assert per_device * accumulation * world_size == config["train_batch_size"]  # what DeepSpeed checks at start
    assert config["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in config["zero_optimization"]
    assert "optimizer" not in config  # the loop's own AdamW is used without offload
    assert config["bf16"] == {"enabled": True} and config["gradient_clipping"] == 1.0


def test_deepspeed_offload_uses_deepspeeds_cpu_adam_with_the_stage_lr():
    stage = defaults_for("finetune", weight_decay=0.1)
    config = deepspeed_config(stage, DeepSpeedSettings(offload_optimizer=True))
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert config["optimizer"]["type"] == "AdamW"
    assert config["optimizer"]["params"]["lr"] == 2e-5 and config["optimizer"]["params"]["weight_decay"] == 0.1
    assert "auto" not in str(config)  # concrete values: our loop is not the HF Trainer
    assert deepspeed_config(defaults_for("align", dtype="fp32"), DeepSpeedSettings())["bf16"] == {"enabled": False}


def test_deepspeed_auto_means_with_cuda_and_on_means_also_on_cpu():
    assert use_deepspeed(DeepSpeedSettings(), cuda_available=True)
    assert not use_deepspeed(DeepSpeedSettings(), cuda_available=False)  # same code trains on CPU
    assert not use_deepspeed(DeepSpeedSettings(enabled="off"), cuda_available=True)
    assert use_deepspeed(DeepSpeedSettings(enabled="on"), cuda_available=False)  # ZeRO-2 over gloo


def test_deepspeed_precision_follows_the_device():
    stage = defaults_for("align")  # dtype auto
    assert deepspeed_config(stage, DeepSpeedSettings(), device="cuda")["bf16"] == {"enabled": True}
    assert deepspeed_config(stage, DeepSpeedSettings(), device="cpu")["bf16"] == {"enabled": False}


def test_missing_deepspeed_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # what import sees when the package is absent
    with pytest.raises(ImportError, match=r"bettersynth\[gpu\]"):
        require_deepspeed()


JOB = dict(name="mgm-align-seed0", image="registry.example/bettersynth:0.1.0",
           command=["python", "-m", "entry", "--plan", "/mnt/configs/train.yaml"], num_nodes=4, gpus_per_node=8,
           cpu="32", memory="256Gi", env={"NCCL_DEBUG": "WARN"})


def test_trainjob_spec():
    manifest = trainjob_manifest(MultiNodeJob(**JOB), defaults_for("align", per_device_batch_size=8, seed=3))
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and manifest["kind"] == "TrainJob"
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    assert trainer["resourcesPerNode"]["requests"] == {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env == {"BETTERSYNTH_WORLD_SIZE": "32", "BETTERSYNTH_GRADIENT_ACCUMULATION": "1", "NCCL_DEBUG": "WARN"}
    assert manifest["spec"]["runtimeRef"]["name"] == "bettersynth-torch"
    assert manifest["metadata"]["labels"]["bettersynth/seed"] == "3"
    assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest  # serialisable as is


def test_pytorchjob_spec_has_one_master_and_the_rest_workers():
    job = MultiNodeJob(**JOB | {"node_selector": {"pool": "a100"}})
    manifest = pytorchjob_manifest(job, defaults_for("finetune", per_device_batch_size=4))
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 3
    container = specs["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch" and container["command"] == JOB["command"]
    assert specs["Master"]["template"]["spec"]["nodeSelector"] == {"pool": "a100"}
    assert manifest["spec"]["nprocPerNode"] == "8"
    single = pytorchjob_manifest(MultiNodeJob(**JOB | {"num_nodes": 1}), defaults_for("finetune"))
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_world_size_that_cannot_meet_the_global_batch_is_refused():
    job = MultiNodeJob(**JOB | {"num_nodes": 3})  # 24 GPUs x 16 per device does not divide 128
    with pytest.raises(ValueError, match="3 nodes x 8 GPUs cannot train stage 'finetune'.*128"):
        trainjob_manifest(job, defaults_for("finetune"))
    with pytest.raises(ValueError, match="DNS label"):
        MultiNodeJob(**JOB | {"name": "Seed_0"})


def test_cpu_trains_with_the_torch_engine_by_default():
    import torch

    from bettersynth.train.engine import DistInfo, TorchEngine, make_engine

    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    model = torch.nn.Linear(4, 2)
    params = list(model.parameters())
    stage = defaults_for("align", global_batch_size=4, per_device_batch_size=2)
    engine = make_engine(model, params, stage, DeepSpeedSettings(), DistInfo())
    assert isinstance(engine, TorchEngine)
    # The step's gradient is the summed token loss over all micro-batches divided by the global token count.
    x = torch.randn(6, 4)
    for i, micro in enumerate((x[:3], x[3:])):
        engine.backward(model(micro).sum(), global_tokens=12, last=i == 1)
    expected = torch.autograd.grad(model(x).sum() / 12, params)
    grads = [p.grad.clone() for p in params]
    for p, g in zip(params, expected):
        p.grad = g.clone()
    want_norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
    for p, g in zip(params, grads):
        p.grad = g
    assert engine.step(lr=0.0) == pytest.approx(want_norm)  # the norm of grads / 12, before clipping
