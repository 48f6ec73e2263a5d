"""The scoring GPU check runs its whole path at pico size on CPU (``--tiny``), so it works when a GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check_scoring.py"


def test_gpu_check_scoring_runs_its_whole_path_at_pico_size(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--samples", "24", "--batch-size", "8", "--rounds", "1", "--workers", "1",
         "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                          "HOME": str(Path.home()), "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["samples"] == 24 and report["rounds"] == 1
    assert set(report["samples_per_s"]) == {"bare", "cpu", "device", "device+ingest"}
    assert all(v > 0 for v in report["samples_per_s"].values()) and set(report["ratio_to_bare"]) == {"cpu", "device", "device+ingest"}
    # On CPU both decoders are libjpeg-turbo and the same processor resizes: every contender scores alike.
    assert report["max_score_diff_device_vs_cpu"] <= 1e-6 and report["max_score_diff_cpu_vs_bare"] <= 1e-6
    assert report["faults_ok"] and report["faults_rejected_device"] == ["garbage.jpg", "truncated.jpg"]
    assert (tmp_path / "data" / "imgs" / "23.jpg").is_file() and (tmp_path / "models" / "clip" / "config.json").is_file()
