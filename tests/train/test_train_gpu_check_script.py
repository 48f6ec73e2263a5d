"""The GPU check script runs end to end at pico size on CPU (``--tiny``), so it works when a GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check_mgm.py"


def test_gpu_check_runs_its_whole_path_at_pico_size(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--steps", "2", "--questions", "4", "--global-batch", "8",
         "--per-device-batch", "4", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                          "HOME": str(Path.home()), "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["steps"] == 2 and report["eval_questions"] == 4
    assert report["samples_per_s"] > 0 and report["tokens_per_s"] > 0
    assert (tmp_path / "finetuned" / "model.safetensors").is_file()
