"""A training step that dies in stage 1 or 2, a disk that fills while it checkpoints, a checkpoint damaged on
disk: the resumed run ends with the bytes of an uninterrupted one, and a damaged file is refused by name.

Stage 2 trains the LLM too, so its optimizer state and checkpoint are larger; stage 1 (projector
alignment on captions) is signalled the same way. tests/train/test_train_resume.py has the other
stage-1 interruptions (an exception, a pause, a kill during a save)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fault_services import size_limited_folder

from bettersynth.train import defaults_for, train_stage
from bettersynth.train.checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    DamagedCheckpoint,
    latest_checkpoint,
    list_checkpoints,
)

# 16 chats / global 4 -> 4 steps an epoch, 2 epochs = 8 steps; checkpoints at 2, 4, 6.
RUN = dict(global_batch_size=4, per_device_batch_size=2, num_epochs=2, max_length=128, seed=3,
           learning_rate=1e-3, checkpoint_every=2, keep_checkpoints=2)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # shared cores, and one thread keeps CPU sums in one order


class Killed(RuntimeError):
    pass


def _die_at(step_to_die: int):
    def on_step(step, metrics):
        if step == step_to_die:
            raise Killed(f"killed at step {step}")
    return on_step


def _weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def stage1_uninterrupted(llava_dir, caption_records, image_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1-uninterrupted") / "model"
    return train_stage(llava_dir, caption_records, image_root, defaults_for("align", **RUN), out)


@pytest.fixture(scope="module")
def stage2_uninterrupted(llava_dir, chat_records, image_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage2-uninterrupted") / "model"
    return train_stage(llava_dir, chat_records, image_root, defaults_for("finetune", **RUN), out)


def test_faults_stage2_killed_resumes_bit_exact(stage2_uninterrupted, llava_dir, chat_records, image_root, tmp_path):
    config, ckpt = defaults_for("finetune", **RUN), tmp_path / "ckpt"
    with pytest.raises(Killed):
        train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", _die_at(7), ckpt)
    assert latest_checkpoint(ckpt).name == "step-000006" and not (tmp_path / "model").exists()
    resumed = train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", checkpoint_dir=ckpt)
    assert resumed.losses == stage2_uninterrupted.losses
    assert _weights(tmp_path / "model") == _weights(stage2_uninterrupted.out_dir)


@pytest.mark.parametrize("file, damage", [
    (WEIGHTS_FILE, "truncate"), (OPTIMIZER_FILE, "truncate"), (RNG_FILE, "garble"), (STATE_FILE, "truncate")])
def test_faults_damaged_checkpoint_refused_with_its_path(llava_dir, chat_records, image_root, tmp_path, file, damage):
    config, ckpt = defaults_for("finetune", **RUN), tmp_path / "ckpt"
    with pytest.raises(Killed):
        train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", _die_at(3), ckpt)
    target = latest_checkpoint(ckpt) / file
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(b ^ 0x5A for b in data))
    with pytest.raises(DamagedCheckpoint) as err:
        train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", checkpoint_dir=ckpt)
    assert f"checkpoint {target.parent}: {file} is damaged" in str(err.value)
    assert f"remove {target.parent} to resume" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "model").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (a stage-2 checkpoint is about 1.5 MiB) (root only: mount); skipped with the reason where mounting is not permitted."""
    with size_limited_folder(tmp_path / "disk", "16m") as folder:
        yield folder


def _fill(folder: Path, leave: int) -> Path:
    """Write a filler file until ``leave`` bytes are free on ``folder``'s file system."""
    free = shutil.disk_usage(folder).free
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def test_faults_disk_full_while_checkpointing(stage2_uninterrupted, llava_dir, chat_records, image_root, tmp_path,
                                             small_disk):
    config, ckpt = defaults_for("finetune", **RUN), small_disk / "ckpt"
    with pytest.raises(Killed):  # the first checkpoint fits
        train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", _die_at(3), ckpt)
    filler = _fill(small_disk, 4096)  # the next one cannot
    with pytest.raises(OSError) as err:
        train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", checkpoint_dir=ckpt)
    assert err.value.errno == errno.ENOSPC and f"checkpoint {ckpt / 'step-000004'} not written: no space left" in str(err.value)
    assert not list(ckpt.glob(".*tmp*"))  # the partial folder gave its space back
    assert [p.name for p in list_checkpoints(ckpt)] == ["step-000002"]  # no half-written one under a final name
    filler.unlink()  # space freed: the rerun finishes, equal to an uninterrupted run
    resumed = train_stage(llava_dir, chat_records, image_root, config, tmp_path / "model", checkpoint_dir=ckpt)
    assert resumed.losses == stage2_uninterrupted.losses
    assert _weights(tmp_path / "model") == _weights(stage2_uninterrupted.out_dir)


SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from bettersynth.train import defaults_for, train_stage
    model, records, images, out, ckpt, die, how = sys.argv[1:]
    def on_step(step, metrics):
        if step == int(die):
            os.kill(os.getpid(), getattr(signal, how))
    config = defaults_for(os.environ.get("STAGE", "finetune"), **json.loads(os.environ["RUN"]))
    train_stage(Path(model), json.loads(Path(records).read_text()), Path(images), config, Path(out), on_step, Path(ckpt))
""")


# A stage's settings, its records and the uninterrupted run to compare with (fixture names).
SIGNALLED = {"stage1": ("align", "caption_records", "stage1_uninterrupted"),
             "stage2": ("finetune", "chat_records", "stage2_uninterrupted")}


@pytest.mark.slow  # a fresh interpreter importing torch + transformers for each signal
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("stage", list(SIGNALLED))
def test_faults_signalled_process_resumes_bit_exact(request, llava_dir, image_root, tmp_path, stage, how):
    settings, records_fixture, reference_fixture = SIGNALLED[stage]
    samples, uninterrupted = request.getfixturevalue(records_fixture), request.getfixturevalue(reference_fixture)
    records = tmp_path / "records.json"
    records.write_text(json.dumps(samples))
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    args = [sys.executable, "-c", SCRIPT, str(llava_dir), str(records), str(image_root), str(out), str(ckpt), "5", how]
    killed = subprocess.run(args, env=os.environ | {"RUN": json.dumps(RUN), "STAGE": settings}, capture_output=True,
                            timeout=600)
    assert killed.returncode == -getattr(signal, how), killed.stderr.decode()[-2000:]
    assert latest_checkpoint(ckpt).name == "step-000004" and not out.exists()
    resumed = train_stage(llava_dir, samples, image_root, defaults_for(settings, **RUN), out, checkpoint_dir=ckpt)
    assert resumed.losses == uninterrupted.losses
    assert _weights(out) == _weights(uninterrupted.out_dir)
