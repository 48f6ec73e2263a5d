"""`dvc repro` with the repo's dvc.yaml and params.yaml rebuilds the shipped recipes' variants.

Slow (three stages, each a fresh process importing torch): ``pytest -m slow tests/tracking``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

DVC = str(Path(sys.executable).parent / "dvc")


def _repro(project: Path) -> str:
    result = subprocess.run([DVC, "repro"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_dvc_repro_builds_the_variants_and_reruns_only_what_changed(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project)
    shutil.copytree(REPO / "recipes", project / "recipes")
    for package in ("ops", "engine"):
        shutil.copytree(REPO / "src" / "bettersynth" / package, project / "src" / "bettersynth" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"]["world"].update(n_seed_samples=30, n_instruct=2, n_textvqa=1, n_mmbench=1, n_heldout_textvqa=1, n_heldout_mmbench=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=project, check=True)

    _repro(project)
    repro = project / "data" / "repro"
    filtered = json.loads((repro / "filtered" / "report.json").read_text())
    captioned = json.loads((repro / "captioned" / "report.json").read_text())
    assert filtered["n_in"] == 30 and captioned["n_in"] == filtered["kept"]
    assert sum(1 for _ in (repro / "captioned" / "samples.jsonl").open()) == captioned["kept"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"demo", "filter", "caption"}

    params["caption"]["fraction"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = _repro(project)
    assert "Running stage 'caption'" in out and "Running stage 'filter'" not in out
