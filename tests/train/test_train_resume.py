"""Kill-and-resume equivalence: a run interrupted at any step ends with the bytes of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from bettersynth.train import defaults_for, train_stage
from bettersynth.train.checkpoint import (
    STATE_FILE,
    TrainerState,
    check_resumable,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)

# 16 records / global 4 -> 4 steps an epoch, 2 epochs = 8 steps; checkpoints at 2, 4, 6.
RUN = dict(global_batch_size=4, per_device_batch_size=2, num_epochs=2, max_length=128, seed=5,
           learning_rate=1e-2, checkpoint_every=2, keep_checkpoints=2)


class Killed(RuntimeError):
    pass


def _kill_at(step_to_die: int):
    def on_step(step, metrics):
        if step == step_to_die:
            raise Killed(f"killed at step {step}")
    return on_step


@pytest.fixture(scope="module")
def uninterrupted(llava_dir, caption_records, image_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    config = defaults_for("align", **RUN)
    return train_stage(llava_dir, caption_records, image_root, config, out / "model")


def test_exception_then_resume_is_bit_identical(uninterrupted, llava_dir, caption_records, image_root, tmp_path):
    config = defaults_for("align", **RUN)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):  # dies after step 5, last checkpoint at step 4
        train_stage(llava_dir, caption_records, image_root, config, tmp_path / "model", _kill_at(5), ckpt)
    assert [p.name for p in list_checkpoints(ckpt)] == ["step-000002", "step-000004"]  # keep_checkpoints=2
    assert not (tmp_path / "model").exists()
    seen = []
    resumed = train_stage(llava_dir, caption_records, image_root, config, tmp_path / "model",
                          lambda s, m: seen.append(s), ckpt)
    assert seen == [5, 6, 7, 8]  # steps 5.. redone, nothing before
    assert resumed.steps == 8 and resumed.samples_seen == uninterrupted.samples_seen == 32
    assert resumed.losses == uninterrupted.losses
    expected = (uninterrupted.out_dir / "model.safetensors").read_bytes()
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == expected


def test_pause_and_continue_equals_one_run(uninterrupted, llava_dir, caption_records, image_root, tmp_path):
    """``stop_after_step`` (used by seed selection) checkpoints and returns; a second call finishes."""
    config = defaults_for("align", **RUN | {"checkpoint_every": None})
    ckpt = tmp_path / "ckpt"
    paused = train_stage(llava_dir, caption_records, image_root, config, tmp_path / "m", checkpoint_dir=ckpt,
                         stop_after_step=3)
    assert not paused.completed and paused.steps == 3 and paused.losses == uninterrupted.losses[:3]
    assert latest_checkpoint(ckpt).name == "step-000003"
    done = train_stage(llava_dir, caption_records, image_root, config, tmp_path / "m", checkpoint_dir=ckpt)
    assert done.completed and done.losses == uninterrupted.losses
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (uninterrupted.out_dir / "model.safetensors").read_bytes()


def test_resume_refuses_other_settings(llava_dir, caption_records, image_root, tmp_path):
    ckpt = tmp_path / "ckpt"
    config = defaults_for("align", **RUN)
    with pytest.raises(Killed):
        train_stage(llava_dir, caption_records, image_root, config, tmp_path / "m", _kill_at(2), ckpt)
    changed = config.model_copy(update={"learning_rate": 5e-3})
    with pytest.raises(ValueError, match="learning_rate: 0.01 -> 0.005"):
        train_stage(llava_dir, caption_records, image_root, changed, tmp_path / "m", checkpoint_dir=ckpt)
    # Loader settings may change between attempts.
    check_resumable(latest_checkpoint(ckpt), config.model_copy(update={"num_workers": 2}).model_dump(), 8)
    with pytest.raises(ValueError, match="planned 8 steps"):
        check_resumable(latest_checkpoint(ckpt), config.model_dump(), 9)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, TrainerState(2, 8, 1), model, optimizer)
    (tmp_path / ".step-000004.tmp-123").mkdir()  # a save killed mid-way
    (tmp_path / ".step-000004.tmp-123" / STATE_FILE).write_text("{")
    assert latest_checkpoint(tmp_path).name == "step-000002"
    state = json.loads((latest_checkpoint(tmp_path) / STATE_FILE).read_text())
    assert state["step"] == 2 and state["total_steps"] == 8


SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from bettersynth.train import defaults_for, train_stage
    llava, records, images, out, ckpt, die = sys.argv[1:]
    def on_step(step, metrics):
        if step == int(die):
            os.kill(os.getpid(), signal.SIGKILL)
    config = defaults_for("align", **json.loads(os.environ["RUN"]))
    train_stage(Path(llava), json.loads(Path(records).read_text()), Path(images), config, Path(out), on_step, Path(ckpt))
""")


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~15 s
def test_sigkilled_process_resumes_bit_identical(uninterrupted, llava_dir, caption_records, image_root, tmp_path):
    records = tmp_path / "records.json"
    records.write_text(json.dumps(caption_records))
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    env = os.environ | {"RUN": json.dumps(RUN)}
    args = [sys.executable, "-c", SCRIPT, str(llava_dir), str(records), str(image_root), str(out), str(ckpt)]
    killed = subprocess.run(args + ["7"], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert latest_checkpoint(ckpt).name == "step-000006" and not out.exists()
    resumed = train_stage(llava_dir, caption_records, image_root, defaults_for("align", **RUN), out, checkpoint_dir=ckpt)
    assert resumed.losses == uninterrupted.losses
    assert (out / "model.safetensors").read_bytes() == (uninterrupted.out_dir / "model.safetensors").read_bytes()
